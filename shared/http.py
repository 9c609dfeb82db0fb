"""HTTP helpers: JSON responses, query-parameter parsing, and the one error mapper.

Every handler in ``function_app.py`` is wrapped in :func:`endpoint`, so any failure becomes a
``{"error": {"code", "message"}}`` body with the right status, and nothing internal leaks.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import azure.functions as func

from shared.config import get_settings
from shared.errors import AppError, BadRequest, ConfigError, UpstreamError

log = logging.getLogger("polymarket_api.http")

JSON = "application/json"
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
    """Map every exception a handler raises to a JSON error response."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
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

    return wrapper


# --- query parameters ----------------------------------------------------------------------


def _single(req: func.HttpRequest, name: str) -> str | None:
    value = req.params.get(name)
    if value is None:
        return None
    return value.strip()


def bool_param(req: func.HttpRequest, name: str, default: bool) -> bool:
    value = _single(req, name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"parameter '{name}' must be true or false", parameter=name)
