"""The app's HTTP layer (``shared/api/``): gzip, ETags across encodings, Vary, CORS exposure and
demo-mode labels, on a real PostgreSQL and the Polymarket stand-in.

Handlers are called as Azure calls them (a ``func.HttpRequest``, no socket); one test goes through
the local host over loopback to show it passes compressed bytes and headers through untouched.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import httpx
import pytest

from shared.api.compression import GZIP_ETAG_SUFFIX, GZIP_MIN_BYTES, _gzip, accepts_gzip
from shared.api.cors import EXPOSED_HEADERS
from shared.api.responses import _serialise
from shared.markets.service import get_markets_service
from tests.conftest import ROOT, Upstream, handler, reset_app, reset_services

ORIGIN = "http://localhost:3000"
# Response headers JavaScript may read without Access-Control-Expose-Headers (Fetch standard).
SAFELISTED = {"cache-control", "content-language", "content-length", "content-type", "expires",
              "last-modified", "pragma"}


@pytest.fixture
def app_env(database_env: dict[str, str], upstream_env: Upstream,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    reset_services()
    get_markets_service().refresh(min_age_s=0)
    yield upstream_env
    reset_services()


def call(name: str, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         route_params: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", f"http://localhost/api/{path}", body=b"", params=params or {},
                           headers=headers or {}, route_params=route_params or {})
    return handler(name)(req)


def markets(params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return call("list_markets", "markets", params, headers)


def decoded(response: func.HttpResponse) -> dict[str, Any]:
    body = response.get_body()
    if response.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


def vary(response: func.HttpResponse | httpx.Response) -> set[str]:
    return {v.strip().lower() for v in (response.headers.get("Vary") or "").split(",") if v.strip()}


# --- Accept-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "gzip_ok"), [
    (None, False), ("", False), ("identity", False), ("br", False), ("deflate, br", False),
    ("gzip", True), ("GZip", True), ("x-gzip", True), ("gzip, deflate, br, zstd", True),
    ("gzip;q=0", False), ("gzip; q=0.000", False), ("gzip;Q=0", False), ("gzip;q=0.001", True),
    ("gzip ; q=0.5, br;q=1.0", True), ("gzip;q=1", True), ("gzip;q=1.000", True),
    ("*", True), ("*;q=0", False), ("br, *;q=0.1", True),
    ("gzip;q=0, *", False), ("*, gzip;q=0", False), ("gzip;q=0, *;q=0.5", False),
    ("gzip;q=2", False), ("gzip;q=1.5", False), ("gzip;q=0.0001", False), ("gzip;q=", False),
    ("gzip;q=high", False), (",,gzip,,", True),
])
def test_accept_encoding_q_values(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


# --- compression -------------------------------------------------------------------------------


def test_a_large_page_is_gzipped_with_its_own_etag(app_env: Upstream) -> None:
    plain = markets({"limit": "500"})
    packed = markets({"limit": "500"}, {"Accept-Encoding": "gzip, deflate, br"})
    assert plain.status_code == packed.status_code == 200
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "accept-encoding" in vary(plain) and "accept-encoding" in vary(packed)
    raw = plain.get_body()
    assert len(raw) > 200_000  # the page this is about: hundreds of KB of JSON
    assert len(packed.get_body()) < len(raw) / 2
    one, other = json.loads(raw), decoded(packed)
    assert one["markets"] == other["markets"] and one["total"] == other["total"]
    assert set(other["freshness"]) >= {"source", "as_of", "age_seconds"}
    assert packed.headers["ETag"] == plain.headers["ETag"][:-1] + GZIP_ETAG_SUFFIX + '"'
    assert packed.headers["Cache-Control"] == plain.headers["Cache-Control"]
    # The same page again: the same tag, and bytes that still decode to the (new) answer.
    again = markets({"limit": "500"}, {"Accept-Encoding": "gzip"})
    assert again.headers["ETag"] == packed.headers["ETag"]
    assert decoded(again)["markets"] == one["markets"]


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br", "*;q=0", "deflate"])
def test_no_gzip_unless_the_request_allows_it(app_env: Upstream, accept: str | None) -> None:
    response = markets({"limit": "500"}, {"Accept-Encoding": accept} if accept is not None else {})
    assert "Content-Encoding" not in response.headers
    assert not response.headers["ETag"].endswith(GZIP_ETAG_SUFFIX + '"')
    assert "accept-encoding" in vary(response)  # another request could get gzip
    assert json.loads(response.get_body())["markets"]


def test_bodies_under_the_threshold_are_not_compressed(app_env: Upstream) -> None:
    gz = {"Accept-Encoding": "gzip"}
    token = app_env.open_markets()[2]["token_ids"][0]
    small = [
        call("health_check", "health", headers=gz),
        call("get_price", f"price/{token}", {"history": "false"}, gz, {"token_id": token}),
        markets({"sort": "bogus"}, gz),  # a 400
        call("get_market", "markets/0x" + "ab" * 32, headers=gz, route_params={"market": "0x" + "ab" * 32}),
    ]
    for response in small:
        body = response.get_body()
        assert len(body) < GZIP_MIN_BYTES, len(body)
        assert "Content-Encoding" not in response.headers
        assert "accept-encoding" in vary(response)
        json.loads(body)
    one = markets({"limit": "1"}, gz)  # one market is already a little over the threshold
    assert len(gzip.decompress(one.get_body())) >= GZIP_MIN_BYTES
    assert one.headers["Content-Encoding"] == "gzip"


def test_if_none_match_revalidates_either_encoding(app_env: Upstream) -> None:
    gz = {"Accept-Encoding": "gzip"}
    plain_tag = markets({"limit": "500"}).headers["ETag"]
    gzip_tag = markets({"limit": "500"}, gz).headers["ETag"]
    assert gzip_tag != plain_tag

    def revalidate(tag: str, accept: dict[str, str]) -> func.HttpResponse:
        return markets({"limit": "500"}, {"If-None-Match": tag, **accept})

    cases = [
        (gzip_tag, gz, gzip_tag),  # a browser revalidating its gzip copy
        (plain_tag, gz, plain_tag),  # a cache that holds the identity copy asks on a gzip request
        (gzip_tag, {}, gzip_tag),
        (plain_tag, {}, plain_tag),
        ("W/" + gzip_tag, gz, gzip_tag),
        (f'"other", {plain_tag}, {gzip_tag}', gz, gzip_tag),  # both held: the one this request gets
        (f'{gzip_tag}, {plain_tag}', {}, plain_tag),
        ("*", gz, gzip_tag),
        ("*", {}, plain_tag),
    ]
    for sent, accept, tag in cases:
        response = revalidate(sent, accept)
        assert response.status_code == 304, (sent, accept)
        assert response.get_body() == b""
        assert response.headers["ETag"] == tag, (sent, accept)
        assert "Content-Encoding" not in response.headers
        assert "accept-encoding" in vary(response)
        assert response.headers["Cache-Control"].startswith("public, max-age=")
    for other in ('"0a1b"', plain_tag[:-1] + '-br"', gzip_tag[:-1] + 'x"', markets({"limit": "499"}).headers["ETag"]):
        assert revalidate(other, gz).status_code == 200, other
    token = app_env.open_markets()[3]["token_ids"][0]

    def quote(headers: dict[str, str]) -> func.HttpResponse:
        return call("get_price", f"price/{token}", {"history": "false"}, headers, {"token_id": token})

    small = quote(gz)  # under the threshold: identity, and its one tag, whatever the request accepts
    assert "Content-Encoding" not in small.headers and small.headers["ETag"] == quote({}).headers["ETag"]
    assert quote({"If-None-Match": "*", **gz}).headers["ETag"] == small.headers["ETag"]


def test_reused_compression_never_serves_other_bytes() -> None:
    body = {"markets": [{"i": i, "question": f"Will {i} happen?"} for i in range(3000)], "total": 3000}
    tag = '"reuse-test"'
    outputs: dict[float, bytes] = {}
    for age in (0.0, 1.5, 12.3, 1.5):
        data, stable = _serialise(body, {"freshness": {"source": "cache", "age_seconds": age}})
        packed = _gzip(data, stable, tag)
        assert gzip.decompress(packed) == data
        outputs[age] = data
    assert len(set(outputs.values())) == 3
    # Another body under the same tag (a reused tag, or a bug elsewhere): compressed afresh.
    changed = {**body, "total": 2999}
    data, stable = _serialise(changed, {"freshness": {"source": "cache", "age_seconds": 0.0}})
    assert gzip.decompress(_gzip(data, stable, tag)) == data
    # Concurrent requests for the same page each get their own, whole answer.
    errors: list[str] = []

    def worker(n: int) -> None:
        for k in range(20):
            data, stable = _serialise(body if (n + k) % 3 else changed,
                                      {"freshness": {"source": "cache", "age_seconds": float(n * 100 + k)}})
            if gzip.decompress(_gzip(data, stable, tag)) != data:
                errors.append(f"{n}/{k}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_cached_answer_is_serialised_once_per_path_and_etag() -> None:
    from shared.api import responses

    body = {"markets": [{"i": i} for i in range(50)], "total": 50}
    tail = {"freshness": {"source": "cache", "age_seconds": 1.0}}
    first, stable = _serialise(body, tail, ("/api/markets", "tag-1"))
    assert json.loads(first) == {**body, **tail}
    # The same path and tag: the JSON made for it (a 304 promises the body is the same).
    again, _ = _serialise({"markets": [], "total": 0}, {"freshness": {"age_seconds": 2.0}}, ("/api/markets", "tag-1"))
    assert again[:stable] == first[:stable] and json.loads(again)["freshness"] == {"age_seconds": 2.0}
    # Another path, another tag, or none: serialised afresh.
    for key in (("/api/other", "tag-1"), ("/api/markets", "tag-2"), None):
        other, _ = _serialise({"total": 0}, tail, key)
        assert json.loads(other) == {"total": 0, **tail}
    # Bounded in entries, and a head over the size cap is not kept.
    for n in range(responses.HEAD_CACHE_ENTRIES * 2):
        _serialise({"n": n}, tail, ("/api/bound", str(n)))
    assert len(responses._heads) <= responses.HEAD_CACHE_ENTRIES
    huge = {"blob": "x" * (responses.HEAD_CACHE_MAX_BYTES + 1)}
    _serialise(huge, tail, ("/api/huge", "t"))
    assert responses._heads.get(("/api/huge", "t")) is None


def test_gzip_passes_through_the_local_host_untouched(app_env: Upstream) -> None:
    import function_app
    from devtools.funchost import LocalHost

    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json") as host, \
            httpx.Client(base_url=host.url, trust_env=False, timeout=30) as client:
        with client.stream("GET", "/api/markets", params={"limit": "500"},
                           headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
        assert response.headers["etag"].endswith(GZIP_ETAG_SUFFIX + '"')
        page = json.loads(gzip.decompress(raw))
        assert len(page["markets"]) == min(500, page["total"]) == len(app_env.open_markets())
        head = client.head("/api/markets", params={"limit": "500"}, headers={"Accept-Encoding": "gzip"})
        # The same representation (its age in `freshness` may have moved a digit, so not its length).
        assert head.content == b"" and head.headers["etag"] == response.headers["etag"]
        assert head.headers["content-encoding"] == "gzip" and int(head.headers["content-length"]) > 0
        again = client.get("/api/markets", params={"limit": "500"},
                           headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]


# --- CORS: Vary and exposed headers ----------------------------------------------------------


def _answers(upstream: Upstream, headers: dict[str, str]) -> dict[str, func.HttpResponse]:
    """One answer of each kind: 200 (gzip and identity), 304, 400, 404, and the document."""
    gz = {**headers, "Accept-Encoding": "gzip"}
    page = markets({"limit": "500"}, gz)
    cid = upstream.open_markets()[0]["condition_id"]
    return {
        "200 gzip": page,
        "200 identity": markets({"limit": "2"}, headers),
        "304": markets({"limit": "500"}, {**gz, "If-None-Match": page.headers["ETag"]}),
        "400": markets({"limit": "0"}, headers),
        "404": call("get_market", "markets/x", headers=headers, route_params={"market": "0x" + "cd" * 32}),
        "market": call("get_market", f"markets/{cid}", headers=headers, route_params={"market": cid}),
        "health": call("health_check", "health", headers=headers),
        "openapi": call("get_openapi_document", "openapi.json", headers=gz),
    }


def test_listed_origins_vary_on_every_answer(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", f"{ORIGIN}, https://App.Example.com/")
    reset_app()
    statuses = {"200 gzip": 200, "200 identity": 200, "304": 304, "400": 400, "404": 404, "market": 200,
                "health": 200, "openapi": 200}
    for origin in (ORIGIN, "https://app.example.com", "HTTP://LOCALHOST:3000"):
        for kind, response in _answers(app_env, {"Origin": origin}).items():
            assert response.status_code == statuses[kind], kind
            assert "origin" in vary(response), (origin, kind)
            assert response.headers["Access-Control-Allow-Origin"] == origin, (origin, kind)
            exposed = [h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")]
            assert exposed == list(EXPOSED_HEADERS), kind
            assert {"etag", "retry-after", "x-data-simulated"} <= {h.lower() for h in exposed}
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "https://app.example.com.evil.net"},
                    {"Origin": "null"}):
        for kind, response in _answers(app_env, headers).items():
            # No CORS grant, but the same Vary: a cache must not hand this copy to a listed origin.
            assert "origin" in vary(response), (headers, kind)
            assert "Access-Control-Allow-Origin" not in response.headers, (headers, kind)
            assert "Access-Control-Expose-Headers" not in response.headers, (headers, kind)


def test_wildcard_goes_to_everyone_and_does_not_vary(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    reset_app()
    for headers in ({"Origin": ORIGIN}, {"Origin": "https://any.example"}, {}):
        for kind, response in _answers(app_env, headers).items():
            assert response.headers["Access-Control-Allow-Origin"] == "*", kind
            assert "origin" not in vary(response), kind  # the same answer for every origin
            assert response.headers["Access-Control-Expose-Headers"] == ", ".join(EXPOSED_HEADERS)


def test_no_cors_header_at_all_unless_configured(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in (None, "none", ""):
        if setting is None:
            monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
        else:
            monkeypatch.setenv("CORS_ALLOWED_ORIGINS", setting)
        reset_app()
        for kind, response in _answers(app_env, {"Origin": ORIGIN}).items():
            assert not [h for h in dict(response.headers) if h.lower().startswith("access-control-")], kind
            assert "origin" not in vary(response), kind


def test_every_header_the_app_sets_is_exposed(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPOSED_HEADERS is the one list: nothing the app sends a frontend may need is left out."""
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", ORIGIN)
    monkeypatch.setenv("POLYMARKET_SIMULATED", "true")  # X-Data-Simulated on everything
    reset_app()
    answers = list(_answers(app_env, {"Origin": ORIGIN}).values())
    cold = app_env.open_markets()[5]["token_ids"][0]
    app_env.fail("rate_limit", host="clob", retry_after=30)
    limited = call("get_price", f"price/{cold}", headers={"Origin": ORIGIN}, route_params={"token_id": cold})
    app_env.clear()
    assert limited.status_code == 503 and limited.headers["Retry-After"] == "30"
    answers.append(limited)
    sent = {name.lower() for response in answers for name in dict(response.headers)}
    needed = {name for name in sent if name not in SAFELISTED and not name.startswith("access-control-")
              and name != "vary"}
    assert needed == {h.lower() for h in EXPOSED_HEADERS}, sent


