"""Structured request logs and optional Application Insights export."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import azure.functions as func
import pytest

from tests.conftest import ROOT, Upstream, handler

SECRET = "pg-very-secret-value-123"


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "polymarket_api.request"]


def test_one_structured_line_per_request(
    database_env: dict[str, str], upstream_env: Upstream, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", SECRET)  # set, and must never be logged
    caplog.set_level(logging.INFO)
    req = func.HttpRequest("GET", "http://localhost/api/markets", body=b"", params={"limit": "2", "q": "will"})
    response = handler("list_markets")(req, SimpleNamespace(invocation_id="inv-123"))
    assert response.status_code == 200
    handler("list_markets")(req)  # a second request is served from the cache
    bad = func.HttpRequest("GET", "http://localhost/api/markets", body=b"", params={"limit": "0"})
    assert handler("list_markets")(bad).status_code == 400

    first, second, third = _request_lines(caplog)
    assert first == {**first, "event": "request", "invocation_id": "inv-123", "function": "list_markets",
                     "method": "GET", "route": "/api/markets", "status": 200, "cache": "live"}
    assert first["upstream_calls"] >= 4  # the first load walked the keyset pages
    assert isinstance(first["duration_ms"], float)
    assert second["upstream_calls"] == 0 and second["cache"] == "cache" and second["invocation_id"]
    assert third["status"] == 400 and third["upstream_calls"] == 0
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in everything
    assert "q=will" not in everything  # query strings stay out of the logs


def test_log_level_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = (
        "import logging, azure.functions as func, function_app\n"
        "function_app.health_check(func.HttpRequest('GET', 'http://x/api/health', body=b''))\n"
        "print(logging.getLogger('polymarket_api').level)\n"
    )
    env = {**os.environ, "LOG_LEVEL": "warning"}
    env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(logging.WARNING)


_PROBE = """
import sys, azure.functions as func, function_app
from shared.core import observability
function_app.health_check(func.HttpRequest('GET', 'http://x/api/health', body=b''))
print('imported' if 'azure.monitor.opentelemetry' in sys.modules else 'not-imported', observability.telemetry_enabled)
if observability.telemetry_enabled:
    from opentelemetry._logs import get_logger_provider
    get_logger_provider().force_flush(10_000)
"""


def test_application_insights_is_not_imported_without_a_connection_string() -> None:
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["not-imported", "False"]


def test_application_insights_receives_request_logs() -> None:
    received: list[bytes] = []

    class Ingestion(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            body = b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        env = {
            **os.environ,
            "APPLICATIONINSIGHTS_CONNECTION_STRING":
                f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
            "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
        }
        out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True, timeout=60)
        assert out.stdout.split()[:2] == ["imported", "True"], out.stdout + out.stderr
    finally:
        server.shutdown()
        server.server_close()
    payload = b"".join(received)
    assert b"health_check" in payload and b"invocation_id" in payload
