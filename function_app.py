"""The Azure Functions app: triggers and thin adapters. Behaviour lives in ``shared/``.

Importing this module must never fail or do I/O (Azure indexes functions by importing it);
settings, clients and the database pool are all created on first use.
"""

import azure.functions as func

from shared import health
from shared.http import bool_param, endpoint, json_response

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    if not bool_param(req, "deep", default=False):
        return json_response(health.basic())
    report, can_serve = health.deep()
    return json_response(report, status=200 if can_serve else 503)
