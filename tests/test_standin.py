"""The Polymarket stand-in (devtools.standin) over real loopback HTTP.

CLOB reads go through the real py-clob-client-v2 client, Gamma through httpx. Shapes and value
types are checked against the recorded samples in ``tests/contract/samples/`` (the contract,
``docs/polymarket-api.md``).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import BookParams, PricesHistoryParams
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.http_helpers import helpers as clob_http
from py_clob_client_v2.utilities import generate_orderbook_summary_hash, parse_raw_orderbook_summary

from devtools.standin import PolymarketStandIn, book_hash
from devtools.standin.catalogue import Catalogue
from tests.conftest import sample

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400


class FrozenClock:
    """A clock tests move by hand, so CLOB and Gamma reads see the same instant."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="module")
def pm(clock: FrozenClock) -> Iterator[PolymarketStandIn]:
    with PolymarketStandIn(markets=1500, closed_fraction=0.1, seed=7, clock=clock) as standin:
        yield standin


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "pm" in request.fixturenames:
        standin = request.getfixturevalue("pm")
        standin.clear_faults()
        standin.reset_counts()


@pytest.fixture
def client(pm: PolymarketStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClobClient]:
    # The client sends everything through one module-level httpx client that other tests may
    # replace or close; give each test its own.
    http = httpx.Client(timeout=5)
    monkeypatch.setattr(clob_http, "_http_client", http)
    yield ClobClient(host=pm.clob_url, chain_id=137)
    http.close()


@pytest.fixture
def gamma(pm: PolymarketStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pm.gamma_url, timeout=5) as http:
        yield http


@pytest.fixture
def clob(pm: PolymarketStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pm.clob_url, timeout=5) as http:
        yield http


def open_market(pm: PolymarketStandIn, n: int = 0, *, tick: float | None = None) -> Any:
    """The n-th open market old enough to have a full 31 days of history."""
    markets = [m for m in pm.catalogue if not m.closed and m.created_at < pm.now() - 40 * DAY
               and (tick is None or m.tick_size == tick)]
    return markets[n]


def old_closed_market(pm: PolymarketStandIn) -> Any:
    return next(m for m in pm.catalogue if m.closed and m.closed_at < pm.now() - 40 * DAY)


