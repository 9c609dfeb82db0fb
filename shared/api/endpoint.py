"""The wrapper of every HTTP handler: the one error mapper, the request deadline, compression, the
demo label, CORS headers, and a structured log line per request.

Every handler in ``function_app.py`` is wrapped in :func:`endpoint`, so any failure becomes a
``{"error": {"code", "message", "parameter"?}}`` body with the right status, and nothing
internal leaks.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.api.compression import encode
from shared.api.cors import add_cors
from shared.api.responses import error_response, simulated
from shared.core import deadline, observability
from shared.core.config import get_settings
from shared.core.errors import AppError, ConfigError, UpstreamError

log = logging.getLogger("polymarket_api.http")

DEFAULT_REQUEST_DEADLINE_S = 5.0  # when the settings themselves are broken
Handler = Callable[[func.HttpRequest], func.HttpResponse]


def endpoint(handler: Handler) -> Handler:
    """Wrap a handler: one error mapper, compression, the demo label, CORS headers, and a
    structured log line per request.

    The wrapper declares ``context`` so Azure passes the invocation context (its id goes into
    the log); it stays optional, so tests can call handlers with a request alone. Its
    annotations are the handler's real classes (copied below), and ``context`` carries none:
    the worker checks what it finds there, and this module's annotations are only strings.
    """

    def wrapper(req: func.HttpRequest, context: Any = None) -> func.HttpResponse:
        observability.setup()
        invocation_id = getattr(context, "invocation_id", None)
        path = urlsplit(req.url).path
        with observability.request_scope(handler.__name__, path, req.method, invocation_id) as scope:
            response = encode(req, _handle(handler, req))
            if simulated():
                response.headers["X-Data-Simulated"] = "true"  # 304s and non-JSON answers too
            add_cors(req, response)
            observability.log_request(scope, response.status_code)
        return response

    functools.update_wrapper(wrapper, handler)  # name, docstring and the handler's annotations
    # Azure must see the wrapper's parameters (req, context), not the handler's.
    del wrapper.__wrapped__  # type: ignore[attr-defined]
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
