"""Hostile input, CORS, and secrets, over real HTTP through the local host.

Every hostile request gets a 4xx with a clear JSON error (or the HTTP server's own 4xx for
requests too large to reach the app), never a 500, never a stack trace, and an invalid token
id is never sent to Polymarket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, SECRET_CANARIES, Upstream, reset_app

TOKEN_PATHS = ("/api/price/{}", "/api/book/{}")
LEAK_MARKERS = ("Traceback", 'File "', "psycopg2", "httpx.", "PolyApiException", "/work/", "site-packages")


@pytest.fixture
def api(database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import function_app
    from devtools.funchost import LocalHost

    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://app.example.com")
    for name, value in SECRET_CANARIES.items():
        monkeypatch.setenv(name, value)
    # An Azure OpenAI that is configured but unreachable: sentiment runs its error path.
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("AZURE_OPENAI_MAX_RETRIES", "0")
    monkeypatch.setenv("AZURE_OPENAI_TIMEOUT_S", "2")
    reset_app()
    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json") as host, \
            httpx.Client(base_url=host.url, timeout=60) as client:
        assert client.get("/api/markets", params={"limit": 1}).status_code == 200
        yield client


def _assert_clean_4xx(response: httpx.Response, *, app_level: bool = True) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    for marker in LEAK_MARKERS:
        assert marker not in response.text
    if app_level:
        error = response.json()["error"]
        assert error["code"] and error["message"]


HOSTILE_VALUES = [
    "' OR 1=1 --",
    "1; DROP TABLE markets;",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "%00",
    "\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() is true, still not a token id
    "1" * 79,
    "-1",
    "1e5",
    " 123",
    "0x" + "a" * 64,
    "9" * 5000,
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("template", TOKEN_PATHS)
def test_hostile_token_ids_are_400_and_never_sent_upstream(
    api: httpx.Client, upstream_env: Upstream, template: str, value: str
) -> None:
    before = upstream_env.count("/book") + upstream_env.count("/books")
    response = api.get(template.format(httpx.URL(path=value).raw_path.decode()))
    if response.status_code == 404 and "error" not in response.text:
        return  # the value changed the route itself (e.g. "../"): the host's 404, not ours
    _assert_clean_4xx(response)
    assert upstream_env.count("/book") + upstream_env.count("/books") == before


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/price/1", {"interval": "2h"}),
        ("/api/price/1", {"fidelity": "-5"}),
        ("/api/price/1", {"fidelity": "1e9"}),
        ("/api/price/1", {"refresh": "'; --"}),
        ("/api/book/1", {"depth": "101"}),
        ("/api/book/1", {"depth": "0x10"}),
        ("/api/prices", {"token_ids": ",".join(str(n) for n in range(1, 102))}),
        ("/api/prices", {"token_ids": ""}),
        ("/api/markets", {"limit": "-1"}),
        ("/api/markets", {"limit": "99999999999999999999999"}),
        ("/api/markets", {"sort": "volume; DROP TABLE markets"}),
        ("/api/markets", {"order": "desc, 1"}),
        ("/api/markets", {"q": "x" * 5000}),
        ("/api/markets", {"tag": "t" * 500}),
        ("/api/markets", {"cursor": "A" * 4000}),
        ("/api/markets", {"cursor": "eyJrIjpbZmFsc2UsIm5hbiIsIngiXSwiZiI6IngifQ"}),
        ("/api/markets", {"active_only": "1 OR 1=1"}),
        ("/api/health", {"deep": "<script>"}),
    ],
)
def test_hostile_parameters_are_400_with_a_clear_message(
    api: httpx.Client, path: str, params: dict[str, str]
) -> None:
    response = api.get(path, params=params)
    _assert_clean_4xx(response)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/api/markets/..%2F..%2Fetc%2Fpasswd",
        "/api/markets/0x" + "g" * 64,
        "/api/markets/" + "0x" + "a" * 4000,
        "/api/markets/0x" + "A" * 64,
        "/api/markets/%27%20OR%201%3D1",
        "/api/markets/0x" + "a" * 64 + "%00",
    ],
)
def test_hostile_condition_ids(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    _assert_clean_4xx(response)
    assert response.status_code in (400, 404)


def test_repeated_parameters_do_not_slip_past_validation(api: httpx.Client) -> None:
    response = api.get("/api/markets?limit=5&limit=100000")
    _assert_clean_4xx(response)
    response = api.get("/api/book/1?depth=5&depth=1000")
    _assert_clean_4xx(response)


def test_oversized_requests_are_refused(api: httpx.Client) -> None:
    huge_query = api.get("/api/markets", params={"q": "a" * 60_000})
    _assert_clean_4xx(huge_query, app_level=huge_query.headers.get("content-type", "").startswith("application/json"))
    body = api.request("POST", "/api/markets", content=b"x" * 1_000_000)
    _assert_clean_4xx(body, app_level=False)  # GET-only route: 405, the body is never read
    assert body.status_code == 405


def test_cors_allows_only_configured_origins(api: httpx.Client) -> None:
    allowed = api.get("/api/health", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "origin" in allowed.headers.get("vary", "").lower()
    for origin in ("https://evil.example.com", "https://app.example.com.evil.net", "null"):
        other = api.get("/api/health", headers={"Origin": origin})
        assert "access-control-allow-origin" not in other.headers, origin


def test_cors_wildcard_only_when_configured(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.functions as func

    from tests.conftest import handler

    req = func.HttpRequest("GET", "http://x/api/health", body=b"", headers={"Origin": "https://any.example"})
    assert "Access-Control-Allow-Origin" not in handler("health_check")(req).headers  # nothing configured
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    reset_app()
    assert handler("health_check")(req).headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_is_answered_by_the_host_for_allowed_origins_only(
    database_env: dict[str, str], upstream_env: Upstream
) -> None:
    import function_app
    from devtools.funchost import LocalHost

    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json", cors="https://app.example.com") as host:
        preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"}
        ok = httpx.options(f"{host.url}/api/markets", headers={"Origin": "https://app.example.com", **preflight})
        assert ok.status_code in (200, 204)
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "GET" in ok.headers["access-control-allow-methods"]
        assert "if-none-match" in ok.headers["access-control-allow-headers"].lower()
        denied = httpx.options(f"{host.url}/api/markets", headers={"Origin": "https://evil.example.com", **preflight})
        assert "access-control-allow-origin" not in denied.headers


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://localhost:5173", "http://127.0.0.1:3000",
                                    "http://127.0.0.1:5173"])
def test_the_local_default_origins_get_preflights_and_exposed_headers(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    """The app behind the local host as `make run` sets it up: the host's policy and the app's
    CORS_ALLOWED_ORIGINS are the same default list."""
    import function_app
    from devtools.funchost import LOCAL_CORS_ORIGINS, CorsPolicy, LocalHost
    from shared.api.cors import EXPOSED_HEADERS

    assert origin in LOCAL_CORS_ORIGINS
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", ",".join(LOCAL_CORS_ORIGINS))
    reset_app()
    policy = CorsPolicy.parse(",".join(LOCAL_CORS_ORIGINS), expose_headers=EXPOSED_HEADERS)
    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json", cors=policy) as host, \
            httpx.Client(base_url=host.url, timeout=60, trust_env=False) as client:
        preflight = client.options("/api/markets", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == origin
        assert preflight.headers["access-control-allow-methods"] == "GET"
        assert preflight.headers["access-control-allow-headers"] == "if-none-match"
        assert int(preflight.headers["access-control-max-age"]) >= 600
        assert "origin" in preflight.headers["vary"].lower()
        page = client.get("/api/markets", params={"limit": "5"}, headers={"Origin": origin})
        revalidated = client.get("/api/markets", params={"limit": "5"},
                                 headers={"Origin": origin, "If-None-Match": page.headers["etag"]})
        missing = client.get("/api/nowhere", headers={"Origin": origin})
        assert (page.status_code, revalidated.status_code, missing.status_code) == (200, 304, 404)
        for response in (page, revalidated, missing):
            assert response.headers["access-control-allow-origin"] == origin
            assert response.headers["access-control-expose-headers"] == ", ".join(EXPOSED_HEADERS)
            assert "origin" in response.headers["vary"].lower()
        assert "access-control-allow-origin" not in client.options("/api/markets", headers={
            "Origin": "http://localhost:8080", "Access-Control-Request-Method": "GET"}).headers


def test_no_secret_in_any_response_or_log_line(
    api: httpx.Client, upstream_env: Upstream, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    markets = api.get("/api/markets", params={"limit": 3}).json()["markets"]
    token = markets[0]["outcomes"][0]["token_id"]
    condition_id = markets[0]["condition_id"]
    responses = [
        api.get("/api/health", params={"deep": "true"}),
        api.get(f"/api/markets/{condition_id}"),
        api.get(f"/api/markets/{condition_id}/sentiment"),  # points at nothing: an error path
        api.get(f"/api/price/{token}"),
        api.get("/api/prices", params={"token_ids": f"{token},1,abc"}),
        api.get(f"/api/book/{token}"),
        api.get("/api/markets", params={"sort": "bad"}),
    ]
    upstream_env.fail("status", status=500)
    responses += [
        api.get("/api/markets", params={"refresh": "true"}),
        api.get(f"/api/price/{token}", params={"refresh": "true"}),
    ]
    monkeypatch.setenv("POSTGRES_PORT", "1")  # the database goes away too
    reset_app()
    responses += [api.get("/api/health", params={"deep": "true"}), api.get(f"/api/markets/{condition_id}")]
    assert any(r.status_code >= 500 for r in responses)  # error paths were exercised
    texts = [f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses]
    texts += [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    for text in texts:
        for name, secret in SECRET_CANARIES.items():
            assert secret not in text, f"{name} leaked: {text[:200]}"
