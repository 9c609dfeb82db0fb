"""/api/health through the registered function objects (real PostgreSQL, unreachable upstreams)."""

from __future__ import annotations

import json
import socket

import azure.functions as func
import httpx
import pytest

from tests.conftest import ROOT, Upstream, handler, reset_app


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


def test_deep_health_shows_a_host_answering_404_as_4xx_and_counts_it_as_a_failure(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host setting with a path prefix the servers do not have: every route answers the
    # router's "404 page not found".
    monkeypatch.setenv("POLYMARKET_HOST", f"{upstream_env.clob_url}/v1")
    monkeypatch.setenv("POLYMARKET_GAMMA_HOST", f"{upstream_env.gamma_url}/api")
    reset_app()
    body = json.loads(call({"deep": "true"}).get_body())
    assert body["status"] == "degraded"
    assert {name: check.get("error") for name, check in body["checks"].items()} == {
        "database": None, "polymarket_clob": "4xx", "polymarket_gamma": "4xx"}
    assert upstream_env.count("/v1/ok", host="clob") == 1
    assert upstream_env.count("/api/markets", host="gamma") == 1
    for stats in body["upstream_stats"].values():
        assert stats == {**stats, "requests": 1, "failures": 1, "last_success_at": None, "last_error_kind": "4xx"}


def test_a_404_is_healthy_only_as_an_answer_about_an_id(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    unknown = "7" * 76
    assert handler("get_price")(func.HttpRequest(
        "GET", f"http://localhost/api/price/{unknown}", body=b"", params={"history": "false"},
        route_params={"token_id": unknown})).status_code == 404
    # The ping answering 404 (with the API's JSON error body, as a 404 fault sends it).
    upstream_env.fail("status", host="clob", path="/ok", status=404)
    # A listing, about no id, answering 404.
    upstream_env.fail("status", host="gamma", path="/markets/keyset", status=404,
                      body={"type": "not found error", "error": "id not found"})
    handler("refresh_markets")(None)
    body = json.loads(call({"deep": "true"}).get_body())
    assert body["checks"]["polymarket_clob"]["error"] == "4xx"
    assert body["checks"]["polymarket_gamma"]["status"] == "ok"
    clob, gamma = body["upstream_stats"]["clob"], body["upstream_stats"]["gamma"]
    # /book's 404 for the unknown token (its only call: no history is asked for an id nothing
    # knows): a healthy answer; the /ok ping's 404: a failure.
    assert clob == {**clob, "requests": 2, "failures": 1, "last_error_kind": "4xx"}
    assert clob["last_success_at"] is not None and clob["last_error_at"] > clob["last_success_at"]
    # The keyset listing's 404: a failure; the ping that followed: a success.
    assert gamma == {**gamma, "failures": 1, "last_error_kind": "4xx"}
    assert upstream_env.count("/markets/keyset", host="gamma") == 1


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
    from devtools.funchost import LocalHost

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
