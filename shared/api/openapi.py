"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json``, generated from the
route table (``shared.api.routes``), the query models and the response models
(``shared.api.schemas``): nothing in it is written twice.

Schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect, what pydantic writes); response objects
do not allow undocumented properties. ``tests/test_openapi.py`` checks that every registered route
is documented and that real responses validate against it, and ``tests/test_fuzz.py`` fuzzes the
API against it; ``tests/fixtures/openapi-handwritten.json`` (the document as it was written by
hand) must stay contained in it. In ``make demo`` mode every JSON body also carries
``"simulated": true`` (see ``shared.api.responses.json_response``).
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import __version__
from shared.api import docs
from shared.api.params import parameter_names
from shared.api.routes import API_PREFIX, ERRORS, ROUTES, ErrorAnswer, Route
from shared.api.schemas.common import Error
from shared.core.errors import AppError
from shared.core.ids import CONDITION_ID_PATTERN, GAMMA_ID_PATTERN, MARKET_REF_RULE, SLUG_PATTERN
from shared.core.query import Query
from shared.events.refs import EVENT_REF_PATTERN

__all__ = ["API_PREFIX", "openapi_document", "openapi_json"]

JSON = "application/json"
REF = "#/components/schemas/{model}"
Schema = dict[str, Any]

PATH_PARAMETERS: dict[str, Schema] = {
    "condition_id": {"component": "ConditionId", "description": "0x followed by 64 lower-case hex characters "
                                                               "(400 otherwise)."},
    "token_id": {"component": "TokenId", "description": "1 to 78 decimal digits (400 otherwise)."},
    "event": {"component": "EventRef", "description": "A Gamma event id or an event slug (400 otherwise).",
              "schema": {"type": "string", "pattern": EVENT_REF_PATTERN}},
    "market": {"component": "MarketRef", "description": f"{MARKET_REF_RULE[:1].upper()}{MARKET_REF_RULE[1:]} "
                                                        "(400 otherwise).",
               "schema": {"type": "string", "anyOf": [{"pattern": CONDITION_ID_PATTERN},
                                                      {"pattern": GAMMA_ID_PATTERN}, {"pattern": SLUG_PATTERN}]}},
}
BOOL_NOTE = " (`true`/`false`; `1`/`0` and `yes`/`no` are accepted too)."


