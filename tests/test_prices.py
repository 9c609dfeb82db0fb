"""The prices API (quotes, batches, books, history) on a real PostgreSQL, against the Polymarket
stand-in over loopback, through the registered functions."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import azure.functions as func
import pytest

from shared.db.database import get_database
from shared.markets.service import get_markets_service, reset_markets_service
from shared.prices.service import get_prices_service, reset_prices_service
from tests.conftest import Upstream, handler, reset_app

BOOK, BOOKS, HISTORY = "/book", "/books", "/prices-history"


@pytest.fixture
def app_env(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Upstream]:
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    reset_prices_service()
    reset_markets_service()
    yield upstream_env
    reset_prices_service()
    reset_markets_service()


def call(name: str, route: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         route_params: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"", params=params or {},
                           headers=headers or {}, route_params=route_params or {})
    return handler(name)(req)


def price(token: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
          ) -> func.HttpResponse:
    return call("get_price", f"price/{token}", params, headers, {"token_id": token})


def book(token: str, params: dict[str, str] | None = None) -> func.HttpResponse:
    return call("get_book", f"book/{token}", params, None, {"token_id": token})


def prices(token_ids: list[str] | str, params: dict[str, str] | None = None) -> func.HttpResponse:
    ids = token_ids if isinstance(token_ids, str) else ",".join(token_ids)
    return call("get_prices", "prices", {"token_ids": ids, **(params or {})})


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    return json.loads(response.get_body())


def ok(response: func.HttpResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.get_body()
    return body_of(response)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def open_token(upstream: Upstream, index: int = 0, denom: int | None = None) -> str:
    markets = [m for m in upstream.standin.catalogue if not m.closed
               and (denom is None or m.tick_denom == denom)]
    return markets[index].tokens[0].token_id


def recently_closed_market(upstream: Upstream) -> Any:
    """A market the stand-in started closed, within upstream's ~31 days of history."""
    now = upstream.standin.now()
    return next(m for m in upstream.standin.catalogue if m.closed and now - 20 * 86_400 < m.closed_at < now - 3600
                and m.created_at < m.closed_at - 86_400)


def upstream_total(upstream: Upstream) -> int:
    return len(upstream.standin.requests())


def stored(token: str) -> list[dict[str, Any]]:
    return get_database().query(
        "SELECT ts, price, midpoint, best_bid, best_ask, spread, last_trade_price, source FROM price_samples "
        "WHERE token_id = %s ORDER BY ts", (token,))


def upstream_top(raw: dict[str, Any]) -> tuple[Decimal, Decimal]:
    return max(Decimal(b["price"]) for b in raw["bids"]), min(Decimal(a["price"]) for a in raw["asks"])


# --- quotes ----------------------------------------------------------------------------------


def test_quote_fields_and_midpoint_rule_from_one_book_read(app_env: Upstream) -> None:
    app_env.freeze_prices()
    token = open_token(app_env, 2, denom=100)
    app_env.standin.set_price(token, 0.42, hold=True)
    raw = app_env.standin.book(token)
    bid, ask = upstream_top(raw)
    assert Decimal(raw["bids"][-1]["price"]) == bid  # upstream sends the best LAST
    body = ok(price(token, {"history": "false"}))
    quote = body["quote"]
    assert quote["best_bid"] == float(bid) == 0.41 and quote["best_ask"] == float(ask) == 0.43
    assert quote["midpoint"] == 0.42 and quote["spread"] == 0.02
    assert quote["price"] == 0.42 and quote["price_rule"] == "midpoint"
    assert quote["last_trade_price"] == float(Decimal(raw["last_trade_price"]))
    assert quote["tick_size"] == 0.01 and quote["book"] == "open"
    assert all(isinstance(quote[k], float) for k in ("price", "midpoint", "best_bid", "best_ask", "spread"))
    assert body["token"]["token_id"] == token and body["token"]["condition_id"] == raw["market"]
    assert body["freshness"]["source"] == "live"
    assert "history" not in body
    # One round trip for every field: no /midpoint, /price, /spread or /last-trade-price calls.
    assert app_env.count(BOOK) == 1 and upstream_total(app_env) == 1


def test_wide_spread_shows_the_last_trade(app_env: Upstream) -> None:
    app_env.freeze_prices()
    token = open_token(app_env, 3, denom=100)
    market = app_env.standin.market(token)
    market.spread_ticks = 30  # a wide book: 0.30 between best bid and best ask
    app_env.standin.set_price(token, 0.5, hold=False)  # rebuilds the book with the new spread
    raw = app_env.standin.book(token)
    bid, ask = upstream_top(raw)
    assert ask - bid > Decimal("0.10")
    quote = ok(price(token, {"history": "false"}))["quote"]
    assert quote["price_rule"] == "last_trade"
    assert quote["price"] == quote["last_trade_price"] == float(Decimal(raw["last_trade_price"]))
    assert quote["midpoint"] == float((bid + ask) / 2) and quote["price"] != quote["midpoint"]
    assert quote["spread"] == float(ask - bid)


def test_a_one_sided_book_that_never_traded_has_no_price_and_says_so(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRICE_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    reset_prices_service()
    app_env.freeze_prices()
    market = app_env.open_markets()[3]
    yes, no = market["token_ids"]
    app_env.standin.make_one_sided(yes)
    raw = app_env.standin.book(yes)
    assert raw["asks"] == [] and raw["last_trade_price"] == ""
    quote = ok(price(yes, {"history": "false"}))["quote"]
    assert quote["price"] is None and quote["price_rule"] == "none"  # not "midpoint": there is none
    assert quote["best_bid"] == float(max(Decimal(b["price"]) for b in raw["bids"]))
    assert quote["best_ask"] is None and quote["midpoint"] is None and quote["spread"] is None
    assert quote["last_trade_price"] is None and quote["book"] == "open"
    mirror = ok(prices([no]))["quotes"][0]["quote"]
    assert mirror["price"] is None and mirror["price_rule"] == "none" and mirror["best_bid"] is None
    # The book closes: the last quote seen had no price, and the closed quote still says so.
    app_env.close_market(market["condition_id"])
    closed = ok(price(yes, {"history": "false", "refresh": "true"}))["quote"]
    assert closed["book"] == "closed" and closed["price"] is None and closed["price_rule"] == "none"
    assert get_prices_service().flush()
    assert stored(yes) == []  # no price, no sample


def test_fresh_quotes_are_stored_idempotently_for_tokens_the_markets_table_does_not_know(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRICE_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    reset_prices_service()
    app_env.freeze_prices()
    token = open_token(app_env, 4)
    assert get_database().query("SELECT count(*) AS n FROM markets")[0]["n"] == 0
    quote = ok(price(token, {"history": "false"}))["quote"]
    assert get_prices_service().flush()
    rows = stored(token)
    assert len(rows) == 1
    row = rows[0]
    assert row["source"] == "quote" and float(row["price"]) == quote["price"]
    assert (float(row["best_bid"]), float(row["best_ask"]), float(row["spread"]), float(row["midpoint"])) == (
        quote["best_bid"], quote["best_ask"], quote["spread"], quote["midpoint"])
    assert row["ts"].isoformat() == quote["book_timestamp"]  # keyed on when the book took this state
    # The same book read again (a forced refresh, then a brand-new instance) adds nothing.
    ok(price(token, {"history": "false", "refresh": "true"}))
    reset_prices_service()
    ok(price(token, {"history": "false"}))
    assert get_prices_service().flush()
    assert len(stored(token)) == 1
    assert app_env.count(BOOK) == 3


def test_a_broken_database_never_fails_a_quote_and_loses_nothing(
    upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", str(tmp_path / "no-server-here"))
    monkeypatch.setenv("POSTGRES_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    reset_prices_service()
    try:
        token = open_token(upstream_env, 5)
        body = ok(price(token))
        assert body["quote"]["price"] is not None and body["freshness"]["source"] == "live"
        assert body["token"]["outcome"] is None  # the markets store could not be asked
        assert len(body["history"]["points"]) > 0  # upstream history, without stored samples
        writer = get_prices_service().writer
        assert not writer.flush(timeout_s=2)
        assert writer.pending() > 0 and writer.failures > 0 and writer.dropped == 0
    finally:
        reset_prices_service()


def test_ttl_cache_etag_and_cors(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://app.example")
    reset_app()
    token = open_token(app_env, 6)
    first = price(token, {"history": "false"}, headers={"Origin": "https://app.example"})
    assert first.status_code == 200
    assert first.headers["Access-Control-Allow-Origin"] == "https://app.example"
    max_age = int(first.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 <= max_age <= 5
    for _ in range(10):
        again = price(token, {"history": "false"})
        assert body_of(again)["freshness"]["source"] == "cache"
    assert app_env.count(BOOK) == 1  # within the 5 s TTL: no upstream call
    not_modified = price(token, {"history": "false"}, headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304 and not_modified.get_body() == b""


def test_refresh_bypasses_the_cache_at_most_once_per_5_s(app_env: Upstream) -> None:
    token = open_token(app_env, 7)
    ok(price(token, {"history": "false"}))
    assert ok(price(token, {"history": "false", "refresh": "true"}))["freshness"]["source"] == "live"
    for _ in range(5):
        assert ok(price(token, {"history": "false", "refresh": "true"}))["freshness"]["source"] == "cache"
    assert app_env.count(BOOK) == 2
    assert price(token, {"refresh": "please"}).status_code == 400


def test_outcome_label_and_condition_id_from_the_markets_store(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    market = app_env.open_markets()[1]
    token = market["token_ids"][1]
    token_info = ok(price(token, {"history": "false"}))["token"]
    assert token_info == {"token_id": token, "condition_id": market["condition_id"],
                          "outcome": market["outcomes"][1], "outcome_index": 1}


def test_200_concurrent_requests_on_a_cold_token_make_one_upstream_fetch(app_env: Upstream) -> None:
    token = open_token(app_env, 8)
    app_env.fail("latency", host="clob", path=BOOK, ms=300)  # keep the first fetch in flight
    app_env.fail("latency", host="clob", path=HISTORY, ms=300)
    barrier = threading.Barrier(200)

    def one(_: int) -> tuple[int, float]:
        barrier.wait()
        response = price(token)
        return response.status_code, body_of(response)["quote"]["price"]

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    assert {status for status, _ in results} == {200}
    assert len({p for _, p in results}) == 1
    assert app_env.count(BOOK) == 1
    assert app_env.count(HISTORY) == 1


def test_lru_bounds_the_cache(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICE_CACHE_MAX_TOKENS", "3")
    reset_app()
    reset_prices_service()
    tokens = [open_token(app_env, i) for i in range(10, 15)]
    for token in tokens:
        ok(price(token, {"history": "false"}))
    service = get_prices_service()
    assert len(service.entries) <= 3 and len(service.books) <= 3 and len(service.tokens) <= 3
    assert app_env.count(BOOK) == 5
    ok(price(tokens[-1], {"history": "false"}))  # still cached
    assert app_env.count(BOOK) == 5
    ok(price(tokens[0], {"history": "false"}))  # evicted: fetched again
    assert app_env.count(BOOK) == 6
    for i in range(40):  # arbitrary well-formed ids cannot grow it either
        price(str(10**70 + i), {"history": "false"})
    assert len(service.entries) <= 3 and len(service.history) <= 3


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", "1" * 79, "1&side=BUY", "../x", "", " ", "12a", "0x1f", "１２",
                                 "1\n"])
def test_bad_token_ids_are_400_and_never_sent_upstream(app_env: Upstream, bad: str) -> None:
    for response in (price(bad), book(bad)):
        assert response.status_code == 400
        error = body_of(response)["error"]
        assert error["code"] == "bad_request" and error["parameter"] == "token_id"
    assert upstream_total(app_env) == 0


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"interval": "2h"}, "interval"),
        ({"interval": "all"}, "interval"),
        ({"fidelity": "0"}, "fidelity"),
        ({"fidelity": "abc"}, "fidelity"),
        ({"fidelity": "1441"}, "fidelity"),
        ({"interval": "1w", "fidelity": "4"}, "fidelity"),
        ({"interval": "1m", "fidelity": "9"}, "fidelity"),
        ({"interval": "max", "fidelity": "1"}, "fidelity"),
        ({"history": "maybe"}, "history"),
    ],
)
def test_bad_history_parameters_are_400_naming_the_parameter(
    app_env: Upstream, params: dict[str, str], parameter: str
) -> None:
    response = price(open_token(app_env), params)
    assert response.status_code == 400
    assert body_of(response)["error"]["parameter"] == parameter
    assert upstream_total(app_env) == 0


@pytest.mark.parametrize(("interval", "fidelity"), [("1h", "1"), ("6h", "1"), ("1w", "5"), ("1m", "10"),
                                                    ("max", "10")])
def test_history_parameters_upstream_accepts(app_env: Upstream, interval: str, fidelity: str) -> None:
    token = open_token(app_env, 9)
    history = ok(price(token, {"interval": interval}))["history"]
    assert (history["interval"], history["fidelity"]) == (interval, int(fidelity))  # default: the minimum
    sent = [r.query for r in app_env.standin.requests() if r.path == HISTORY]
    assert len(sent) == 1 and f"interval={interval}" in sent[0] and f"fidelity={fidelity}" in sent[0]
    points = history["points"]
    assert points and all(b["t"] - a["t"] >= int(fidelity) * 60 - 60 for a, b in itertools.pairwise(points))


# --- unknown and closed tokens ---------------------------------------------------------------


def test_unknown_token_is_404(app_env: Upstream) -> None:
    unknown = "9" * 77
    response = price(unknown)
    assert response.status_code == 404
    error = body_of(response)["error"]
    assert error["code"] == "not_found" and unknown in error["message"]
    assert book(unknown).status_code == 404
    requests_so_far = upstream_total(app_env)
    assert price(unknown).status_code == 404  # remembered for the TTL
    assert upstream_total(app_env) == requests_so_far


def test_a_market_closed_after_we_saw_it_answers_its_last_known_price(app_env: Upstream) -> None:
    market = app_env.open_markets()[12]
    token = market["token_ids"][0]
    before = ok(price(token, {"interval": "1h"}))
    assert get_prices_service().flush()
    app_env.close_market(market["condition_id"])
    reset_prices_service()  # a new instance: nothing in memory, only the database
    body = ok(price(token, {"interval": "1h"}))
    quote = body["quote"]
    assert quote["book"] == "closed" and quote["price_rule"] == "last_known"
    assert quote["price"] == before["quote"]["price"]
    assert body["freshness"]["source"] == "stale" and "closed" in body["freshness"]["stale_reason"]
    assert len(body["history"]["points"]) >= len(before["history"]["points"]) - 2
    closed_book = book(token)
    assert closed_book.status_code == 404 and body_of(closed_book)["error"]["code"] == "book_closed"
    reads = app_env.count(BOOK)
    assert body_of(book(token))["error"]["code"] == "book_closed"
    assert app_env.count(BOOK) == reads  # known to have no book within the TTL


def test_a_closed_market_known_only_to_the_catalogue_or_upstream_history(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    market = app_env.open_markets()[20]
    token = market["token_ids"][0]
    app_env.close_market(market["condition_id"])
    body = ok(price(token, {"history": "false"}))
    assert body["quote"]["book"] == "closed" and body["quote"]["price"] is not None
    assert "market catalogue" in body["freshness"]["stale_reason"]
    assert body["token"]["outcome"] == market["outcomes"][0]
    # Known to the catalogue without a price of its own: upstream history (within its ~31 days)
    # has its last price.
    other = app_env.open_markets()[21]
    unpriced = other["token_ids"][0]
    app_env.close_market(other["condition_id"])
    get_database().run(lambda cur: cur.execute("UPDATE outcome_tokens SET price = NULL WHERE token_id = %s",
                                               (unpriced,)))
    body = ok(price(unpriced, {"interval": "max"}))
    assert body["quote"]["book"] == "closed" and "price history" in body["freshness"]["stale_reason"]
    assert body["quote"]["price"] == body["history"]["points"][-1]["p"]
    # Closed before we ever saw it, and unknown to the catalogue and the database: one /book
    # read, no history call (issue 11: an id nothing knows costs one upstream call), a 404.
    old = recently_closed_market(app_env).tokens[1].token_id
    calls = upstream_total(app_env)
    response = price(old, {"interval": "max"})
    assert response.status_code == 404 and body_of(response)["error"]["code"] == "not_found"
    assert upstream_total(app_env) == calls + 1


# --- history ---------------------------------------------------------------------------------


def test_history_merges_stored_samples_and_survives_upstream_forgetting(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRICE_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    reset_prices_service()
    app_env.freeze_prices()
    token = open_token(app_env, 16)
    first = ok(price(token, {"interval": "6h", "fidelity": "5"}))["history"]
    points = [(p["t"], p["p"]) for p in first["points"]]
    assert len(points) >= 70 and first["upstream_points"] == len(points) and first["stored_points"] == 0
    assert [t for t, _ in points] == sorted({t for t, _ in points})
    assert get_prices_service().flush()
    assert len([r for r in stored(token) if r["source"] == "upstream_history"]) == len(points)

    # Upstream forgets the older half: those points now come from storage.
    middle = points[len(points) // 2][0]
    app_env.standin.forget_history(middle, token_id=token)
    half = ok(price(token, {"interval": "6h", "fidelity": "5", "refresh": "true"}))["history"]
    assert [(p["t"], p["p"]) for p in half["points"]][1:] == points[1:]
    assert 0 < half["upstream_points"] < len(points) and half["stored_points"] > 0

    # Upstream forgets everything (as for a market closed > 31 days ago): storage keeps it all.
    app_env.standin.forget_history(time.time() + 3600, token_id=token)
    reset_prices_service()
    gone = ok(price(token, {"interval": "6h", "fidelity": "5"}))["history"]
    assert gone["upstream_points"] == 0
    assert [(p["t"], p["p"]) for p in gone["points"]][1:] == points[1:]
    # A coarser fidelity buckets the stored points: one per 30 minutes.
    coarse = ok(price(token, {"interval": "6h", "fidelity": "30"}))["history"]["points"]
    assert 11 <= len(coarse) <= 13
    assert len({p["t"] // 1800 for p in coarse}) == len(coarse)


def test_history_adds_stored_quotes_where_upstream_has_no_point(app_env: Upstream) -> None:
    token = open_token(app_env, 17)
    now = datetime.now(UTC).replace(microsecond=0)
    app_env.standin.forget_history(time.time() + 3600, token_id=token)
    samples = {now - timedelta(minutes=m): round(0.3 + m / 1000, 3) for m in (5, 20, 21, 40, 90)}
    get_database().run(lambda cur: cur.executemany(
        "INSERT INTO price_samples (token_id, ts, price, midpoint, source) VALUES (%s, %s, %s, %s, 'quote')",
        [(token, ts, p, p) for ts, p in samples.items()]))
    latest: dict[int, tuple[int, float]] = {}
    for ts, p in sorted(samples.items()):
        t = int(ts.timestamp())
        if t >= time.time() - 3600:  # the 1h window leaves out the 90-minute-old sample
            latest[t // 600] = (t, p)  # the latest sample of each 10-minute bucket...
    expected: list[tuple[int, float]] = []
    for t, p in sorted(latest.values()):
        if not expected or t - expected[-1][0] >= 300:  # ...at least half a bucket apart
            expected.append((t, p))
    assert len(expected) == 3  # -40, one of -21/-20, -5 minutes
    history = ok(price(token, {"interval": "1h", "fidelity": "10"}))["history"]
    assert history["upstream_points"] == 0 and history["stored_points"] == 3
    assert [(p["t"], p["p"]) for p in history["points"]] == expected


def test_history_keeps_a_newest_point_stamped_a_few_seconds_ahead_of_our_clock(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRICE_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    reset_prices_service()
    app_env.freeze_prices()
    frozen = app_env.standin.now()
    data = app_env.standin.market_data
    # A token whose next one-minute point falls 5 to 20 s after now (points are not aligned to
    # round minutes, each market has its own phase).
    for market in (m for m in app_env.standin.catalogue if not m.closed):
        points = data.history(market, 0, frozen - 600, frozen, 1)
        if points and 40 <= frozen - points[-1]["t"] <= 55:
            break
    else:
        raise AssertionError("no market with a point due 5 to 20 s from now")
    ahead = points[-1]["t"] + 60
    app_env.standin.advance_time(ahead - frozen + 0.5)  # upstream's clock 5 to 20 s ahead of ours
    token = market.tokens[0].token_id
    upstream_now = app_env.standin.now()
    expected = [(p["t"], p["p"]) for p in data.history(market, 0, upstream_now - 3600, upstream_now, 1)]
    assert expected[-1][0] == ahead
    first = ok(price(token, {"interval": "1h"}))["history"]
    again = ok(price(token, {"interval": "1h", "refresh": "true"}))["history"]
    assert ahead > time.time()  # still in our future when both answers came
    for history in (first, again):
        assert [(p["t"], p["p"]) for p in history["points"]] == expected  # the newest point is kept
        assert history["upstream_points"] == len(expected) and history["stored_points"] == 0


def test_history_points_far_ahead_of_our_clock_are_dropped_and_not_stored(app_env: Upstream) -> None:
    app_env.freeze_prices()
    token = open_token(app_env, 33)
    app_env.standin.advance_time(1800)  # upstream half an hour ahead: not clock skew
    sent = [r for r in app_env.standin.requests() if r.path == HISTORY]
    before = time.time()
    history = ok(price(token, {"interval": "1h"}))["history"]
    after = time.time()
    sent = [r for r in app_env.standin.requests() if r.path == HISTORY][len(sent):]
    assert len(sent) == 1
    upstream_now = app_env.standin.now()
    m = app_env.standin.market(token)
    upstream = [(p["t"], p["p"]) for p in app_env.standin.market_data.history(m, 0, upstream_now - 3600,
                                                                                upstream_now, 1)]
    assert sum(t > after + 60 for t, _ in upstream) >= 25  # upstream did send points far ahead
    points = [(p["t"], p["p"]) for p in history["points"]]
    assert points and all(t <= after + 30 for t, _ in points)
    assert [point for point in upstream if point[0] <= before + 29] == [p for p in points if p[0] <= before + 29]
    assert get_prices_service().flush()
    newest = max(row["ts"] for row in stored(token))
    assert newest.timestamp() <= after + 30  # nothing from the future reached storage


# --- stale fallback --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "params", "kind"),
    [("status", {"status": 500}, "5xx"), ("reset", {}, "network"), ("garbage", {}, "bad_body"),
     ("rate_limit", {"retry_after": 1}, "429")],
)
def test_stale_fallback_from_memory(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch, fault: str, params: dict[str, Any], kind: str
) -> None:
    monkeypatch.setenv("PRICE_REFRESH_MIN_INTERVAL_S", "0")
    monkeypatch.setenv("UPSTREAM_RETRY_ATTEMPTS", "2")
    reset_app()
    reset_prices_service()
    token = open_token(app_env, 18)
    good = ok(price(token, {"history": "false"}))["quote"]
    app_env.fail(fault, host="clob", path=BOOK, **params)
    body = ok(price(token, {"history": "false", "refresh": "true"}))
    assert body["quote"] == good
    assert body["freshness"]["source"] == "stale" and kind in body["freshness"]["stale_reason"]
    assert "memory" in body["freshness"]["stale_reason"]
    # The stale answer is cached for the TTL: the outage costs one request attempt per TTL window
    # (and the background refresh's, which has ended before this counts).
    wait_for(lambda: get_prices_service().background_refreshes() == 0)
    attempts = app_env.count(BOOK)
    assert ok(price(token, {"history": "false"}))["freshness"]["source"] == "stale"
    assert app_env.count(BOOK) == attempts


def test_stale_fallback_from_the_database(app_env: Upstream) -> None:
    token = open_token(app_env, 19)
    good = ok(price(token, {"history": "false"}))["quote"]
    assert get_prices_service().flush()
    reset_prices_service()  # another instance: empty memory
    app_env.fail("status", host="clob", status=503)
    body = ok(price(token, {"history": "false"}))
    assert body["freshness"]["source"] == "stale"
    assert "database" in body["freshness"]["stale_reason"] and "5xx" in body["freshness"]["stale_reason"]
    quote = body["quote"]
    assert (quote["price"], quote["best_bid"], quote["best_ask"]) == (
        good["price"], good["best_bid"], good["best_ask"])
    assert quote["as_of"] == good["book_timestamp"]


def test_nothing_known_and_upstream_failing_is_503_json(app_env: Upstream) -> None:
    app_env.fail("status", host="clob", status=500)
    token = open_token(app_env, 21)
    for response in (price(token), book(token), prices([token])):
        assert response.status_code == 503
        error = body_of(response)["error"]
        assert error["code"] == "unavailable" and "Polymarket is failing" in error["message"]
        assert token in error["message"] or "any requested token" in error["message"]


# --- batches ---------------------------------------------------------------------------------


def test_a_batch_of_100_is_one_round_trip_and_cached_tokens_are_not_fetched(app_env: Upstream) -> None:
    tokens = [t for m in app_env.open_markets()[:50] for t in m["token_ids"]]
    assert len(tokens) == 100
    ok(price(tokens[0], {"history": "false"}))  # already fresh: not fetched again
    body = ok(prices(tokens))
    assert app_env.count(BOOKS) == 1 and app_env.count(BOOK) == 1
    assert body["count"] == 100 and [q["token_id"] for q in body["quotes"]] == tokens
    assert {q["status"] for q in body["quotes"]} == {"ok"}
    for item in body["quotes"][:10]:
        raw = app_env.standin.book(item["token_id"])
        bid, ask = upstream_top(raw)
        assert (item["quote"]["best_bid"], item["quote"]["best_ask"]) == (float(bid), float(ask))
    assert body["quotes"][0]["freshness"]["source"] == "cache"
    assert body["quotes"][1]["freshness"]["source"] == "live"
    ok(prices(tokens))  # all fresh now
    assert app_env.count(BOOKS) == 1
    assert get_prices_service().flush()
    assert get_database().query("SELECT count(DISTINCT token_id) AS n FROM price_samples")[0]["n"] == 100


def test_a_batch_reports_invalid_unknown_and_closed_ids_per_id(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    good = open_token(app_env, 22)
    market = app_env.open_markets()[23]
    closed = market["token_ids"][0]
    app_env.close_market(market["condition_id"])
    unknown = "7" * 76
    body = ok(prices(f"{good},abc,{unknown},{closed},{'1' * 79},{good}"))
    statuses = {q["token_id"]: q["status"] for q in body["quotes"]}
    assert statuses == {good: "ok", "abc": "invalid", unknown: "unknown", closed: "closed", "1" * 79: "invalid"}
    by_id = {q["token_id"]: q for q in body["quotes"]}
    assert by_id[closed]["quote"]["book"] == "closed" and by_id[closed]["quote"]["price"] is not None
    assert by_id[unknown]["quote"] is None and by_id[unknown]["error"]["code"] == "not_found"
    assert by_id["abc"]["error"]["code"] == "bad_request"
    assert app_env.count(BOOKS) == 1 and app_env.count(BOOK) == 0


@pytest.mark.parametrize("books_unknown", ["omit", "404"])
def test_one_unknown_token_does_not_hide_the_other_quotes_of_a_batch(app_env: Upstream, books_unknown: str
                                                                     ) -> None:
    # Polymarket may drop a token without a book from a POST /books answer, or 404 the whole
    # batch (the contract leaves it open): either way the valid tokens get their quotes.
    app_env.freeze_prices()
    app_env.standin.set_books_unknown(books_unknown)
    valid1, valid2 = open_token(app_env, 30), open_token(app_env, 31)
    unknown = "7" * 76
    body = ok(prices([valid1, unknown, valid2]))
    by_id = {q["token_id"]: q for q in body["quotes"]}
    assert {t: q["status"] for t, q in by_id.items()} == {valid1: "ok", unknown: "unknown", valid2: "ok"}
    for token in (valid1, valid2):
        bid, ask = upstream_top(app_env.standin.book(token))
        assert (by_id[token]["quote"]["best_bid"], by_id[token]["quote"]["best_ask"]) == (float(bid), float(ask))
        assert by_id[token]["freshness"]["source"] == "live"
    if books_unknown == "omit":
        assert (app_env.count(BOOKS), app_env.count(BOOK)) == (1, 0)
    else:  # [v1, u, v2] refused, then [v1] and [u, v2]; [u, v2] refused, then [u] and [v2]
        assert (app_env.count(BOOKS), app_env.count(BOOK)) == (2, 3)  # 5 = 2n - 1 calls


def test_a_refused_batch_of_100_is_split_within_the_bound(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    app_env.standin.set_books_unknown("404")
    markets = app_env.open_markets()
    closed_market = markets[60]
    app_env.close_market(closed_market["condition_id"])
    closed, unknown = closed_market["token_ids"][0], "7" * 76
    valid = [t for m in markets[:49] for t in m["token_ids"]]
    tokens = [*valid[:40], unknown, *valid[40:90], closed, *valid[90:]]
    assert len(tokens) == 100
    body = ok(prices(tokens))
    statuses = {q["token_id"]: q["status"] for q in body["quotes"]}
    assert statuses == {**dict.fromkeys(valid, "ok"), unknown: "unknown", closed: "closed"}
    calls = app_env.count(BOOKS) + app_env.count(BOOK)
    assert calls <= 1 + 2 * 2 * 7  # k = 2 tokens to blame, ceil(log2 100) = 7
    assert get_prices_service().flush()
    assert get_database().query("SELECT count(DISTINCT token_id) AS n FROM price_samples")[0]["n"] == 98


def test_a_batch_refused_with_a_400_is_split_and_a_missing_route_is_not(app_env: Upstream) -> None:
    tokens = [open_token(app_env, i) for i in range(34, 38)]
    # A 400 for the batch as a whole (e.g. a batch cap lower than ours): halves are asked again.
    app_env.fail("status", host="clob", path=BOOKS, status=400, times=1, body={"error": "Invalid payload"})
    body = ok(prices(tokens))
    assert {q["status"] for q in body["quotes"]} == {"ok"}
    assert (app_env.count(BOOKS), app_env.count(BOOK)) == (3, 0)
    assert get_prices_service().flush()
    # The router's 404 page (a wrong host or path prefix) is not "unknown token": nothing is
    # split, nothing is called unknown; what is known is served stale, the rest is a 503.
    reset_prices_service()
    app_env.fail("status", host="clob", status=404, body="404 page not found")
    unseen = [open_token(app_env, i) for i in (38, 39)]
    response = prices(unseen)
    assert response.status_code == 503 and body_of(response)["error"]["code"] == "unavailable"
    assert (app_env.count(BOOKS), app_env.count(BOOK)) == (4, 0)
    single = price(unseen[0], {"history": "false"})
    assert single.status_code == 503 and "4xx" in body_of(single)["error"]["message"]
    known = ok(prices(tokens))
    assert {q["status"] for q in known["quotes"]} == {"ok"}
    assert known["freshness"]["source"] == "stale" and "4xx" in known["freshness"]["stale_reason"]


def test_batch_limits(app_env: Upstream) -> None:
    too_many = [str(10**60 + i) for i in range(101)]
    for value in (",".join(too_many), "", ",,", "1" * 9000):
        response = prices(value)
        assert response.status_code == 400
        assert body_of(response)["error"]["parameter"] == "token_ids"
    assert call("get_prices", "prices").status_code == 400
    assert upstream_total(app_env) == 0


def test_batch_stale_fallback_mixes_memory_database_and_unavailable(app_env: Upstream) -> None:
    a, b, c = (open_token(app_env, i) for i in (24, 25, 26))
    ok(prices([a, b]))
    assert get_prices_service().flush()
    reset_prices_service()
    ok(price(a, {"history": "false"}))
    service = get_prices_service()
    service.entries.clear()  # a is remembered nowhere fresh; b only in the database
    # Every CLOB read fails: c, with nothing stored, is retried (as GET /book) and fails too.
    app_env.fail("status", host="clob", status=500)
    body = ok(prices([a, b, c]))
    by_id = {q["token_id"]: q for q in body["quotes"]}
    assert by_id[a]["status"] == by_id[b]["status"] == "ok"
    assert by_id[a]["freshness"]["source"] == by_id[b]["freshness"]["source"] == "stale"
    assert by_id[c]["status"] == "unavailable" and by_id[c]["quote"] is None
    assert body["freshness"]["source"] == "stale"


# --- books -----------------------------------------------------------------------------------


def test_book_is_best_first_with_depth_totals_tick_size_hash_and_timestamp(app_env: Upstream) -> None:
    app_env.freeze_prices()
    token = open_token(app_env, 27)
    raw = app_env.standin.book(token)
    body = ok(book(token, {"depth": "3"}))
    ob = body["book"]
    raw_bids = sorted((Decimal(b["price"]) for b in raw["bids"]), reverse=True)
    raw_asks = sorted(Decimal(a["price"]) for a in raw["asks"])
    assert [b["price"] for b in ob["bids"]] == [float(p) for p in raw_bids[:3]]
    assert [a["price"] for a in ob["asks"]] == [float(p) for p in raw_asks[:3]]
    assert ob["best_bid"] == float(raw_bids[0]) and ob["best_ask"] == float(raw_asks[0])
    assert ob["totals"]["bids"]["levels"] == len(raw["bids"])
    assert ob["totals"]["asks"]["size"] == pytest.approx(sum(float(a["size"]) for a in raw["asks"]))
    assert ob["hash"] == raw["hash"] and ob["tick_size"] == float(raw["tick_size"])
    assert ob["timestamp"] == datetime.fromtimestamp(int(raw["timestamp"]) / 1000, UTC).isoformat()
    assert ob["condition_id"] == raw["market"] and body["freshness"]["source"] == "live"
    assert len(ok(book(token))["book"]["bids"]) == min(10, len(raw["bids"]))
    # The book read also gave a quote: /api/price needs no upstream call now.
    ok(price(token, {"history": "false"}))
    assert app_env.count(BOOK) == 1
    for bad in ("0", "101", "ten", "-1"):
        response = book(token, {"depth": bad})
        assert response.status_code == 400 and body_of(response)["error"]["parameter"] == "depth"


def test_book_cache_is_2_s_and_falls_back_to_memory(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    token = open_token(app_env, 28)
    ok(book(token))
    ok(book(token))
    assert app_env.count(BOOK) == 1
    time.sleep(2.1)
    app_env.fail("status", host="clob", path=BOOK, status=502)
    stale = ok(book(token))
    assert stale["freshness"]["source"] == "stale" and "5xx" in stale["freshness"]["stale_reason"]


# --- retention -------------------------------------------------------------------------------


def test_retention_deletes_old_samples_in_batches(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICE_HISTORY_RETENTION_DAYS", "30")
    reset_app()
    reset_prices_service()
    now = datetime.now(UTC)
    old = [("1", now - timedelta(days=31, minutes=i), 0.5) for i in range(25)]
    recent = [("1", now - timedelta(days=29, minutes=i), 0.5) for i in range(5)]
    get_database().run(lambda cur: cur.executemany(
        "INSERT INTO price_samples (token_id, ts, price, source) VALUES (%s, %s, %s, 'quote')", old + recent))
    result = get_prices_service().prune(batch=10)
    assert (result["deleted"], result["batches"], result["complete"]) == (25, 4, True)
    assert get_database().query("SELECT count(*) AS n FROM price_samples")[0]["n"] == 5
    get_database().run(lambda cur: cur.executemany(
        "INSERT INTO price_samples (token_id, ts, price, source) VALUES (%s, %s, %s, 'quote')", old))
    handler("prune_price_history")(None)  # the timer trigger
    assert get_database().query("SELECT count(*) AS n FROM price_samples")[0]["n"] == 5
