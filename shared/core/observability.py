"""Structured request logs, log level, and Application Insights when it is configured.

One JSON log line per request (``polymarket_api.request``): invocation id, function, route,
status, duration, upstream calls made, and the cache outcome. Never query strings, bodies or
settings. Application Insights is used through ``azure-monitor-opentelemetry`` only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; otherwise it is not even imported.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from shared.core.config import get_settings
from shared.core.errors import ConfigError

APP_LOGGER = "polymarket_api"
request_log = logging.getLogger(f"{APP_LOGGER}.request")

_setup_lock = threading.Lock()
_setup_done = False
telemetry_enabled = False


def setup() -> None:
    """Apply LOG_LEVEL and start Application Insights export once per process."""
    global _setup_done, telemetry_enabled
    if _setup_done:
        return
    with _setup_lock:
        if _setup_done:
            return
        try:
            level = get_settings().app.log_level
        except ConfigError:
            level = "INFO"
        logging.getLogger(APP_LOGGER).setLevel(level)
        if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip():
            try:
                from azure.monitor.opentelemetry import configure_azure_monitor

                # Only our loggers: the Functions host already reports its own telemetry.
                configure_azure_monitor(logger_name=APP_LOGGER)
                telemetry_enabled = True
            except Exception:
                logging.getLogger(APP_LOGGER).exception("Application Insights could not be configured")
        _setup_done = True


@dataclass
class RequestScope:
    invocation_id: str
    function: str
    route: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    upstream_calls: int = 0
    cache: str | None = None


_current: ContextVar[RequestScope | None] = ContextVar("polymarket_api_request", default=None)


def count_upstream_call() -> None:
    scope = _current.get()
    if scope is not None:
        scope.upstream_calls += 1


def note_cache(outcome: str) -> None:
    """What the cache did for this request: a freshness source (cache/live/stale) or not_modified."""
    scope = _current.get()
    if scope is not None:
        scope.cache = outcome


@contextmanager
def request_scope(function: str, route: str, method: str, invocation_id: str | None) -> Iterator[RequestScope]:
    scope = RequestScope(invocation_id or uuid.uuid4().hex, function, route, method)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def log_request(scope: RequestScope, status: int) -> None:
    fields = {
        "event": "request",
        "invocation_id": scope.invocation_id,
        "function": scope.function,
        "method": scope.method,
        "route": scope.route,
        "status": status,
        "duration_ms": round((time.perf_counter() - scope.started) * 1000, 1),
        "upstream_calls": scope.upstream_calls,
        "cache": scope.cache,
    }
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    # The message is the JSON (log stream, console); ``extra`` becomes customDimensions.
    extra = {key: value for key, value in fields.items() if value is not None}  # OTel rejects None
    request_log.log(level, json.dumps(fields, separators=(",", ":")), extra=extra)