def _load(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _strip_titles(node: Any) -> Any:
    """pydantic's generated titles repeat the names; a property called ``title`` is kept."""
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


# --- error codes, from the classes -----------------------------------------------------------


def _error_classes(answer: ErrorAnswer) -> list[type[AppError]]:
    return [_load(c) if isinstance(c, str) else c for c in answer.classes]


def _status(answer: ErrorAnswer) -> int:
    statuses = {c.status for c in _error_classes(answer)}
    if len(statuses) != 1:
        raise ValueError(f"error response {answer.description!r} mixes statuses {sorted(statuses)}")
    return statuses.pop()


def _all_codes() -> list[str]:
    """Every code an AppError subclass can answer with, in class order."""
    for answer in ERRORS.values():
        _error_classes(answer)  # imports the modules that define classes outside shared.core.errors
    codes: list[str] = []
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop(0)
        if cls.code not in codes:
            codes.append(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


# --- components --------------------------------------------------------------------------------


def _models() -> list[type[BaseModel]]:
    names = {m for route in ROUTES.values() for body in (route.ok, *route.bodies.values()) for m in body.models}
    return [Error, *(_load(name) for name in sorted(names))]


def _schemas() -> dict[str, Schema]:
    _, top = models_json_schema([(m, "validation") for m in _models()], ref_template=REF)
    schemas: dict[str, Schema] = _strip_titles(top["$defs"])
    schemas["ErrorDetail"]["properties"]["code"]["enum"] = _all_codes()
    return schemas


def _error_response(answer: ErrorAnswer) -> Schema:
    headers: dict[str, Any] = {
        "Cache-Control": {"$ref": "#/components/headers/NoStore"},
        "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
    }
    if answer.retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    codes = list(dict.fromkeys(c.code for c in _error_classes(answer)))
    codes_text = ", ".join(f"`{code}`" for code in codes)
    schema = {"allOf": [_ref("Error"), {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}]}
    return {"description": f"{answer.description} (error code {codes_text}).", "headers": headers,
            "content": {JSON: {"schema": schema}}}


def _responses() -> dict[str, Any]:
    return {
        "NotModified": {
            "description": "The `If-None-Match` tag matches: the cached copy is current; no body.",
            "headers": {
                "ETag": {"$ref": "#/components/headers/ETag"},
                "Cache-Control": {"$ref": "#/components/headers/CacheControl"},
                "Vary": {"$ref": "#/components/headers/Vary"},
                "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
            },
        },
        **{name: _error_response(answer) for name, answer in ERRORS.items()},
    }


def _headers() -> dict[str, Any]:
    return {
        "ETag": {"description": "Tag of this answer, for `If-None-Match`; a gzip body has its own tag, the "
                                "same with `-gzip` appended.", "required": True,
                 "schema": {"type": "string", "pattern": '^"[0-9a-f]+(-gzip)?"$'}},
        "CacheControl": {
            "description": "`public, max-age=<seconds left of the TTL>, stale-while-revalidate=<TTL>, "
                           "stale-if-error=86400`.",
            "required": True,
            "schema": {"type": "string",
                       "pattern": "^public, max-age=[0-9]+, stale-while-revalidate=[0-9]+, stale-if-error=[0-9]+$"},
        },
        "NoStore": {"description": "Errors and live checks are not cached.",
                    "schema": {"type": "string", "enum": ["no-store"]}},
        "StaticCache": {"description": "The same bytes for a while: `public, max-age=<seconds>`.",
                        "schema": {"type": "string", "pattern": "^public, max-age=[0-9]+$"}},
        "RetryAfter": {"description": "Seconds to wait before retrying, when known.",
                       "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        "Simulated": {"description": "`true` in `make demo` mode: simulated data.",
                      "schema": {"type": "string", "enum": ["true"]}},
        "ContentEncoding": {"description": "`gzip` when the request accepts it and the body is 1 KB or more.",
                            "schema": {"type": "string", "enum": ["gzip"]}},
        "Vary": {"description": "`Accept-Encoding` on every JSON answer and 304; `Origin` too when CORS is "
                                "configured for listed origins.", "schema": {"type": "string"}},
    }


def _parameters(schemas: dict[str, Schema]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in PATH_PARAMETERS.items():
        if "schema" in info:
            schema = info["schema"]
        else:
            model = "Market" if name == "condition_id" else "Token"
            schema = {k: v for k, v in schemas[model]["properties"][name].items() if k != "examples"}
        out[info["component"]] = {"name": name, "in": "path", "required": True, "schema": schema,
                                  "description": info["description"]}
    out["IfNoneMatch"] = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An `ETag` from an earlier answer, identity or gzip (either matches): 304 with no "
                       "body while it is current.",
        "schema": {"type": "string"},
    }
    return out


# --- paths -------------------------------------------------------------------------------------


def _not_null(schema: Schema) -> Schema:
    """A query parameter is never null: ``X | None`` is documented as X."""
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default") or
                    (k == "default" and v is not None)}
            return {**kept[0], **rest}
    return schema


def _query_parameters(model: type[Query]) -> list[Schema]:
    properties = _strip_titles(model.model_json_schema(ref_template=REF))["properties"]
    out = []
    for field_name, info in model.model_fields.items():
        schema = _not_null(dict(properties[field_name]))
        description = schema.pop("description", "")
        per_alias = schema.pop("x-alias-descriptions", {})
        if schema.get("type") == "boolean":
            description += BOOL_NOTE
        for name in parameter_names(field_name, info):
            out.append({"name": name, "in": "query", "required": info.is_required(),
                        "description": per_alias.get(name, description), "schema": schema})
    return out


def _path_parameter(route: Route, name: str) -> Schema:
    if name in PATH_PARAMETERS:
        return {"$ref": f"#/components/parameters/{PATH_PARAMETERS[name]['component']}"}
    # The documentation's files: only the listed names are served (404 otherwise).
    return {"name": name, "in": "path", "required": True, "description": "A file name.",
            "schema": {"type": "string", "enum": list(docs.ASSETS)}}


def _ok(route: Route) -> Schema:
    headers: dict[str, Any] = {"X-Data-Simulated": {"$ref": "#/components/headers/Simulated"}}
    if route.caching == "cached":
        headers = {"ETag": {"$ref": "#/components/headers/ETag"},
                   "Cache-Control": {"$ref": "#/components/headers/CacheControl"}, **headers}
    elif route.caching == "live":
        headers = {"Cache-Control": {"$ref": "#/components/headers/NoStore"}, **headers}
    else:
        headers = {"Cache-Control": {"$ref": "#/components/headers/StaticCache"}, **headers}
    if route.media_type == JSON:
        headers["Content-Encoding"] = {"$ref": "#/components/headers/ContentEncoding"}
        if route.caching != "static":
            headers["Vary"] = {"$ref": "#/components/headers/Vary"}
    content: dict[str, Any] = {route.media_type: {"schema": _body_schema(route)}}
    if route.csv:  # ``format=csv``: the same points as a table (shared.api.tables)
        content["text/csv"] = {"schema": {"type": "string", "description": "A header row, then one row per point."}}
    return {"description": route.ok.description, "headers": headers, "content": content}


def _body_schema(route: Route) -> Schema:
    refs = [_ref(_load(m).__name__) for m in route.ok.models]
    if len(refs) == 1:
        return refs[0]
    if refs:
        return {"oneOf": refs}
    if route.media_type == JSON:  # the document itself
        return {"type": "object", "required": ["openapi", "info", "paths"]}
    return {"type": "string"}


def _description(route: Route) -> str:
    if route.query is None:
        return route.description
    module = importlib.import_module(route.query.partition(":")[0])
    return route.description.format_map(vars(module))


def _operation(route: Route) -> Schema:
    parameters = [_path_parameter(route, name) for name in route.path_params]
    if route.query:
        parameters += _query_parameters(_load(route.query))
    if route.caching == "cached":
        parameters.append({"$ref": "#/components/parameters/IfNoneMatch"})
    responses: dict[str, Any] = {"200": _ok(route)}
    if route.caching == "cached":
        responses["304"] = {"$ref": "#/components/responses/NotModified"}
    for status, body in route.bodies.items():
        responses[str(status)] = {"description": body.description,
                                  "content": {JSON: {"schema": _ref(_load(body.models[0]).__name__)}}}
    for name in route.errors:
        responses[str(_status(ERRORS[name]))] = {"$ref": f"#/components/responses/{name}"}
    responses["500"] = {"$ref": "#/components/responses/InternalError"}
    return {"operationId": route.name, "tags": [route.tag], "summary": route.summary,
            "description": _description(route), "parameters": parameters,
            "responses": dict(sorted(responses.items()))}


def _build() -> dict[str, Any]:
    schemas = _schemas()
    tags = list(dict.fromkeys(route.tag for route in ROUTES.values()))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polymarket-api",
            "version": __version__,
            "summary": "Polymarket markets, prices, order books and model sentiment, cached and fail-soft.",
            "description": (
                "All API answers are JSON (the documentation page and its files aside). Errors are "
                "`{\"error\": {\"code\", \"message\", \"parameter\"?}}`. "
                "Cached answers carry a `freshness` object, `ETag` and `Cache-Control`, and answer 304 to a "
                "matching `If-None-Match`. JSON bodies of 1 KB or more are gzip-compressed when the request's "
                "`Accept-Encoding` allows it. In demo mode every answer has `X-Data-Simulated: true` and every "
                "JSON body `\"simulated\": true`. Interactive documentation: "
                f"[{API_PREFIX}/docs]({API_PREFIX}/docs)."
            ),
        },
        "servers": [{"url": "/", "description": "This deployment."}],
        "tags": [{"name": tag} for tag in tags],
        "paths": {route.path: {method.lower(): _operation(route) for method in route.methods}
                  for route in ROUTES.values()},
        "components": {
            "schemas": schemas,
            "responses": _responses(),
            "parameters": _parameters(schemas),
            "headers": _headers(),
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    return _build()


def openapi_document() -> dict[str, Any]:
    """The document (a copy: callers may change it)."""
    return copy.deepcopy(_document())


@functools.cache
def openapi_json() -> str:
    """The document serialised once, as served."""
    return json.dumps(_document(), separators=(",", ":"), ensure_ascii=False)
