"""Answers come fast when Polymarket does not: stale-if-error at once, a deadline per request.

Through real HTTP (the local host), against the stand-in, with the production retry settings
(3 attempts, 1 s backoff, Retry-After honoured up to 10 s): the settings under which the old
code took 14 to 18 s to answer. Bounds are generous (the deadline plus 2 s; stored answers
under a second plus slack), never exact timings: ``bench/failure_bench.py`` measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.markets.service import get_markets_service
from tests.conftest import ROOT, PostgresServer, Upstream, reset_app, reset_services

DEADLINE_S = 3.0  # REQUEST_DEADLINE_S for these tests (default 5): shorter runs, same rule
SLACK_S = 2.0
STORED_BOUND_S = 1.0 + SLACK_S  # STALE_IF_ERROR_WAIT_S (1 s) at most, plus slack


@dataclass
class App:
    http: httpx.Client
    upstream: Upstream

    def timed(self, path: str, **params: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.http.get(path, params=params)
        return response, time.perf_counter() - started

    def ok(self, path: str, **params: str) -> dict[str, Any]:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def tokens(self, n: int, skip: int = 0) -> list[str]:
        markets = self.ok("/api/markets", limit="100")["markets"]
        return [m["outcomes"][0]["token_id"] for m in markets[skip:] if m["outcomes"][0]["token_id"]][:n]


@pytest.fixture
def serve(database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., App]]:
    import function_app
    from devtools.funchost import LocalHost

    started: list[tuple[Any, httpx.Client, Upstream]] = []

    def start(**env: str) -> App:
        upstream = Upstream(markets=150, seed=5)
        for key, value in {
            "POLYMARKET_HOST": upstream.clob_url,
            "POLYMARKET_GAMMA_HOST": upstream.gamma_url,
            "REQUEST_DEADLINE_S": str(DEADLINE_S),
            "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
            "PRICE_REFRESH_MIN_INTERVAL_S": "0",
            "PRICE_CACHE_TTL_S": "1",
            "BOOK_CACHE_TTL_S": "1",
            "PRICE_HISTORY_CACHE_TTL_S": "1",
            **env,
        }.items():
            monkeypatch.setenv(key, value)
        reset_services()
        reset_app()
        host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
        http = httpx.Client(base_url=host.url, timeout=60, trust_env=False)
        started.append((host, http, upstream))
        return App(http, upstream)

    yield start
    for host, http, upstream in started:
        http.close()
        host.stop()
        upstream.stop()
    reset_services()


@dataclass(frozen=True)
class Fault:
    name: str
    kind: str  # what stale_reason and the 503 message name
    inject: Callable[[Upstream], Any]
    retry_after: str | None = None

    def __str__(self) -> str:
        return self.name


FAULTS = [
    Fault("unreachable", "network: connection refused", lambda u: u.stop()),
    Fault("hanging", "timeout", lambda u: u.fail("hang", seconds=30)),
    Fault("5xx", "5xx: 503", lambda u: u.fail("status", status=503)),
    Fault("429", "429: retry after 7 s", lambda u: u.fail("rate_limit", retry_after=7), retry_after="7"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_with_stored_data_the_answer_is_stale_at_once(serve: Callable[..., App], fault: Fault) -> None:
    app = serve()
    a, b = app.tokens(2)
    app.ok(f"/api/price/{a}")
    app.ok("/api/prices", token_ids=f"{a},{b}")
    app.ok(f"/api/book/{a}")
    fault.inject(app.upstream)
    time.sleep(1.1)  # past every TTL: each answer below needs Polymarket, and cannot have it

    for path, params in ((f"/api/price/{a}", {}), ("/api/prices", {"token_ids": f"{a},{b}"}),
                         (f"/api/book/{a}", {}), ("/api/markets", {"refresh": "true"})):
        response, took = app.timed(path, **params)
        assert response.status_code == 200, (path, response.text)
        assert took < STORED_BOUND_S, (path, took)
        freshness = response.json()["freshness"]
        assert freshness["source"] == "stale" and fault.kind in freshness["stale_reason"], (path, freshness)


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_with_nothing_stored_a_503_comes_within_the_deadline(
    serve: Callable[..., App], postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    app = serve(UPSTREAM_BREAKER_FAILURES="1000")  # each fault as itself, not as an open circuit
    cold = app.tokens(1, skip=40)[0]
    fault.inject(app.upstream)
    for path, params in ((f"/api/price/{cold}", {}), ("/api/prices", {"token_ids": cold}),
                         (f"/api/book/{cold}", {})):
        response, took = app.timed(path, **params)
        assert response.status_code == 503, (path, response.text)
        assert took < DEADLINE_S + SLACK_S, (path, took)
        assert int(response.headers["Retry-After"]) >= 1
        if fault.retry_after:
            assert response.headers["Retry-After"] == fault.retry_after
        assert fault.kind.split(":")[0] in response.text, response.text

    # A new instance on an empty database: the catalogue's first load cannot finish.
    monkeypatch.setenv("POSTGRES_DATABASE", postgres.create_database())
    reset_services()
    reset_app()
    response, took = app.timed("/api/markets")
    assert response.status_code == 503, response.text
    assert took < DEADLINE_S + SLACK_S, took
    assert int(response.headers["Retry-After"]) >= 1
    if fault.retry_after:
        assert response.headers["Retry-After"] == fault.retry_after


def test_an_open_circuit_says_why_and_when_to_come_back(serve: Callable[..., App]) -> None:
    app = serve(UPSTREAM_BREAKER_FAILURES="2", UPSTREAM_BREAKER_COOLDOWN_S="40", UPSTREAM_RETRY_BACKOFF_S="0")
    a, cold = app.tokens(1)[0], app.tokens(1, skip=40)[0]
    app.ok(f"/api/price/{a}", history="false")
    app.upstream.stop()
    for _ in range(3):  # enough failures to open the circuit
        app.http.get(f"/api/price/{cold}", params={"history": "false"})
    response, took = app.timed(f"/api/price/{cold}", history="false")
    assert response.status_code == 503 and took < 1.0 + SLACK_S
    assert 30 <= int(response.headers["Retry-After"]) <= 40  # what is left of the cool-down
    assert "circuit_open after network: connection refused" in response.json()["error"]["message"]
    time.sleep(1.1)
    stale = app.ok(f"/api/price/{a}", history="false")
    assert "circuit_open after network: connection refused" in stale["freshness"]["stale_reason"]


def test_live_means_this_request_asked_polymarket(serve: Callable[..., App]) -> None:
    app = serve()
    assert app.ok("/api/markets")["freshness"]["source"] == "live"  # first load, from Gamma
    keyset = app.upstream.count("/markets/keyset")
    assert app.ok("/api/markets")["freshness"]["source"] == "cache"
    reset_services()  # a new instance: the catalogue comes from PostgreSQL, not Polymarket
    assert app.ok("/api/markets")["freshness"]["source"] == "cache"
    assert app.upstream.count("/markets/keyset") == keyset
    assert get_markets_service().status()["loaded"]


def test_a_refresh_slower_than_the_deadline_answers_from_the_catalogue_and_carries_on(
    serve: Callable[..., App],
) -> None:
    app = serve()
    listed = app.ok("/api/markets", limit="5")
    # Gamma answers the first page at once, the second after the deadline.
    app.upstream.fail("latency", host="gamma", path="/markets/keyset", ms=DEADLINE_S * 1000 + 500,
                      after=1, times=1)
    response, took = app.timed("/api/markets", limit="5", refresh="true")
    assert response.status_code == 200 and took < DEADLINE_S + SLACK_S
    body = response.json()
    assert body["freshness"]["source"] == "cache" and body["markets"] == listed["markets"]
    deadline = time.monotonic() + 20
    while get_markets_service().status()["refreshing"]:  # the refresh finishes on its own
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert get_markets_service().status()["last_error"] is None
