"""/api/health through the registered function objects (real PostgreSQL, unreachable upstreams)."""

from __future__ import annotations

import json
import socket

import azure.functions as func
import httpx
import pytest

from tests.conftest import ROOT, Upstream, handler


def call(params: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", "http://localhost/api/health", body=b"", params=params or {})
    return handler("health_check")(req)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_basic_health_needs_nothing() -> None:
    response = call()
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    assert set(body) == {"status", "version", "time"}
    assert body["status"] == "ok"


def test_bad_flag_is_400() -> None:
    response = call({"deep": "perhaps"})
    assert response.status_code == 400
    assert json.loads(response.get_body())["error"]["code"] == "bad_request"


def test_deep_health_reports_each_dependency(database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("POLYMARKET_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POLYMARKET_GAMMA_HOST", f"http://127.0.0.1:{port}")
    response = call({"deep": "true"})
    assert response.status_code == 200  # the database answers, so stored data can be served
    body = json.loads(response.get_body())
    assert body["status"] == "degraded"
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["polymarket_clob"] == {**checks["polymarket_clob"], "status": "error", "error": "network"}
    assert checks["polymarket_gamma"]["status"] == "error"
    assert all(isinstance(check["latency_ms"], float | int) for check in checks.values())


def test_deep_health_without_database_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", str(_closed_port()))
    monkeypatch.setenv("POSTGRES_PASSWORD", "do-not-show-me")
    response = call({"deep": "true"})
    assert response.status_code == 503
    text = response.get_body().decode()
    body = json.loads(text)
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {**body["checks"]["database"], "status": "error"}
    for leak in ("do-not-show-me", "Traceback", "127.0.0.1", "psycopg2", "connection refused"):
        assert leak not in text


def test_health_over_real_http_through_the_local_host(
    database_env: dict[str, str], upstream_env: Upstream
) -> None:
    import function_app
    from devtools.local_server import LocalHost

    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json") as host, httpx.Client() as client:
        basic = client.get(f"{host.url}/api/health")
        assert basic.status_code == 200 and basic.headers["content-type"].startswith("application/json")
        assert basic.json()["status"] == "ok"
        deep = client.get(f"{host.url}/api/health", params={"deep": "true"})
        assert deep.status_code == 200
        assert deep.json()["status"] == "ok"
        assert {name: c["status"] for name, c in deep.json()["checks"].items()} == {
            "database": "ok", "polymarket_clob": "ok", "polymarket_gamma": "ok"
        }
        assert client.get(f"{host.url}/api/markets").status_code == 200
        report = client.get(f"{host.url}/api/health", params={"deep": "true"}).json()
        markets = report["datasets"]["markets"]
        assert markets["loaded"] and markets["markets"] == len(upstream_env.open_markets())
        assert markets["age_seconds"] < 60 and markets["last_error"] is None
        assert report["datasets"]["prices"]["history_writer"]["dropped"] == 0
        assert report["database_pool"]["max"] == 10 and report["database_pool"]["in_use"] >= 0
        assert report["upstream_stats"]["gamma"]["last_success_at"] is not None
        upstream_env.fail("status", host="gamma", status=503)
        degraded = client.get(f"{host.url}/api/health", params={"deep": "true"})
        assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
        assert degraded.json()["checks"]["polymarket_gamma"]["error"] == "5xx"
        bad = client.get(f"{host.url}/api/health", params={"deep": "perhaps"})
        assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "deep"
        missing = client.get(f"{host.url}/api/no-such-route")
        assert missing.status_code == 404 and "error" in missing.json()