# --- shape helpers ---------------------------------------------------------------------------


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_types_match(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    """Every key both have carries the same JSON type (null matches anything)."""
    for key in ours.keys() & theirs.keys():
        a, b = ours[key], theirs[key]
        if a is None or b is None:
            continue
        assert kind(a) == kind(b), f"{where}.{key}: ours {kind(a)} {a!r}, sample {kind(b)} {b!r}"
        if isinstance(a, dict):
            assert_types_match(a, b, f"{where}.{key}")
        if isinstance(a, list) and a and b and isinstance(a[0], dict):
            assert_types_match(a[0], b[0], f"{where}.{key}[0]")


def gamma_sample_markets() -> list[dict[str, Any]]:
    rows = sample("gamma_markets.json") + [sample("gamma_market.json"), sample("gamma_market_resolved.json"),
                                           sample("gamma_market_include_tag.json")]
    rows += sample("gamma_markets_keyset.json")["markets"] + sample("gamma_events.json")[0]["markets"]
    return rows


# --- generation ------------------------------------------------------------------------------


def test_catalogue_is_deterministic_and_realistic() -> None:
    a, b = Catalogue(800, 0.1, seed=3, anchor=1_790_000_000), Catalogue(800, 0.1, seed=3, anchor=1_790_000_000)
    assert [m.condition_id for m in a] == [m.condition_id for m in b]
    assert [m.question for m in a] == [m.question for m in b]
    assert Catalogue(50, 0.1, seed=4)[0].condition_id != a[0].condition_id
    assert len(a.open_markets()) == 800 and 80 <= len(a.closed_markets()) <= 95
    assert len({m.slug for m in a}) == len(a) and len({m.condition_id for m in a}) == len(a)
    for m in a:
        assert m.condition_id.startswith("0x") and len(m.condition_id) == 66
        int(m.condition_id, 16)
        assert len(m.tokens) == 2
        for t in m.tokens:
            assert t.token_id.isdigit() and 77 <= len(t.token_id) <= 78
    assert {m.tick_size for m in a} == {0.01, 0.001}
    assert any(m.outcomes != ("Yes", "No") for m in a) and any(m.neg_risk for m in a)
    assert len({m.category for m in a}) >= 6 and len({m.question.split()[1] for m in a}) > 50
    volumes = sorted(m.volume for m in a)
    assert volumes[-1] / volumes[0] > 10_000
    assert [m.gamma_id for m in a] == sorted(m.gamma_id for m in a)


# --- CLOB through py-clob-client-v2 ----------------------------------------------------------


def test_book_hash_reproduces_the_captured_hash() -> None:
    captured = sample("clob_book.json")
    assert book_hash(captured) == captured["hash"]
    assert generate_orderbook_summary_hash(parse_raw_orderbook_summary(captured)) == captured["hash"]


def test_health_time_and_market(pm: PolymarketStandIn, client: ClobClient, clock: FrozenClock) -> None:
    assert client.get_ok() == "OK"
    assert client.get_server_time() == int(clock.now)
    m = open_market(pm)
    market = client.get_market(m.condition_id)
    ref = sample("clob_market.json")
    assert market.keys() == ref.keys()
    assert_types_match(market, ref, "market")
    assert [t["token_id"] for t in market["tokens"]] == list(m.token_ids)
    assert market["closed"] is False and market["active"] is True
    with pytest.raises(PolyApiException) as err:
        client.get_market("0x" + "ab" * 32)
    assert err.value.status_code == 404 and err.value.error_msg == sample("clob_error_404_market_not_found.json")


def test_order_book_is_worst_to_best_and_hash_reproducible(pm: PolymarketStandIn, client: ClobClient) -> None:
    ref = sample("clob_book.json")
    for m in (open_market(pm, 0, tick=0.01), open_market(pm, 0, tick=0.001)):
        for token in m.tokens:
            book = client.get_order_book(token.token_id)
            assert list(book) == list(ref)
            assert_types_match(book, ref, "book")
            bids = [Decimal(level["price"]) for level in book["bids"]]
            asks = [Decimal(level["price"]) for level in book["asks"]]
            assert bids == sorted(bids) and asks == sorted(asks, reverse=True)  # best is LAST
            assert bids[-1] < asks[-1]
            assert client.get_order_book_hash(dict(book)) == book["hash"]
            assert book["market"] == m.condition_id and book["asset_id"] == token.token_id
            assert book["tick_size"] == str(m.tick_size) and int(book["timestamp"]) <= pm.now() * 1000
            assert client.get_price(token.token_id, "BUY") == {"price": book["bids"][-1]["price"]}
            assert client.get_price(token.token_id, "SELL") == {"price": book["asks"][-1]["price"]}
            mid = Decimal(client.get_midpoint(token.token_id)["mid"])
            assert mid == (bids[-1] + asks[-1]) / 2
            assert Decimal(client.get_spread(token.token_id)["spread"]) == asks[-1] - bids[-1]
            assert client.get_tick_size(token.token_id) == str(m.tick_size)
            assert client.get_neg_risk(token.token_id) is m.neg_risk
            last = client.get_last_trade_price(token.token_id)
            assert last["side"] in ("BUY", "SELL") and Decimal(last["price"]) == Decimal(book["last_trade_price"])
        yes, no = (Decimal(client.get_midpoint(t.token_id)["mid"]) for t in m.tokens)
        assert yes + no == 1  # mirrored books


def test_batch_reads(pm: PolymarketStandIn, client: ClobClient) -> None:
    m1, m2 = open_market(pm, 1), open_market(pm, 2)
    ids = [m1.tokens[0].token_id, m2.tokens[1].token_id]
    unknown = "1" * 77
    books = client.get_order_books([BookParams(ids[0]), BookParams(ids[1]), BookParams(unknown)])
    assert {b["asset_id"] for b in books} == set(ids)  # unknown tokens are left out
    for book in books:
        assert client.get_order_book_hash(dict(book)) == book["hash"]
    mids = client.get_midpoints([BookParams(i) for i in ids])
    assert mids.keys() == set(ids) and all(isinstance(v, str) for v in mids.values())
    assert mids[ids[0]] == client.get_midpoint(ids[0])["mid"]
    prices = client.get_prices([BookParams(ids[0], "BUY"), BookParams(ids[0], "SELL"), BookParams(ids[1], "buy")])
    assert prices[ids[0]] == {"BUY": client.get_price(ids[0], "BUY")["price"],
                              "SELL": client.get_price(ids[0], "SELL")["price"]}
    assert list(prices[ids[1]]) == ["BUY"]
    spreads = client.get_spreads([BookParams(i) for i in ids])
    assert spreads[ids[1]] == client.get_spread(ids[1])["spread"]
    trades = client.get_last_trades_prices([BookParams(i) for i in ids])
    ref = sample("clob_last_trades_prices.json")
    assert {t["token_id"] for t in trades} == set(ids) and all(t.keys() == ref[0].keys() for t in trades)
    assert client.get_fee_rate_bps(ids[0]) == 0


def test_markets_cursor_paging(pm: PolymarketStandIn, client: ClobClient, clob: httpx.Client) -> None:
    seen, cursor, pages = [], "MA==", 0
    while cursor != "LTE=":
        page = client.get_markets(next_cursor=cursor)
        assert list(page) == list(sample("clob_markets_page.json")) and page["limit"] == 1000
        assert page["count"] == len(page["data"])
        seen += [row["condition_id"] for row in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor != "LTE=":
            assert page["count"] == 1000 and base64.b64decode(cursor).decode() == str(1000 * pages)
    assert seen == [m.condition_id for m in pm.catalogue]  # creation order, closed ones included
    assert client.get_markets(next_cursor="LTE=") == {"data": [], "next_cursor": "LTE=", "limit": 1000, "count": 0}
    simplified = client.get_simplified_markets()
    assert simplified["data"][0].keys() == sample("clob_simplified_markets_page.json")["data"][0].keys()
    sampling = client.get_sampling_markets()
    assert all(row["rewards"]["rates"] and not row["closed"] for row in sampling["data"])
    sampling_simple = client.get_sampling_simplified_markets()
    assert [r["condition_id"] for r in sampling_simple["data"]] == [r["condition_id"] for r in sampling["data"]]
    bad = clob.get("/markets", params={"next_cursor": "None"})
    assert bad.status_code == 400 and "error" in bad.json()


def test_clob_errors(pm: PolymarketStandIn, client: ClobClient, clob: httpx.Client) -> None:
    m = open_market(pm)
    token = m.tokens[0].token_id
    assert clob.get("/book").status_code == 400
    assert clob.get("/book").json() == sample("clob_error_400.json")
    for bad in ("not-a-real-token", "0", "9" * 77):
        with pytest.raises(PolyApiException) as err:
            client.get_order_book(bad)
        assert err.value.status_code == 404 and err.value.error_msg == sample("clob_error_404_no_orderbook.json")
    response = clob.get("/tick-size", params={"token_id": "12345"})
    assert response.status_code == 404 and response.json() == sample("clob_error_404_market_not_found.json")
    assert clob.get("/tick-size", params={"token_id": token}).json() == {"minimum_tick_size": m.tick_size}
    response = clob.get("/price", params={"token_id": token, "side": "HOLD"})
    assert response.status_code == 400 and response.json() == sample("clob_error_400_invalid_side.json")
    assert clob.get("/price", params={"token_id": token, "side": "sell"}).status_code == 200
    for body in (b"{not json", b'{"token_id": "1"}', b'[{"side": "BUY"}]'):
        response = clob.post("/books", content=body)
        assert response.status_code == 400 and response.json() == sample("clob_error_400_invalid_payload.json")
    assert clob.get("/fee-rate", params={"token_id": "42"}).json() == {"error": "fee rate not found for market"}
    assert clob.get("/no-such-route").status_code == 404


def test_closed_market_has_no_book(pm: PolymarketStandIn, client: ClobClient) -> None:
    m = old_closed_market(pm)
    token = m.tokens[0].token_id
    with pytest.raises(PolyApiException) as err:
        client.get_order_book(token)
    assert err.value.status_code == 404 and err.value.error_msg == sample("clob_error_404_no_orderbook.json")
    market = client.get_market(m.condition_id)
    assert market["closed"] is True and market["active"] is True and market["accepting_orders"] is False
    assert sorted(t["price"] for t in market["tokens"]) == [0, 1]
    assert [t["winner"] for t in market["tokens"]].count(True) == 1
    assert_types_match(market, sample("clob_market_resolved.json"), "resolved")
    assert client.get_order_books([BookParams(token)]) == []
    assert client.get_prices_history(PricesHistoryParams(market=token, interval="max")) == {"history": []}


def test_prices_history(pm: PolymarketStandIn, client: ClobClient, clob: httpx.Client, clock: FrozenClock) -> None:
    m = open_market(pm, 3)
    token = m.tokens[0].token_id
    day = client.get_prices_history(PricesHistoryParams(market=token, interval="1d", fidelity=60))
    points = day["history"]
    assert 23 <= len(points) <= 24 and [p["t"] for p in points] == sorted(p["t"] for p in points)
    assert all(isinstance(p["t"], int) and isinstance(p["p"], float) for p in points)
    assert_types_match(points[0], sample("clob_prices_history.json")["history"][0], "history")
    # Each point is the CLOB midpoint at its time: replay one through the live endpoint.
    saved = clock.now
    try:
        clock.now = points[5]["t"]
        assert float(client.get_midpoint(token)["mid"]) == points[5]["p"]
    finally:
        clock.now = saved
    window = {"market": token, "startTs": int(clock.now) - 16 * DAY, "endTs": int(clock.now)}
    too_long = clob.get("/prices-history", params=window)
    assert too_long.status_code == 400 and too_long.json() == sample("clob_error_400_prices_history.json")
    assert clob.get("/prices-history", params={**window, "interval": "1h"}).status_code == 200  # interval wins
    week = clob.get("/prices-history", params={"market": token, "interval": "1w", "fidelity": 1})
    assert week.status_code == 400 and "minimum 'fidelity' for '1w' range is 5" in week.json()["error"]
    assert clob.get("/prices-history", params={"market": token, "interval": "1m", "fidelity": 9}).status_code == 400
    full = client.get_prices_history(PricesHistoryParams(market=token, interval="max", fidelity=720))["history"]
    assert clock.now - 31 * DAY <= full[0]["t"] <= clock.now - 30 * DAY and full[-1]["t"] <= clock.now
    ranged = client.get_prices_history(PricesHistoryParams(market=token, start_ts=int(clock.now) - 3 * DAY,
                                                           end_ts=int(clock.now) - DAY, fidelity=60))["history"]
    assert 47 <= len(ranged) <= 48 and ranged[0]["t"] >= clock.now - 3 * DAY
    assert clob.get("/prices-history", params={"market": "7" * 77, "interval": "1d"}).json() == {"history": []}
    batch = clob.post("/batch-prices-history", json={"markets": [token, m.tokens[1].token_id, "7" * 77],
                                                     "interval": "1d", "fidelity": 60}).json()["history"]
    assert batch.keys() == {token, m.tokens[1].token_id} and batch[token] == points
    assert all(abs(a["p"] + b["p"] - 1) < 1e-9 for a, b in zip(batch[token], batch[m.tokens[1].token_id], strict=True))
    assert clob.post("/batch-prices-history", json={"markets": ["1"] * 21, "interval": "1d"}).status_code == 400


def test_history_forgets_points(pm: PolymarketStandIn, clob: httpx.Client, clock: FrozenClock) -> None:
    m = open_market(pm, 4)
    token, other = m.tokens[0].token_id, open_market(pm, 5).tokens[0].token_id
    cutoff = clock.now - 6 * 3600
    pm.forget_history(cutoff, token)
    points = clob.get("/prices-history", params={"market": token, "interval": "1d", "fidelity": 30}).json()["history"]
    assert points and points[0]["t"] >= cutoff and len(points) <= 12
    untouched = clob.get("/prices-history", params={"market": other, "interval": "1d", "fidelity": 30}).json()
    assert untouched["history"][0]["t"] < cutoff
    pm.forget_history(clock.now + 1, token)
    assert clob.get("/prices-history", params={"market": token, "interval": "1d"}).json() == {"history": []}


# --- Gamma -----------------------------------------------------------------------------------


def test_gamma_market_rows_match_samples(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    response = gamma.get("/markets", params={"limit": 50, "order": "volumeNum", "ascending": "false"})
    assert response.status_code == 200 and response.headers["cache-control"] == "public, max-age=300"
    rows = response.json()
    known_keys = set().union(*(row.keys() for row in gamma_sample_markets()))
    known_event_keys = set().union(*(e.keys() for e in [sample("gamma_events.json")[0]]
                                     + [r["events"][0] for r in sample("gamma_markets.json")]))
    ref, ref_event = sample("gamma_markets.json")[0], sample("gamma_markets.json")[0]["events"][0]
    for row in rows:
        assert set(row) <= known_keys, set(row) - known_keys  # nothing invented
        assert_types_match(row, ref, "gamma")
        event = row["events"][0]
        assert set(event) <= known_event_keys and {"id", "ticker", "slug", "title", "tags"} <= set(event)
        assert_types_match(event, ref_event, "event")
        assert isinstance(row["volume"], str) and isinstance(row["volumeNum"], float)
        assert float(row["volume"]) == row["volumeNum"]
        assert isinstance(json.loads(row["outcomes"]), list)
        assert all(isinstance(p, str) for p in json.loads(row["outcomePrices"]))
        assert row["outcomePrices"].startswith('["') and '", "' in row["outcomePrices"]  # upstream spacing
    assert [r["volumeNum"] for r in rows] == sorted((r["volumeNum"] for r in rows), reverse=True)
    for name in ("gamma_market.json",):
        single = gamma.get(f"/markets/{rows[0]['id']}").json()
        assert next(iter(single)) == "$schema" and single["$schema"] == sample(name)["$schema"]
        assert "events" not in single
        assert_types_match(single, sample(name), "single")


def test_gamma_and_clob_agree(pm: PolymarketStandIn, gamma: httpx.Client, client: ClobClient) -> None:
    for m in (open_market(pm, 6), open_market(pm, 7, tick=0.001), next(x for x in pm.catalogue
                                                                    if x.neg_risk and not x.closed)):
        row = gamma.get(f"/markets/{m.gamma_id}").json()
        market = client.get_market(row["conditionId"])
        assert json.loads(row["clobTokenIds"]) == [t["token_id"] for t in market["tokens"]]
        assert json.loads(row["outcomes"]) == [t["outcome"] for t in market["tokens"]]
        assert row["slug"] == market["market_slug"] and row["question"] == market["question"]
        assert row["orderPriceMinTickSize"] == market["minimum_tick_size"] and row["negRisk"] == market["neg_risk"]
        first, second = (Decimal(p) for p in json.loads(row["outcomePrices"]))
        best_bid, best_ask = Decimal(str(row["bestBid"])), Decimal(str(row["bestAsk"]))
        assert first == (best_bid + best_ask) / 2 and first + second == 1
        token = market["tokens"][0]["token_id"]
        assert Decimal(client.get_midpoint(token)["mid"]) == first
        assert Decimal(client.get_price(token, "BUY")["price"]) == best_bid
        assert Decimal(str(row["spread"])) == best_ask - best_bid


def test_gamma_keyset_covers_every_open_market_once(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    expected = {str(m.gamma_id) for m in pm.catalogue if not m.closed}
    for params in ({}, {"order": "volume24hr", "ascending": "false"}):
        seen: list[str] = []
        cursor, pages = None, 0
        while True:
            query = {"limit": 100, **params, **({"after_cursor": cursor} if cursor else {})}
            body = gamma.get("/markets/keyset", params=query).json()
            seen += [row["id"] for row in body["markets"]]
            pages += 1
            if "next_cursor" not in body:
                break
            cursor = body["next_cursor"]
        assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected
        assert pages == -(-len(expected) // 100)
    first_page = gamma.get("/markets/keyset", params={"limit": 5}).json()
    assert list(first_page) == list(sample("gamma_markets_keyset.json"))
    ignored = gamma.get("/markets/keyset", params={"limit": 5, "next_cursor": first_page["next_cursor"]}).json()
    assert ignored["markets"] == first_page["markets"]  # only after_cursor pages
    assert len(gamma.get("/markets/keyset", params={"limit": 500}).json()["markets"]) == 100
    offset = gamma.get("/markets/keyset", params={"offset": 0})
    assert offset.status_code == 422 and offset.json() == sample("gamma_error_422_keyset_offset.json")
    assert gamma.get("/markets/keyset", params={"after_cursor": "%%%"}).status_code == 422


def test_gamma_list_filters_and_errors(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    deep = gamma.get("/markets", params={"offset": 2250})
    assert deep.status_code == 422 and deep.json() == sample("gamma_error_422_offset.json")
    assert gamma.get("/markets", params={"offset": 1300, "limit": 10}).status_code == 200
    assert len(gamma.get("/markets", params={"limit": 1000}).json()) == 100
    default = gamma.get("/markets", params={"limit": 20}).json()
    assert all(row["closed"] is False for row in default)  # closed defaults to false
    assert [int(r["id"]) for r in default] == sorted(int(r["id"]) for r in default)
    snake = gamma.get("/markets", params={"limit": 20, "order": "volume_num", "ascending": "false"}).json()
    assert [r["id"] for r in snake] == [r["id"] for r in default]  # snake_case order is ignored
    closed = gamma.get("/markets", params={"limit": 20, "closed": "true"}).json()
    assert closed and all(row["closed"] is True for row in closed)
    a, b = open_market(pm, 10), open_market(pm, 11)
    both = gamma.get("/markets", params=[("id", a.gamma_id), ("id", b.gamma_id)]).json()
    assert sorted(r["id"] for r in both) == sorted([str(a.gamma_id), str(b.gamma_id)])
    joined = gamma.get("/markets", params={"id": f"{a.gamma_id},{b.gamma_id}", "limit": 20}).json()
    assert len(joined) == 20  # a comma-joined value does not filter
    assert [r["id"] for r in gamma.get("/markets", params={"slug": a.slug}).json()] == [str(a.gamma_id)]
    by_cid = gamma.get("/markets", params=[("condition_ids", a.condition_id), ("condition_ids", b.condition_id)])
    assert len(by_cid.json()) == 2
    by_token = gamma.get("/markets", params={"clob_token_ids": b.tokens[1].token_id}).json()
    assert [r["id"] for r in by_token] == [str(b.gamma_id)]
    gone = old_closed_market(pm)
    assert gamma.get("/markets", params={"slug": gone.slug}).json() == []  # closed hidden without closed=true
    assert len(gamma.get("/markets", params={"slug": gone.slug, "closed": "true"}).json()) == 1
    rich = gamma.get("/markets", params={"volume_num_min": 1e6, "limit": 100}).json()
    assert all(r["volumeNum"] >= 1e6 for r in rich)


def test_gamma_single_market_routes(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    missing = gamma.get("/markets/999999999")
    assert missing.status_code == 404 and missing.json() == sample("gamma_error_404.json")
    invalid = gamma.get("/markets/abc")
    assert invalid.status_code == 422 and invalid.json()["type"] == "validation error"
    gone = old_closed_market(pm)
    row = gamma.get(f"/markets/slug/{gone.slug}").json()  # slug route finds closed markets
    assert row["closed"] is True and json.loads(row["outcomePrices"]) in (["1", "0"], ["0", "1"])
    assert "bestBid" not in row and "liquidity" not in row  # null fields are omitted
    assert_types_match(row, sample("gamma_market_resolved.json"), "resolved")
    assert len(row["closedTime"]) == len("2026-06-12 20:41:49+00") and row["closedTime"].endswith("+00")
    tagged = gamma.get(f"/markets/{open_market(pm).gamma_id}", params={"include_tag": "true"}).json()
    assert tagged["tags"] and tagged["tags"][0].keys() >= {"id", "label", "slug"}
    assert gamma.get("/markets/slug/no-such-market").status_code == 404
    events = gamma.get("/events", params={"limit": 3}).json()
    assert len(events) == 3 and all("events" not in m for e in events for m in e["markets"])
    assert isinstance(events[0]["volume"], float | int) and isinstance(events[0]["id"], str)
    assert gamma.get(f"/events/{events[0]['id']}").json()["slug"] == events[0]["slug"]


# --- events, neg-risk "Other", lookups by id -------------------------------------------------


def crawl_events(gamma: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every event /events/keyset pages through with these params, and the page count."""
    rows: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        body = gamma.get("/events/keyset", params={**params, **({"after_cursor": cursor} if cursor else {})}).json()
        assert set(body) <= {"events", "next_cursor"}
        rows += body["events"]
        pages += 1
        if "next_cursor" not in body:
            return rows, pages
        cursor = body["next_cursor"]


def test_events_keyset_pages_every_event_once(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    open_events = {str(e.id) for e in pm.catalogue.events if not e.closed}
    closed_events = {str(e.id) for e in pm.catalogue.events if e.closed}
    assert len(open_events) > 500 and closed_events  # more than one page of 500
    for params in ({"limit": 500}, {"limit": 100, "order": "volume", "ascending": "false"}):
        rows, pages = crawl_events(gamma, **params)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) and set(ids) == open_events
        assert pages == -(-len(open_events) // params["limit"])
        assert all(r["closed"] is False for r in rows)
    by_volume, _ = crawl_events(gamma, limit=100, order="volume", ascending="false")
    assert [r["volume"] for r in by_volume] == sorted((r["volume"] for r in by_volume), reverse=True)
    competitive = gamma.get("/events/keyset", params={"limit": 50, "order": "competitive"}).json()["events"]
    assert [r["competitive"] for r in competitive] == sorted(r["competitive"] for r in competitive)
    by_id, _ = crawl_events(gamma, limit=500)
    assert [int(r["id"]) for r in by_id] == sorted(int(i) for i in open_events)
    # The keyset rows are /events rows: markets in full, without their own events array.
    listed = gamma.get("/events", params={"limit": 5}).json()
    assert by_id[:5] == listed
    sample_event = sample("gamma_events.json")[0]
    for event in by_id[:50]:
        assert_types_match(event, sample_event, "event")
        assert event["markets"] and all("events" not in m and m["conditionId"] for m in event["markets"])
    assert len(gamma.get("/events/keyset", params={"limit": 1000}).json()["events"]) == 500
    assert len(gamma.get("/events/keyset").json()["events"]) == 500
    closed_rows, _ = crawl_events(gamma, closed="true", limit=50)
    assert {r["id"] for r in closed_rows} == closed_events and all(r["closed"] is True for r in closed_rows)
    offset = gamma.get("/events/keyset", params={"offset": 0})
    assert offset.status_code == 422 and offset.json() == sample("gamma_error_422_keyset_offset.json")
    assert gamma.get("/events/keyset", params={"after_cursor": "%%%"}).status_code == 422
    event = pm.catalogue.events_by_id[int(by_id[7]["id"])]
    tag = event.tags[0]
    tagged, _ = crawl_events(gamma, tag_slug=tag.slug, limit=100)
    assert str(event.id) in {r["id"] for r in tagged}
    assert all(any(t["slug"] == tag.slug for t in r["tags"]) for r in tagged)
    assert {r["id"] for r in crawl_events(gamma, tag_id=tag.id, limit=100)[0]} == {r["id"] for r in tagged}
    one = gamma.get("/events/keyset", params=[("id", event.id), ("slug", event.slug)]).json()
    assert [r["id"] for r in one["events"]] == [str(event.id)] and "next_cursor" not in one


def test_neg_risk_groups_have_an_other_placeholder(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    catalogue = Catalogue(1500, 0.1, seed=7, anchor=pm.catalogue.anchor)
    assert [m.neg_risk_other for m in catalogue] == [m.neg_risk_other for m in pm.catalogue]  # from the seed
    groups = [e for e in pm.catalogue.events if e.neg_risk]
    with_other = [e for e in groups if any(m.neg_risk_other for m in e.markets)]
    assert 0.2 <= len(with_other) / len(groups) <= 0.45
    assert all(not m.neg_risk_other for m in pm.catalogue if not m.neg_risk)
    event = next(e for e in with_other if not e.closed)
    rows = gamma.get("/events", params={"id": event.id}).json()[0]["markets"]
    others = [r for r in rows if r["negRiskOther"]]
    assert len(others) == 1 and others[0]["groupItemTitle"] == "Other"
    assert all(r["negRiskOther"] is False and r["groupItemTitle"] not in ("", "Other") for r in rows
               if r is not others[0])
    first_prices = [Decimal(json.loads(r["outcomePrices"])[0]) for r in rows]
    assert Decimal("0.005") <= Decimal(json.loads(others[0]["outcomePrices"])[0]) <= Decimal("0.08")
    assert Decimal("0.7") <= sum(first_prices) <= Decimal("1.35")
    # Over time the Other candidate stays low and the group keeps summing near 1.
    for e in with_other:
        for t in range(0, 30 * DAY, 5 * DAY):
            other = next(m for m in e.markets if m.neg_risk_other)
            assert 0.003 <= pm.market_data.midpoint(other, 0, pm.now() - t) <= 0.1
    row = gamma.get(f"/markets/{others[0]['id']}").json()
    assert row["negRiskOther"] is True and row["negRisk"] is True
    # A settled group has exactly one winner among its candidates.
    for e in (e for e in groups if e.closed):
        assert sum(m.winner == 0 for m in e.markets) == 1


def test_lookups_by_condition_id_token_slug_and_id(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    closed = [m for m in pm.catalogue if m.closed][:3]
    live = open_market(pm, 30)
    ids = [("condition_ids", m.condition_id) for m in [*closed, live]]
    found = gamma.get("/markets", params=[*ids, ("closed", "true")]).json()
    assert sorted(r["conditionId"] for r in found) == sorted(m.condition_id for m in closed)
    assert all(r["closed"] is True and r["events"][0]["id"] == str(pm.catalogue.by_condition_id[
        r["conditionId"]].event.id) for r in found)
    keyset = gamma.get("/markets/keyset", params=[*ids, ("closed", "true")]).json()
    assert sorted(r["conditionId"] for r in keyset["markets"]) == sorted(r["conditionId"] for r in found)
    hidden = gamma.get("/markets", params=ids).json()
    assert [r["conditionId"] for r in hidden] == [live.condition_id]  # closed ones need closed=true
    many = [("condition_ids", f"0x{i:064x}") for i in range(101)]
    too_many = gamma.get("/markets", params=many)
    assert too_many.status_code == 422 and too_many.json()["type"] == "validation error"
    assert gamma.get("/markets", params=many[:100]).status_code == 200
    assert gamma.get("/markets", params=[many[0]] * 101).status_code == 422  # repeats count too
    token = closed[0].tokens[1].token_id
    assert gamma.get("/markets", params={"clob_token_ids": token}).json() == []
    by_token = gamma.get("/markets", params={"clob_token_ids": token, "closed": "true"}).json()
    assert [r["id"] for r in by_token] == [str(closed[0].gamma_id)]
    by_slug = gamma.get(f"/markets/slug/{closed[1].slug}").json()  # no closed=true needed
    by_id = gamma.get(f"/markets/{closed[1].gamma_id}").json()
    assert by_slug == by_id and by_id["closed"] is True and by_id["conditionId"] == closed[1].condition_id
    assert next(iter(by_id)) == "$schema" and "events" not in by_id  # the by-id form names no event
    assert json.loads(by_id["umaResolutionStatuses"]) == ["proposed", "resolved"]

    event = closed[2].event
    assert event.closed
    by_event_slug = gamma.get(f"/events/slug/{event.slug}").json()
    assert by_event_slug == gamma.get(f"/events/{event.id}").json()
    assert by_event_slug["closed"] is True and {m["id"] for m in by_event_slug["markets"]} == \
        {str(m.gamma_id) for m in event.markets}
    assert gamma.get("/events", params={"id": event.id}).json() == []  # closed events need closed=true
    assert gamma.get("/events", params={"id": event.id, "closed": "true"}).json() == [by_event_slug]
    for path in ("/events/999999999", "/events/slug/no-such-event", "/markets/999999999",
                 "/markets/slug/no-such-market"):
        missing = gamma.get(path)
        assert missing.status_code == 404 and missing.json() == sample("gamma_error_404.json"), path
    assert gamma.get("/events/abc").status_code == 422


def test_closing_unsettled_then_settling_shows_on_both_hosts() -> None:
    clock = FrozenClock()
    with PolymarketStandIn(markets=200, seed=5, clock=clock) as pm, \
            httpx.Client(base_url=pm.clob_url) as clob, httpx.Client(base_url=pm.gamma_url) as gamma:
        event = next(e for e in pm.catalogue.events if e.neg_risk and not e.closed
                     and all(not m.closed for m in e.markets))
        m, *rest = event.markets
        before = gamma.get(f"/markets/{m.gamma_id}").json()  # the prices at the instant it closes
        closed = clob.post(f"/_standin/markets/{m.condition_id}/close", json={"winner": None}).json()
        assert closed["closed"] is True and closed["settled"] is False and closed["winner"] is None
        assert closed["closed_at"] == pm.now()
        clock.now += 6 * 3600  # prices no longer move once closed
        row = gamma.get(f"/markets/{m.gamma_id}").json()
        assert row["closed"] is True and row["acceptingOrders"] is False
        prices = json.loads(row["outcomePrices"])
        assert prices == json.loads(before["outcomePrices"]) and prices not in (["1", "0"], ["0", "1"])
        assert json.loads(row["umaResolutionStatuses"]) == ["proposed"] and "umaEndDate" not in row
        assert row["closedTime"] == time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(closed["closed_at"]))
        assert "bestBid" not in row and "bestAsk" not in row and "liquidity" not in row
        market = clob.get(f"/markets/{m.condition_id}").json()
        assert market["closed"] is True and market["accepting_orders"] is False
        assert [t["winner"] for t in market["tokens"]] == [False, False]
        assert market["tokens"][0]["price"] == float(prices[0])
        assert clob.get("/book", params={"token_id": m.token_ids[0]}).status_code == 404
        assert clob.get("/book", params={"token_id": m.token_ids[0]}).json()["error"].startswith("No orderbook")
        assert gamma.get("/markets", params={"id": m.gamma_id}).json() == []
        assert gamma.get("/events", params={"id": event.id}).json()[0]["closed"] is False  # others still open

        settled = clob.post(f"/_standin/markets/{m.condition_id}/close", json={"winner": 1}).json()
        assert settled["settled"] is True and settled["closed_at"] == closed["closed_at"]
        row = gamma.get(f"/markets/slug/{m.slug}").json()
        assert json.loads(row["outcomePrices"]) == ["0", "1"] and row["closedTime"] == \
            time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(closed["closed_at"]))
        assert json.loads(row["umaResolutionStatuses"]) == ["proposed", "resolved"]
        assert_types_match(row, sample("gamma_market_resolved.json"), "resolved")
        market = clob.get(f"/markets/{m.condition_id}").json()
        assert [(t["price"], t["winner"]) for t in market["tokens"]] == [(0, False), (1, True)]
        tick = Decimal(str(m.tick_size))
        assert Decimal(clob.get("/last-trade-price", params={"token_id": m.token_ids[1]}).json()["price"]) == \
            1 - tick

        # settled: false is the same unsettled close; a winner with it, or a bad winner, is refused.
        second = rest[0]
        assert clob.post(f"/_standin/markets/{second.condition_id}/close",
                         json={"settled": False, "winner": 0}).status_code == 400
        assert clob.post(f"/_standin/markets/{second.condition_id}/close", json={"winner": 2}).status_code == 400
        assert clob.post(f"/_standin/markets/{second.condition_id}/close", json={"winner": True}).status_code == 400
        assert second.closed is False
        assert clob.post(f"/_standin/markets/{second.condition_id}/close",
                         json={"settled": False}).json()["settled"] is False
        assert json.loads(gamma.get(f"/markets/{second.gamma_id}").json()["umaResolutionStatuses"]) == ["proposed"]

        # The event closes when its last market does, and then needs closed=true.
        for other in rest[1:-1]:
            clob.post(f"/_standin/markets/{other.condition_id}/close", json={"winner": 1})
        assert gamma.get("/events", params={"id": event.id}).json()[0]["closed"] is False
        clob.post(f"/_standin/markets/{rest[-1].condition_id}/close", json={"winner": 0})
        assert gamma.get("/events", params={"id": event.id}).json() == []
        closed_event = gamma.get("/events", params={"id": event.id, "closed": "true"}).json()[0]
        assert closed_event["closed"] is True and all(r["closed"] for r in closed_event["markets"])
        assert gamma.get(f"/events/slug/{event.slug}").json()["closed"] is True
        assert str(event.id) in {r["id"] for r in crawl_events(gamma, closed="true", limit=500)[0]}


def test_markets_closed_long_ago_can_be_found_or_added() -> None:
    clock = FrozenClock()
    with PolymarketStandIn(markets=200, seed=5, clock=clock) as pm, \
            httpx.Client(base_url=pm.clob_url) as clob, httpx.Client(base_url=pm.gamma_url) as gamma:
        rows = clob.get("/_standin/catalogue", params={"closed": "true"}).json()["markets"]
        assert rows and all(r["closed"] and r["settled"] and r["closed_at"] < pm.now() for r in rows)
        assert any(r["closed_at"] < pm.now() - 30 * DAY for r in rows)
        assert {"event_slug", "group_item_title", "neg_risk_other", "winner"} <= rows[0].keys()
        open_ids = {r["id"] for r in gamma.get("/markets/keyset", params={"limit": 100}).json()["markets"]}
        before = len(pm.catalogue)
        added = clob.post("/_standin/markets", json={"count": 3, "closed": True}).json()["markets"]
        assert len(pm.catalogue) - before == len(added) >= 3  # a group event may bring more
        for r in added:
            assert r["closed"] is True and r["settled"] is True and r["closed_at"] < pm.now() - 3600
            assert r["gamma_id"] not in open_ids
            row = gamma.get(f"/markets/slug/{r['slug']}").json()
            assert row["closed"] is True and json.loads(row["outcomePrices"]) in (["1", "0"], ["0", "1"])
            assert gamma.get(f"/events/{r['event_id']}").json()["closed"] is True
            tokens = clob.get(f"/markets/{r['condition_id']}").json()["tokens"]
            assert sorted(t["price"] for t in tokens) == [0, 1]
        assert clob.post("/_standin/markets", json={"count": 1, "closed": "yes"}).status_code == 400


# --- prices over time and mutations ----------------------------------------------------------


def test_prices_move_with_time(pm: PolymarketStandIn, clob: httpx.Client, clock: FrozenClock) -> None:
    tokens = [open_market(pm, i).tokens[0].token_id for i in range(20, 40)]

    def snapshot() -> dict[str, tuple[str, str, str]]:
        books = clob.post("/books", json=[{"token_id": t} for t in tokens]).json()
        mids = clob.post("/midpoints", json=[{"token_id": t} for t in tokens]).json()
        return {b["asset_id"]: (b["hash"], b["timestamp"], mids[b["asset_id"]]) for b in books}

    saved = clock.now
    try:
        before = snapshot()
        assert snapshot() == before  # nothing changes while time stands still
        clock.now += 6 * 3600
        after = snapshot()
    finally:
        clock.now = saved
    changed_books = sum(before[t][:2] != after[t][:2] for t in tokens)
    changed_mids = sum(before[t][2] != after[t][2] for t in tokens)
    assert changed_books == len(tokens) and changed_mids >= len(tokens) // 2
    assert all(int(after[t][1]) > int(before[t][1]) for t in tokens)


def test_books_change_in_real_time() -> None:
    with PolymarketStandIn(markets=30, seed=11, step=0.02) as live, httpx.Client(base_url=live.clob_url) as http:
        token = next(m for m in live.catalogue if not m.closed).tokens[0].token_id
        first = http.get("/book", params={"token_id": token}).json()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            book = http.get("/book", params={"token_id": token}).json()
            if book["hash"] != first["hash"]:
                break
            time.sleep(0.01)
        assert book["hash"] != first["hash"] and int(book["timestamp"]) > int(first["timestamp"])
        assert int(book["timestamp"]) <= time.time() * 1000


def test_set_price_close_reopen_and_add() -> None:
    clock = FrozenClock()
    with PolymarketStandIn(markets=200, seed=5, clock=clock) as pm, \
            httpx.Client(base_url=pm.clob_url) as clob, httpx.Client(base_url=pm.gamma_url) as gamma:
        m = next(x for x in pm.catalogue if not x.closed and x.tick_size == 0.01)
        yes, no = m.token_ids
        pm.set_price(no, 0.42)
        assert clob.get("/midpoint", params={"token_id": no}).json() == {"mid": "0.42"}
        assert clob.get("/price", params={"token_id": no, "side": "BUY"}).json() == {"price": "0.41"}
        assert clob.get("/price", params={"token_id": no, "side": "SELL"}).json() == {"price": "0.43"}
        assert clob.get("/midpoint", params={"token_id": yes}).json() == {"mid": "0.58"}
        assert json.loads(gamma.get(f"/markets/{m.gamma_id}").json()["outcomePrices"]) == ["0.58", "0.42"]
        held = clob.get("/book", params={"token_id": yes}).json()
        clock.now += 3600
        assert clob.get("/book", params={"token_id": yes}).json() == held  # a held price keeps the book still
        pm.release_price(no)
        clock.now += 3600
        assert clob.get("/book", params={"token_id": yes}).json()["hash"] != held["hash"]

        pm.close_market(m.condition_id, winner=1)
        assert clob.get("/book", params={"token_id": yes}).status_code == 404
        ids = {r["id"] for r in gamma.get("/markets/keyset", params={"limit": 100, "id": m.gamma_id}).json()["markets"]}
        assert str(m.gamma_id) not in ids
        row = gamma.get("/markets", params={"id": m.gamma_id, "closed": "true"}).json()[0]
        assert row["closed"] is True and json.loads(row["outcomePrices"]) == ["0", "1"]
        pm.reopen_market(m.condition_id)
        assert clob.get("/book", params={"token_id": yes}).status_code == 200

        (new,) = pm.add_markets(1)
        assert gamma.get(f"/markets/{new.gamma_id}").json()["conditionId"] == new.condition_id
        assert clob.get(f"/markets/{new.condition_id}").json()["tokens"][0]["token_id"] == new.token_ids[0]
        assert clob.get("/book", params={"token_id": new.token_ids[0]}).status_code == 200
        assert clob.get("/prices-history", params={"market": new.token_ids[0], "interval": "1d"}).json() == \
            {"history": []}


def test_books_can_404_the_whole_batch_for_one_token_without_a_book() -> None:
    # The contract leaves open whether /books drops a token without a book or 404s the batch
    # (§3.8): the stand-in does either.
    with PolymarketStandIn(markets=200, seed=5) as pm, httpx.Client(base_url=pm.clob_url) as clob:
        m = next(x for x in pm.catalogue if not x.closed)
        closed = next(x for x in pm.catalogue if x.closed)
        good = [{"token_id": t} for t in m.token_ids]
        unknown = [{"token_id": "1" * 77}]
        dropped = clob.post("/books", json=good + unknown)
        assert dropped.status_code == 200 and {b["asset_id"] for b in dropped.json()} == set(m.token_ids)
        pm.set_books_unknown("404")
        for batch in (good + unknown, [*good, {"token_id": closed.token_ids[0]}]):
            refused = clob.post("/books", json=batch)
            assert refused.status_code == 404
            assert refused.json() == clob.get("/book", params={"token_id": batch[-1]["token_id"]}).json()
        assert {b["asset_id"] for b in clob.post("/books", json=good).json()} == set(m.token_ids)
        assert clob.post("/_standin/books-unknown", json={"mode": "omit"}).json() == {"ok": True}
        assert len(clob.post("/books", json=good + unknown).json()) == 2
        assert clob.post("/_standin/books-unknown", json={"mode": "sometimes"}).status_code == 400
        with pytest.raises(ValueError):
            PolymarketStandIn(markets=10, books_unknown="drop")


def test_a_one_sided_book_that_never_traded() -> None:
    clock = FrozenClock()
    with PolymarketStandIn(markets=200, seed=5, clock=clock) as pm, httpx.Client(base_url=pm.clob_url) as clob:
        m = next(x for x in pm.catalogue if not x.closed)
        yes, no = m.token_ids
        assert clob.post(f"/_standin/tokens/{yes}/one-sided").json() == {"ok": True}
        books = {b["asset_id"]: b for b in clob.post("/books", json=[{"token_id": yes}, {"token_id": no}]).json()}
        assert books[yes]["bids"] and books[yes]["asks"] == []
        assert books[no]["bids"] == [] and books[no]["asks"]  # the mirror
        assert books[yes]["last_trade_price"] == books[no]["last_trade_price"] == ""
        assert book_hash(books[yes]) == books[yes]["hash"]
        clock.now += 3600
        assert clob.get("/book", params={"token_id": yes}).json()["asks"] == []  # stays so


# --- faults, counts, control API -------------------------------------------------------------


def test_fault_status_with_times(pm: PolymarketStandIn, client: ClobClient, gamma: httpx.Client) -> None:
    token = open_market(pm).tokens[0].token_id
    pm.inject("status", host="clob", path="/book", times=2, status=503)
    for _ in range(2):
        with pytest.raises(PolyApiException) as err:
            client.get_order_book(token)
        assert err.value.status_code == 503 and "error" in err.value.error_msg
    assert client.get_order_book(token)["asset_id"] == token
    assert pm.faults() == []  # spent faults disappear
    pm.inject("status", host="gamma")
    response = gamma.get("/markets")
    assert response.status_code == 500 and response.json() == sample("gamma_error_500.json")
    pm.clear_faults()
    pm.inject("status", host="clob", path="/midpoint")
    with pytest.raises(PolyApiException) as err:
        client.get_midpoint(token)
    assert err.value.error_msg == sample("clob_error_500.json")
    assert client.get_price(token, "BUY")  # other paths unaffected


def test_fault_after_lets_requests_through_first(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    pm.inject("status", host="gamma", path="/markets/keyset", after=2, times=1, status=502)
    statuses = [gamma.get("/markets/keyset", params={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [200, 200, 502, 200]
    assert gamma.get("/markets", params={"limit": 1}).status_code == 200


def test_fault_rate_limit(pm: PolymarketStandIn, client: ClobClient, gamma: httpx.Client) -> None:
    pm.inject("rate_limit", retry_after=7)
    response = gamma.get("/markets")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert response.json() == {"error": "Too Many Requests"}
    with pytest.raises(PolyApiException) as err:
        client.get_ok()
    assert err.value.status_code == 429


def test_fault_reset_and_garbage(pm: PolymarketStandIn, client: ClobClient, gamma: httpx.Client) -> None:
    pm.inject("reset", host="clob", times=1)
    with pytest.raises(PolyApiException) as err:
        client.get_server_time()
    assert err.value.status_code is None  # a transport error to the client
    assert client.get_ok() == "OK"
    pm.inject("reset", host="gamma", times=1)
    with pytest.raises(httpx.TransportError):
        gamma.get("/markets")
    pm.inject("garbage", host="clob", times=1)
    body = client.get_ok()
    assert isinstance(body, str) and "Cloudflare" in body  # the client hands back non-JSON text
    pm.inject("garbage", host="gamma", times=1)
    response = gamma.get("/markets")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_fault_latency_and_hang(pm: PolymarketStandIn, gamma: httpx.Client) -> None:
    pm.inject("latency", host="gamma", path="/markets", ms=200)
    started = time.monotonic()
    assert gamma.get("/markets", params={"limit": 1}).status_code == 200
    assert time.monotonic() - started >= 0.2
    pm.inject("status", host="gamma", path="/markets", times=1)  # latency combines with another fault
    started = time.monotonic()
    assert gamma.get("/markets", params={"limit": 1}).status_code == 500
    assert time.monotonic() - started >= 0.2
    pm.clear_faults()
    pm.inject("hang", host="gamma", seconds=2, times=1)
    with pytest.raises(httpx.ReadTimeout):
        gamma.get("/markets", params={"limit": 1}, timeout=0.3)


def test_hang_does_not_block_stop() -> None:
    standin = PolymarketStandIn(markets=20, seed=1).start()
    standin.inject("hang", seconds=60)
    thread = threading.Thread(target=lambda: httpx.get(standin.clob_url + "/ok", timeout=10), daemon=True)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    standin.stop()
    assert time.monotonic() - started < 3


def test_counts_and_request_log(pm: PolymarketStandIn, client: ClobClient, gamma: httpx.Client) -> None:
    pm.reset_counts()
    token = open_market(pm).tokens[0].token_id
    for _ in range(3):
        client.get_order_book(token)
    client.get_midpoint(token)
    gamma.get("/markets", params={"limit": 2})
    gamma.get("/markets/keyset", params={"limit": 2})
    assert pm.count(host="clob", path="/book", method="GET") == 3
    assert pm.count(host="clob") == 4 and pm.count(host="gamma") == 2 and pm.count() == 6
    assert pm.count(path="/markets*") == 2 and pm.count(method="POST") == 0
    last = pm.requests()[-1]
    assert (last.host, last.method, last.path, last.query) == ("gamma", "GET", "/markets/keyset", "limit=2")
    pm.reset_counts()
    assert pm.count() == 0 and pm.requests() == []


def test_http_control_endpoints(pm: PolymarketStandIn, clob: httpx.Client, gamma: httpx.Client) -> None:
    token = open_market(pm, 12).tokens[0].token_id
    clob.get("/book", params={"token_id": token})
    counts = gamma.get("/_standin/counts", params={"host": "clob", "path": "/book"}).json()
    assert counts["count"] == 1 and counts["total"] == 1  # control calls are not counted
    fault = clob.post("/_standin/faults", json={"kind": "status", "host": "gamma", "path": "/markets",
                                                "times": 1, "status": 503})
    assert fault.status_code == 200 and isinstance(fault.json()["id"], int)
    assert gamma.get("/markets").status_code == 503 and gamma.get("/markets").status_code == 200
    clob.post("/_standin/faults", json={"kind": "rate_limit", "host": "clob"})
    assert len(clob.get("/_standin/faults").json()["faults"]) == 1
    assert clob.delete("/_standin/faults").json() == {"ok": True}
    assert clob.get("/book", params={"token_id": token}).status_code == 200
    assert clob.post("/_standin/faults", json={"kind": "explode"}).status_code == 400
    assert clob.post("/_standin/reset-counts").json() == {"ok": True} and pm.count() == 0

    m = open_market(pm, 13)
    assert clob.post(f"/_standin/markets/{m.condition_id}/close", json={"winner": 0}).json()["closed"] is True
    assert clob.get("/book", params={"token_id": m.token_ids[0]}).status_code == 404
    assert clob.post(f"/_standin/markets/{m.condition_id}/reopen").json()["closed"] is False
    assert clob.get("/book", params={"token_id": m.token_ids[0]}).status_code == 200
    assert clob.post("/_standin/markets/0xnope/close").status_code == 404
    clob.post(f"/_standin/tokens/{m.token_ids[0]}/price", json={"price": 0.3})
    assert clob.get("/midpoint", params={"token_id": m.token_ids[0]}).json()["mid"] == "0.3"
    clob.post(f"/_standin/tokens/{m.token_ids[0]}/release")
    catalogue = gamma.get("/_standin/catalogue", params={"closed": "false", "limit": 5}).json()
    assert catalogue["total"] == sum(not x.closed for x in pm.catalogue) and len(catalogue["markets"]) == 5
    assert catalogue["markets"][0]["tokens"][0].keys() == {"token_id", "outcome"}
    forget = clob.post("/_standin/history/forget", json={"before": pm.now() + 1, "token_id": token})
    assert forget.status_code == 200
    assert clob.get("/prices-history", params={"market": token, "interval": "1d"}).json() == {"history": []}
    before = pm.now()
    assert clob.post("/_standin/clock", json={"advance": 0}).json()["now"] == before
    info = clob.get("/_standin").json()
    assert info["simulated"] is True and info["gamma_url"] == pm.gamma_url
    assert len(clob.post("/_standin/markets", json={"count": 2}).json()["markets"]) == 2
    requests = clob.get("/_standin/requests", params={"limit": 1}).json()["requests"]
    assert requests[0]["path"] == "/prices-history"


def test_200_concurrent_connections(pm: PolymarketStandIn) -> None:
    token = open_market(pm).tokens[0].token_id
    host, port = pm.clob_url.removeprefix("http://").split(":")
    barrier = threading.Barrier(200)

    def fetch(_: int) -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.connect()  # all 200 connections are open before any request goes out
            barrier.wait()
            conn.request("GET", f"/book?token_id={token}")
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(fetch, range(200)))
    assert statuses == [200] * 200 and pm.count(path="/book") == 200


def test_stop_closes_sockets_and_threads() -> None:
    baseline = threading.active_count()
    standin = PolymarketStandIn(markets=20, seed=2).start()
    url = standin.clob_url
    port = int(url.rsplit(":", 1)[1])
    with httpx.Client(base_url=url) as http:
        assert http.get("/ok").json() == "OK"  # leaves a keep-alive connection open
        standin.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/ok")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    deadline = time.monotonic() + 2
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= baseline


def test_cli_runs_in_the_foreground_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.standin", "--markets", "100", "--clob-port", "0", "--gamma-port", "0",
         "--latency-ms", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while not any("Gamma" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert "SIMULATED Polymarket stand-in" in text
        clob_url = next(line.split()[-1] for line in lines if line.strip().startswith("CLOB"))
        gamma_url = next(line.split()[-1] for line in lines if line.strip().startswith("Gamma"))
        assert httpx.get(clob_url + "/ok").json() == "OK"
        assert httpx.get(gamma_url + "/markets", params={"limit": 1}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
