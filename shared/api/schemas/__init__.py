"""Response bodies of the HTTP API as pydantic models, one module per feature.

They describe what the services answer (the OpenAPI document is generated from them); the
handlers serialise the services' bodies as they are, so these models never slow a request.
"""