# --- demo mode ---------------------------------------------------------------------------------


def test_demo_mode_labels_every_answer(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMARKET_SIMULATED", "true")
    reset_app()
    for kind, response in _answers(app_env, {}).items():
        assert response.headers["X-Data-Simulated"] == "true", kind
        if kind == "304":
            assert response.get_body() == b""
        elif kind == "openapi":
            assert "simulated" not in decoded(response)  # the document is the same in every mode
        else:
            assert decoded(response)["simulated"] is True, kind
    monkeypatch.setenv("POLYMARKET_SIMULATED", "false")
    reset_app()
    for kind, response in _answers(app_env, {}).items():
        assert "X-Data-Simulated" not in response.headers, kind


def test_docs_are_served_with_their_types_and_nothing_else() -> None:
    reset_app()
    page = call("get_api_docs", "docs")
    assert page.status_code == 200 and page.mimetype == "text/html" and page.charset == "utf-8"
    assert page.headers["Cache-Control"].startswith("public, max-age=")
    text = page.get_body().decode()
    assert "/api/openapi.json" in text and "/api/docs/swagger-ui-bundle.js" in text
    assert "https://" not in text and "http://" not in text  # nothing from elsewhere
    for name, kind in (("swagger-ui.css", "text/css"), ("swagger-ui-bundle.js", "text/javascript"),
                       ("favicon-32x32.png", "image/png")):
        served = call("get_api_docs_asset", f"docs/{name}", route_params={"asset": name})
        assert served.status_code == 200 and served.headers["Content-Type"].startswith(kind), name
        assert served.headers["X-Content-Type-Options"] == "nosniff" and served.get_body()
    for name in ("index.html", "../../function_app.py", "swagger-ui.js.map", "LICENSE"):
        missing = call("get_api_docs_asset", f"docs/{name}", route_params={"asset": name})
        assert missing.status_code == 404 and json.loads(missing.get_body())["error"]["code"] == "not_found"


def test_importing_function_app_leaves_models_services_and_clients_for_the_first_request() -> None:
    import subprocess
    import sys

    heavy = ("pydantic", "openai", "py_clob_client_v2", "psycopg2", "httpx", "shared.api.handlers",
             "shared.markets.service", "shared.prices.service", "shared.sentiment.service")
    probe = ("import sys, function_app\n"
             f"heavy = {heavy!r}\n"
             "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout
