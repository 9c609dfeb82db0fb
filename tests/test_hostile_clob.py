"""The CLOB boundary against the hostile Polymarket, through the HTTP API (issue 11, breaks 5, 6, 7, 14).

Books, levels and history points that break the contract (numbers out of range or overflowing,
lone surrogates, error bodies with status 200, dates centuries away) are skipped and counted
when they are items (a level, a point) and fail only their own token when they are the book
itself; nothing bad is served, stored, or fails to load back; unknown ids cost one CLOB call.

The app runs on the local host over real HTTP, on a real PostgreSQL, against a hostile upstream
whose simulated clock is frozen (books and history stay still while a test compares them).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.db.database import get_database
from tests.conftest import ROOT, handler, reset_app, reset_services

CLIENT_TIMEOUT_S = 30.0
SANE_FROM = datetime(2020, 1, 1, tzinfo=UTC)


def strict_json(response: httpx.Response) -> Any:
    """The body as JSON, refusing what json.loads would let through (NaN, Infinity)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"invalid JSON constant {constant} in {response.request.url}")

    return json.loads(response.text, parse_constant=refuse)


@dataclass
class App:
    http: httpx.Client
    hostile: Any

    @property
    def standin(self) -> Any:
        return self.hostile.standin

    def get(self, path: str, **params: str) -> httpx.Response:
        response = self.http.get(path, params=params)
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response

    def ok(self, path: str, **params: str) -> dict[str, Any]:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return strict_json(response)

    def unavailable(self, path: str, **params: str) -> dict[str, Any]:
        """A documented 503 (never a 500) whose message names the bad body."""
        response = self.get(path, **params)
        assert response.status_code == 503, (path, response.status_code, response.text)
        error = strict_json(response)["error"]
        assert error["code"] == "unavailable" and "bad_body" in error["message"], error
        return error

    def clob_calls(self) -> int:
        return self.standin.count(host="clob")

    def rejected(self) -> dict[str, Any]:
        return self.ok("/api/health", deep="true")["datasets"]["prices"]["rejected"]

    def open_tokens(self, n: int, skip: int = 0) -> list[str]:
        markets = [m for m in self.standin.catalogue if not m.closed][skip:skip + n]
        return [m.tokens[0].token_id for m in markets]

    def upstream_book(self, token: str) -> dict[str, Any]:
        return self.standin.book(token)


@pytest.fixture
def app(database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    import function_app
    from devtools.funchost import LocalHost
    from devtools.hostile import HostileUpstream
    from devtools.standin import PolymarketStandIn

    frozen = time.time()
    hostile = HostileUpstream(PolymarketStandIn(markets=200, seed=13, clock=lambda: frozen)).start()
    for key, value in {
        "POLYMARKET_HOST": hostile.clob_url,
        "POLYMARKET_GAMMA_HOST": hostile.gamma_url,
        "UPSTREAM_RETRY_BACKOFF_S": "0",
        "UPSTREAM_BREAKER_FAILURES": "1000",  # each bad answer shows as itself, not as an open circuit
        "PRICE_REFRESH_MIN_INTERVAL_S": "0",
    }.items():
        monkeypatch.setenv(key, value)
    reset_services()
    reset_app()
    host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
    http = httpx.Client(base_url=host.url, timeout=CLIENT_TIMEOUT_S, trust_env=False)
    try:
        yield App(http, hostile)
    finally:
        http.close()
        host.stop()
        reset_services()
        reset_app()
        hostile.stop()


def flush() -> None:
    from shared.prices.service import get_prices_service

    assert get_prices_service().flush()


def stored(token: str) -> list[dict[str, Any]]:
    return get_database().query(
        "SELECT ts, price, midpoint, best_bid, best_ask, spread, last_trade_price, source FROM price_samples "
        "WHERE token_id = %s ORDER BY ts", (token,))


def assert_stored_rows_sane(token: str) -> None:
    latest = datetime.now(UTC) + timedelta(seconds=30)
    for row in stored(token):
        assert SANE_FROM <= row["ts"] <= latest, row
        for name in ("price", "midpoint", "best_bid", "best_ask", "spread", "last_trade_price"):
            value = row[name]
            assert value is None or (value.is_finite() and 0 <= value <= 1), (name, row)


def best(levels: list[dict[str, str]], *, bids: bool) -> Decimal:
    prices = [Decimal(level["price"]) for level in levels]
    return max(prices) if bids else min(prices)


# --- break 5: book values --------------------------------------------------------------------


LEVEL_VALUES = [
    ("price", "9e999999999", False),  # decimal.Overflow in the midpoint: was a 500
    ("price", "1e400", False),  # float inf: was HTTP 200 with a bare Infinity
    ("price", "1e400", True),  # the same as a JSON number
    ("price", "12.0", False),  # out of [0, 1]: was served live and stored
    ("price", "-5", False),
    ("price", "NaN", False),
    ("price", "x", False),
    ("size", "9e999999999", False),
    ("size", "-1", False),
    (None, "not a level", False),
]


@pytest.mark.parametrize(("field", "value", "raw"), LEVEL_VALUES, ids=[f"{f}={v}{' raw' if r else ''}"
                                                                         for f, v, r in LEVEL_VALUES])
def test_a_bad_book_level_is_skipped_and_counted(
    app: App, caplog: pytest.LogCaptureFixture, field: str | None, value: str, raw: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="polymarket_api.prices")
    token = app.open_tokens(1, skip=3)[0]
    upstream = app.upstream_book(token)
    app.hostile.on("book_field", host="clob", side="bids", level=-1, field=field, value=value, raw=raw)
    body = app.ok(f"/api/book/{token}", depth="100")["book"]
    good = upstream["bids"][:-1]  # the best bid (upstream lists it last) is the bad one
    assert body["totals"]["bids"]["levels"] == len(good)
    assert body["best_bid"] == float(best(good, bids=True)) < float(best(upstream["bids"], bids=True))
    assert body["best_ask"] == float(best(upstream["asks"], bids=False))
    assert all(0 <= level["price"] <= 1 and level["size"] > 0 for level in body["bids"] + body["asks"])
    quote = app.ok(f"/api/price/{token}", history="false")
    assert quote["freshness"]["source"] in ("live", "cache") and quote["quote"]["best_bid"] == body["best_bid"]
    assert app.rejected()["book_levels"] >= 1
    assert any(token in r.getMessage() and "level" in r.getMessage() for r in caplog.records)
    flush()
    assert stored(token)
    assert_stored_rows_sane(token)


# --- breaks 5 and 7: the book's own fields ---------------------------------------------------


BOOK_FIELDS = [
    ("hash", "a\ud800b"),  # a lone surrogate: was a 500
    ("hash", "a\u0000b"),
    ("hash", "h" * 10_000),
    ("market", "0x" + "zz" * 32),
    ("market", "a\u0000b"),
    ("tick_size", "5"),
    ("tick_size", "0"),
    ("tick_size", "1e400"),
    ("min_order_size", "-1"),
    ("min_order_size", "9e999999999"),
    ("last_trade_price", "12.0"),  # was served live (one-sided books show it) and stored
    ("last_trade_price", "-5"),
    ("timestamp", "100000000000000000000"),
    ("timestamp", "-5"),
    ("timestamp", str(int((time.time() + 60 * 86_400) * 1000))),  # two months ahead
    ("neg_risk", "yes"),
    ("asset_id", "0xabc"),
    ("bids", "none"),
]


@pytest.mark.parametrize(("field", "value"), BOOK_FIELDS, ids=[f"{f}={v[:20]!r}" for f, v in BOOK_FIELDS])
def test_a_bad_book_field_fails_that_book_only_never_with_a_500(app: App, field: str, value: str) -> None:
    seen, cold = app.open_tokens(2, skip=5)
    before = app.ok(f"/api/price/{seen}", history="false")["quote"]
    app.hostile.on("book_field", host="clob", field=field, value=value)
    # A token read before: its last quote, marked stale with the cause; never the bad values.
    again = app.ok(f"/api/price/{seen}", history="false", refresh="true")
    assert again["quote"] == before
    assert again["freshness"]["source"] == "stale" and "bad_body" in again["freshness"]["stale_reason"]
    # A token never read: a 503 naming the cause, for its price and for its book.
    app.unavailable(f"/api/price/{cold}")
    app.unavailable(f"/api/book/{cold}")
    batch = app.get("/api/prices", token_ids=f"{cold},{seen}")
    assert batch.status_code == 200, batch.text
    statuses = {q["token_id"]: q["status"] for q in strict_json(batch)["quotes"]}
    assert statuses == {cold: "unavailable", seen: "ok"}
    assert app.rejected()["books"] >= 1
    flush()
    assert [row for row in stored(cold) if row["source"] == "quote"] == []  # nothing from the bad book
    assert_stored_rows_sane(seen)


# --- break 7: an error body with status 200, one bad book in a batch -------------------------


def test_an_error_body_with_status_200_is_an_upstream_error_not_a_closed_book(app: App) -> None:
    seen, cold = app.open_tokens(2, skip=8)
    before = app.ok(f"/api/price/{seen}", history="false")["quote"]
    app.hostile.on("json", host="clob", path="/book", value={"error": "No orderbook exists for the requested "
                                                                        "token id"}, status=200)
    body = app.ok(f"/api/price/{seen}", history="false", refresh="true")
    assert body["quote"] == before and body["quote"]["book"] == "open"  # not "closed"
    assert body["freshness"]["source"] == "stale" and "bad_body" in body["freshness"]["stale_reason"]
    app.unavailable(f"/api/price/{cold}")  # not a 404 "unknown token"
    app.unavailable(f"/api/book/{cold}")  # nor a 404 "book_closed"
    time.sleep(2.1)  # past the book TTL: the book from the first read answers, marked stale
    book = app.ok(f"/api/book/{seen}")
    assert book["freshness"]["source"] == "stale" and "bad_body" in book["freshness"]["stale_reason"]
    app.hostile.clear()
    assert app.ok(f"/api/price/{seen}", history="false", refresh="true")["freshness"]["source"] == "live"


@pytest.mark.parametrize("bad", ["hash", "asset_id", "level"])
def test_one_malformed_book_in_a_batch_affects_only_its_token(app: App, bad: str) -> None:
    tokens = app.open_tokens(10, skip=20)
    victim = tokens[3]
    if bad == "hash":
        app.hostile.on("book_field", host="clob", path="/books", tokens=[victim], field="hash", value="\ud800")
    elif bad == "asset_id":  # a book that cannot even say whose it is
        app.hostile.on("book_field", host="clob", path="/books", tokens=[victim], field="asset_id", value="?")
    else:
        app.hostile.on("book_field", host="clob", path="/books", tokens=[victim], side="asks", field="price",
                       value="1e400", raw=True)
    body = app.ok("/api/prices", token_ids=",".join(tokens))
    statuses = {q["token_id"]: q["status"] for q in body["quotes"]}
    expected = "ok" if bad == "level" else "unavailable"  # a bad level is skipped, a bad book is its token's
    assert statuses == {**dict.fromkeys(tokens, "ok"), victim: expected}
    assert app.standin.count(host="clob", path="/books") == 1
    for item in body["quotes"]:
        if item["status"] == "ok":
            assert item["freshness"]["source"] == "live" and 0 <= item["quote"]["price"] <= 1
    rejected = app.rejected()
    assert rejected["book_levels" if bad == "level" else "books"] >= 1
    flush()
    for token in tokens:
        assert_stored_rows_sane(token)
    assert bool([row for row in stored(victim) if row["source"] == "quote"]) == (bad == "level")


# --- break 6: history points -----------------------------------------------------------------


HISTORY_POINTS = [
    ("t", 10**20, False),
    ("t", -(10**20), False),  # was a 500 (OverflowError storing it)
    ("t", -5, False),  # was stored, dated 1969
    ("t", 3_400_000_000, False),  # 2077: was stored forever
    ("t", int(time.time()) + 3600, False),  # an hour ahead: not clock skew
    ("t", "1786854608", False),
    ("t", True, False),
    ("p", 12.0, False),
    ("p", -5, False),
    ("p", "NaN", False),
    ("p", "1e400", True),
    (None, "not a point", False),
]


@pytest.mark.parametrize(("field", "value", "raw"), HISTORY_POINTS,
                         ids=[f"{f}={v!r}{' raw' if r else ''}" for f, v, r in HISTORY_POINTS])
def test_a_bad_history_point_is_skipped_counted_and_never_stored(
    app: App, caplog: pytest.LogCaptureFixture, field: str | None, value: Any, raw: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="polymarket_api.prices")
    token = app.open_tokens(1, skip=12)[0]
    # The second-newest point is the bad one: the newest stays, so the series still reaches now.
    app.hostile.on("history_point", host="clob", points=[-2], field=field, value=value, raw=raw)
    history = app.ok(f"/api/price/{token}", interval="1h")["history"]
    m = app.standin.market(token)
    now = app.standin.now()
    upstream = [(p["t"], p["p"]) for p in app.standin.market_data.history(m, 0, now - 3600, now, 1)]
    points = [(p["t"], p["p"]) for p in history["points"]]
    assert points == upstream[:-2] + upstream[-1:]
    assert history["upstream_points"] == len(upstream) - 1 and "stale_reason" not in history
    flush()
    assert_stored_rows_sane(token)
    rows = stored(token)
    assert len([r for r in rows if r["source"] == "upstream_history"]) == len(upstream) - 1
    assert app.rejected()["history_points"] >= 1
    assert any(token in r.getMessage() and "history" in r.getMessage() for r in caplog.records)


def test_history_that_is_not_a_list_is_a_bad_body_and_the_quote_still_answers(app: App) -> None:
    token = app.open_tokens(1, skip=13)[0]
    app.hostile.on("json", host="clob", path="/prices-history", value={"history": {"t": 1}})
    body = app.ok(f"/api/price/{token}", interval="1h")
    assert body["quote"]["price"] is not None and body["history"]["points"] == []
    assert "bad_body" in body["history"]["stale_reason"]


# --- break 14: unknown tokens ----------------------------------------------------------------


def test_unknown_token_ids_cost_one_clob_call_each_and_none_again_within_the_ttl(app: App) -> None:
    rng = random.Random(14)
    ids = [str(rng.randrange(10**75, 10**77)) for _ in range(20)]
    before = app.clob_calls()
    for token in ids:  # default parameters: history included
        response = app.get(f"/api/price/{token}")
        assert response.status_code == 404 and strict_json(response)["error"]["code"] == "not_found"
    assert app.clob_calls() - before <= 20
    assert app.standin.count(host="clob", path="/prices-history") == 0
    after = app.clob_calls()
    for token in ids:  # within the TTL: every path answers from the negative cache
        assert app.get(f"/api/price/{token}").status_code == 404
        assert app.get(f"/api/price/{token}", history="false", interval="1w").status_code == 404
        assert app.get(f"/api/book/{token}").status_code == 404
    batch = app.ok("/api/prices", token_ids=",".join(ids))
    assert {q["status"] for q in batch["quotes"]} == {"unknown"}
    assert app.clob_calls() == after
    # A batch of new unknown ids: one POST /books, then one GET /price answer each from the cache.
    more = [str(rng.randrange(10**75, 10**77)) for _ in range(20)]
    batch = app.ok("/api/prices", token_ids=",".join(more))
    assert {q["status"] for q in batch["quotes"]} == {"unknown"}
    assert app.clob_calls() == after + 1
    for token in more:
        assert app.get(f"/api/price/{token}").status_code == 404
    assert app.clob_calls() == after + 1


def test_an_open_token_never_seen_still_gets_its_history(app: App) -> None:
    token = app.open_tokens(1, skip=30)[0]
    body = app.ok(f"/api/price/{token}", interval="1h")
    assert body["quote"]["book"] == "open" and len(body["history"]["points"]) >= 50
    assert app.standin.count(host="clob", path="/book") == 1
    assert app.standin.count(host="clob", path="/prices-history") == 1


# --- whatever is stored loads back -----------------------------------------------------------


def test_stored_rows_out_of_range_are_never_served_and_future_ones_are_pruned(app: App) -> None:
    token = app.open_tokens(1, skip=40)[0]
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        (now - timedelta(hours=3), Decimal("0.31"), "quote"),  # the one good row
        (datetime(2076, 1, 1, tzinfo=UTC), Decimal("0.5"), "quote"),  # written before validation existed
        (now - timedelta(hours=2), Decimal("12.0"), "quote"),
        (now - timedelta(hours=1), Decimal("NaN"), "quote"),
        (now - timedelta(minutes=30), Decimal(-5), "upstream_history"),
        (datetime(1970, 1, 1, tzinfo=UTC), Decimal("0.4"), "upstream_history"),
    ]
    get_database().run(lambda cur: cur.executemany(
        "INSERT INTO price_samples (token_id, ts, price, midpoint, source) VALUES (%s, %s, %s, %s, %s)",
        [(token, ts, p, p, source) for ts, p, source in rows]))
    app.hostile.on("json", host="clob", path="/book", value={"error": "Internal server error"}, status=500)
    app.hostile.on("json", host="clob", path="/prices-history", value={"history": []})
    body = app.ok(f"/api/price/{token}", interval="6h")
    assert body["freshness"]["source"] == "stale" and "database" in body["freshness"]["stale_reason"]
    assert body["quote"]["price"] == 0.31 and body["quote"]["as_of"] == rows[0][0].isoformat()
    assert [(p["t"], p["p"]) for p in body["history"]["points"]] == [(int(rows[0][0].timestamp()), 0.31)]
    handler("prune_price_history")(None)
    left = {row["ts"] for row in stored(token)}
    assert datetime(2076, 1, 1, tzinfo=UTC) not in left and datetime(1970, 1, 1, tzinfo=UTC) not in left
    assert rows[0][0] in left


def test_the_serialiser_refuses_nan_and_infinity_as_a_last_line_of_defence() -> None:
    from shared.api.responses import dumps

    for value in (float("inf"), float("-inf"), float("nan"), Decimal("Infinity")):
        with pytest.raises(ValueError):
            dumps({"price": value})
    assert dumps({"price": Decimal("0.5")}) == '{"price":0.5}'


def test_the_writer_never_queues_a_sample_it_could_not_serve_back() -> None:
    from shared.prices.store import Sample
    from shared.prices.writer import SampleWriter

    writer = SampleWriter(get_database)
    now = datetime.now(UTC)
    good = Sample("1", now - timedelta(minutes=1), 0.5, 0.5, 0.49, 0.51, 0.02, 0.5)
    bad = [Sample("2", datetime(2076, 1, 1, tzinfo=UTC), 0.5), Sample("3", datetime(2019, 1, 1, tzinfo=UTC), 0.5),
           Sample("4", now, 12.0), Sample("5", now, float("nan")), Sample("6", now, 0.5, best_bid=-0.1),
           Sample("7", now, 0.5, spread=float("inf")), Sample("8", now + timedelta(minutes=5), 0.5)]
    writer.add([good, *bad])
    assert writer.pending() == 1
    assert writer.rejections.stats()["samples"] == len(bad)
    assert Sample("9", now, 0.5, spread=-0.02).problem() is None  # a crossed book's spread is negative
    writer.stop(timeout_s=0.1)
