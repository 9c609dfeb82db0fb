"""HTTP helpers: JSON responses, query-parameter parsing, and the one error mapper.

Every handler in ``function_app.py`` is wrapped in :func:`endpoint`, so any failure becomes a
``{"error": {"code", "message"}}`` body with the right status, and nothing internal leaks.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared import deadline, observability
from shared.config import get_settings
from shared.errors import AppError, BadRequest, ConfigError, UpstreamError

log = logging.getLogger("polymarket_api.http")

JSON = "application/json"
DEFAULT_REQUEST_DEADLINE_S = 5.0  # when the settings themselves are broken
Handler = Callable[[func.HttpRequest], func.HttpResponse]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(body: Any) -> str:
    return json.dumps(body, default=_default, separators=(",", ":"), ensure_ascii=False)


def _simulated() -> bool:
    try:
        return get_settings().polymarket.simulated
    except ConfigError:
        return False


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    if _simulated():
        # make demo runs against the stand-in: no response may pass for real market data.
        body = {**body, "simulated": True}
        all_headers["X-Data-Simulated"] = "true"
    return func.HttpResponse(dumps(body), status_code=status, headers=all_headers, mimetype=JSON)


def error_response(error: AppError) -> func.HttpResponse:
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, BadRequest) and error.parameter:
        payload["parameter"] = error.parameter
    return json_response({"error": payload}, error.status, error.headers)


def endpoint(handler: Handler) -> Handler:
    """Wrap a handler: one error mapper, CORS headers, and a structured log line per request.

    The wrapper declares ``context`` so Azure passes the invocation context (its id goes into
    the log); it stays optional, so tests can call handlers with a request alone. Its
    annotations are the handler's real classes (copied below), and ``context`` carries none:
    the worker checks what it finds there, and this module's annotations are only strings.
    """

    def wrapper(req, context=None):
        observability.setup()
        invocation_id = getattr(context, "invocation_id", None)
        path = urlsplit(req.url).path
        with observability.request_scope(handler.__name__, path, req.method, invocation_id) as scope:
            response = _handle(handler, req)
            _add_cors(req, response)
            observability.log_request(scope, response.status_code)
        return response

    functools.update_wrapper(wrapper, handler)  # name, docstring and the handler's annotations
    del wrapper.__wrapped__  # Azure must see the wrapper's parameters (req, context), not the handler's
    return wrapper


def _request_deadline_s() -> float:
    try:
        return get_settings().app.request_deadline_s
    except ConfigError:
        return DEFAULT_REQUEST_DEADLINE_S


def _handle(handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
    try:
        with deadline.within(_request_deadline_s()):
            return handler(req)
    except AppError as error:
        if isinstance(error, UpstreamError):
            log.warning("upstream failure %s %s: %s", error.upstream, error.kind, error.detail)
        elif error.status >= 500:
            log.error("%s: %s", error.code, error.message)
        return error_response(error)
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error, incident %s", incident)
        return error_response(AppError(f"internal error (incident {incident})"))


def _add_cors(req: func.HttpRequest, response: func.HttpResponse) -> None:
    origin = req.headers.get("Origin")
    if not origin:
        return
    try:
        allowed = get_settings().app.cors_origins
    except ConfigError:
        return
    if "*" in allowed:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    else:
        return
    response.headers["Access-Control-Expose-Headers"] = "ETag, Retry-After, X-Data-Simulated"


# --- caching -------------------------------------------------------------------------------


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or f'"{etag}"' in candidates


def cached_json(
    req: func.HttpRequest,
    body: dict[str, Any],
    *,
    freshness: dict[str, Any],
    etag: str,
    ttl_s: int,
) -> func.HttpResponse:
    """A cacheable response: freshness in the body, Cache-Control from the TTL, ETag/304."""
    fresh = freshness.get("source") != "stale"
    max_age = max(0, int(ttl_s - freshness.get("age_seconds", 0))) if fresh else 0
    headers = {
        "ETag": f'"{etag}"',
        # Browsers and CDNs may keep using a copy while revalidating, or while we are failing.
        "Cache-Control": f"public, max-age={max_age}, stale-while-revalidate={ttl_s}, stale-if-error=86400",
    }
    if _etag_matches(req.headers.get("If-None-Match"), etag):
        observability.note_cache("not_modified")
        return func.HttpResponse(status_code=304, headers=headers)
    observability.note_cache(str(freshness.get("source")))
    return json_response({**body, "freshness": freshness}, headers=headers)


# --- query parameters ----------------------------------------------------------------------


_UINT_RE = re.compile(r"[0-9]{1,9}")


def is_uint(text: str) -> bool:
    """1 to 9 ASCII digits. Not ``str.isdigit()``: that also accepts ``"²"`` (which ``int()``
    rejects: a 500) and ``"١٢"``, and it accepts 5,000 digits (past ``int()``'s limit)."""
    return _UINT_RE.fullmatch(text) is not None


def parse_bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = (params.get(name) or "").strip().lower()
    if value == "":
        return default
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(f"parameter '{name}' must be true or false", parameter=name)


def bool_param(req: func.HttpRequest, name: str, default: bool) -> bool:
    return parse_bool(req.params, name, default)
