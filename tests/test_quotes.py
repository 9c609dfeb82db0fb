"""Quote arithmetic and parsing on the recorded CLOB samples (``tests/contract/samples/``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.api.params import parse_query
from shared.core.errors import BadRequest, UpstreamBadResponse
from shared.core.ids import validate_token_id
from shared.prices.query import HistoryQuery
from shared.prices.quotes import (
    book_json,
    display_price,
    merge_history,
    parse_book,
    parse_history,
    quote_from_book,
    read_history,
)
from tests.conftest import sample

NOW = datetime(2026, 8, 17, tzinfo=UTC)  # after every sample's own time (a fetch comes after the book)


def test_live_book_sample_gives_the_quote_the_live_endpoints_gave() -> None:
    raw = sample("clob_book.json")  # same token and session as the /price, /midpoint, /spread samples
    book = parse_book(raw, NOW, raw["asset_id"])
    quote = quote_from_book(book)
    assert quote.best_bid == float(sample("clob_price_buy.json")["price"])  # BUY quotes the best bid
    assert quote.best_ask == float(sample("clob_price_sell.json")["price"])
    assert quote.midpoint == float(sample("clob_midpoint.json")["mid"])
    assert quote.spread == float(sample("clob_spread.json")["spread"])
    assert quote.last_trade_price == float(raw["last_trade_price"])
    assert quote.price == quote.midpoint and quote.price_rule == "midpoint"
    assert quote.tick_size == sample("clob_tick_size.json")["minimum_tick_size"]
    assert quote.condition_id == raw["market"] and quote.book_hash == raw["hash"]
    assert book.timestamp == datetime.fromtimestamp(int(raw["timestamp"]) / 1000, UTC)
    # Upstream lists the best LAST; ours are best-first.
    assert Decimal(raw["bids"][-1]["price"]) == book.bids[0].price
    body = book_json(book, 3)
    assert [b["price"] for b in body["bids"]] == sorted((b["price"] for b in body["bids"]), reverse=True)
    assert [a["price"] for a in body["asks"]] == sorted(a["price"] for a in body["asks"])
    assert body["totals"]["bids"]["levels"] == len(raw["bids"])


def test_books_sample_joins_on_asset_id() -> None:
    for raw in sample("clob_books.json"):
        book = parse_book(raw, NOW)
        assert book.token_id == raw["asset_id"]
        assert book.best_bid == max(Decimal(b["price"]) for b in raw["bids"])
        assert book.best_ask == min(Decimal(a["price"]) for a in raw["asks"])


@pytest.mark.parametrize(
    ("mid", "spread", "last", "expected"),
    [
        ("0.5", "0.10", "0.7", ("0.5", "midpoint")),  # exactly 0.10 is not wider than 0.10
        ("0.5", "0.11", "0.7", ("0.7", "last_trade")),
        (None, None, "0.7", ("0.7", "last_trade")),  # one-sided book
        ("0.5", "0.2", None, ("0.5", "midpoint")),  # no trade yet
        (None, None, None, (None, "none")),  # one-sided or empty book, never traded: no price
    ],
)
def test_display_price_rule(mid: str | None, spread: str | None, last: str | None,
                            expected: tuple[str | None, str]) -> None:
    def d(v: str | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    price, rule = display_price(d(mid), d(spread), d(last))
    assert (price, rule) == (d(expected[0]), expected[1])


def test_a_one_sided_book_without_trades_has_no_price_and_rule_none() -> None:
    raw = {"market": "0x" + "ab" * 32, "asset_id": "123", "timestamp": "1786385407185", "hash": "h",
           "bids": [{"price": "0.40", "size": "10"}, {"price": "0.42", "size": "5"}], "asks": [],
           "min_order_size": "5", "tick_size": "0.01", "neg_risk": False, "last_trade_price": ""}
    quote = quote_from_book(parse_book(raw, NOW))
    assert (quote.price, quote.price_rule) == (None, "none")
    assert quote.best_bid == 0.42 and quote.best_ask is None and quote.midpoint is None
    traded = quote_from_book(parse_book({**raw, "last_trade_price": "0.41"}, NOW))
    assert (traded.price, traded.price_rule) == (0.41, "last_trade")


def test_bad_books_are_upstream_errors() -> None:
    raw = sample("clob_book.json")
    # A bad level is an item (left out, see below); a bad field of the book itself fails the book.
    for broken in ({**raw, "asset_id": "0xabc"}, {**raw, "asks": "none"}, ["not", "a", "book"],
                   {**raw, "hash": "4f5a\ud800"}, {**raw, "hash": "a\u0000b"}, {**raw, "hash": "h" * 129},
                   {**raw, "market": "0x" + "zz" * 32}, {**raw, "tick_size": "5"}, {**raw, "tick_size": "0"},
                   {**raw, "min_order_size": "-1"}, {**raw, "min_order_size": "9e999999999"},
                   {**raw, "last_trade_price": "12.0"}, {**raw, "last_trade_price": "1e400"},
                   {**raw, "timestamp": "-5"}, {**raw, "timestamp": "100000000000000000000"},
                   {**raw, "timestamp": str(int((NOW.timestamp() + 7200) * 1000))}, {**raw, "neg_risk": "yes"},
                   {**raw, "bids": raw["bids"] * 5000},
                   {"error": "No orderbook exists for the requested token id"}):  # with status 200
        with pytest.raises(UpstreamBadResponse):
            parse_book(broken, NOW)
    with pytest.raises(UpstreamBadResponse):
        parse_book(raw, NOW, token_id="1")  # a book for another token
    # Absent optional fields stay absent, as before.
    book = parse_book({**raw, "hash": "", "market": "", "timestamp": "", "last_trade_price": "",
                       "tick_size": None}, NOW)
    assert (book.hash, book.condition_id, book.timestamp, book.last_trade_price, book.tick_size) == (
        None, None, None, None, None)


@pytest.mark.parametrize("level", [{"price": "x", "size": "1"}, {"price": "12.0", "size": "1"},
                                   {"price": "-5", "size": "1"}, {"price": "9e999999999", "size": "1"},
                                   {"price": "NaN", "size": "1"}, {"price": 1e400, "size": "1"},
                                   {"price": True, "size": "1"}, {"price": "0.5", "size": "9e999999999"},
                                   {"price": "0.5", "size": "-1"}, {"price": "0.5"}, "level", None,
                                   {"price": "0." + "1" * 60, "size": "1"}])
def test_a_bad_level_is_left_out_and_counted(level: object) -> None:
    raw = sample("clob_book.json")
    good = parse_book(raw, NOW)
    book = parse_book({**raw, "bids": [*raw["bids"], level], "asks": [level, *raw["asks"]]}, NOW)
    assert book.bids == good.bids and book.asks == good.asks
    assert book.rejected_levels == 2 and book.rejection.startswith("bids.")
    assert quote_from_book(book) == quote_from_book(good)


def test_bad_history_points_are_left_out_and_counted() -> None:
    good = sample("clob_prices_history.json")["history"]
    now = good[-1]["t"] + 60
    bad = [{"t": 10**20, "p": 0.5}, {"t": -5, "p": 0.5}, {"t": 1_500_000_000, "p": 0.5}, {"t": now + 31, "p": 0.5},
           {"t": 3_400_000_000, "p": 0.5}, {"t": good[0]["t"], "p": 12}, {"t": good[0]["t"], "p": -5},
           {"t": True, "p": 0.5}, {"t": "1786854608", "p": 0.5}, {"t": good[1]["t"] + 1, "p": float("nan")},
           {"t": good[1]["t"] + 2, "p": float("inf")}, {"t": good[1]["t"] + 3}, "point", None]
    read = read_history({"history": [*good, *bad]}, now)
    assert read.points == parse_history({"history": good}, now) and len(read.points) == len(good)
    assert read.rejected == len(bad) and read.rejection.startswith("history.")
    skewed = read_history({"history": [*good, {"t": now + 29, "p": 0.5}]}, now)  # within the skew allowance
    assert skewed.points[-1] == (now + 29, 0.5) and skewed.rejected == 0
    for body in ({"history": {"t": 1}}, [], {"nohistory": []}, {"history": good * 10_000}):
        with pytest.raises(UpstreamBadResponse):
            read_history(body, now)


def test_history_sample_and_merge() -> None:
    points = parse_history(sample("clob_prices_history.json"))
    assert points[0] == (1786854608, 0.0455) and len(points) == 12
    assert parse_history(sample("clob_prices_history_empty.json")) == []
    start, end = points[0][0], points[-1][0]
    # Upstream forgot the first half; storage has those points, and a quote where upstream has one.
    stored = points[:6] + [(points[8][0] + 10, 0.5)]
    merged, from_store = merge_history(points[6:], stored, period_s=600, start=start, end=end)
    assert merged == points and from_store == 6
    # Storage alone: the latest point of a bucket, none closer than half a bucket to the last kept.
    t0 = 1786854000  # a bucket boundary (600 s)
    stored = [(t0 + 10, 0.1), (t0 + 500, 0.2), (t0 + 620, 0.3), (t0 + 1300, 0.4), (t0 - 5000, 0.9)]
    merged, from_store = merge_history([], stored, period_s=600, start=t0, end=t0 + 1800)
    assert merged == [(t0 + 500, 0.2), (t0 + 1300, 0.4)] and from_store == 2


@pytest.mark.parametrize("token", ["1", "0", "9" * 78])
def test_token_ids_accepted(token: str) -> None:
    assert validate_token_id(token) == token


@pytest.mark.parametrize("token", ["", "9" * 79, "-1", "+1", "1.0", "1e5", " 1", "1 ", "٣"])
def test_token_ids_rejected(token: str) -> None:
    with pytest.raises(BadRequest):
        validate_token_id(token)


def test_history_query_defaults_are_upstream_minimums() -> None:
    def parse_history_query(params: dict[str, str]) -> HistoryQuery:
        return parse_query(HistoryQuery, params)

    assert parse_history_query({}).interval == "1d" and parse_history_query({}).fidelity == 1
    assert parse_history_query({"interval": "1w"}).fidelity == 5
    assert parse_history_query({"interval": "1m"}).fidelity == 10
    assert parse_history_query({"interval": "max", "fidelity": "60"}).fidelity == 60


def test_sample_time_tolerates_clock_skew_but_not_nonsense() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.prices.quotes import Quote

    fetched = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def quote(book_time: datetime | None) -> Quote:
        return Quote("1", 0.5, "midpoint", 0.5, 0.49, 0.51, 0.02, 0.5, 0.01, "open", fetched, book_time)

    assert quote(fetched - timedelta(minutes=3)).sample_time == fetched - timedelta(minutes=3)
    # Upstream's clock a few seconds ahead of ours: still the book's own time, so re-reading the
    # same book state stores nothing new.
    assert quote(fetched + timedelta(seconds=4)).sample_time == fetched + timedelta(seconds=4)
    assert quote(fetched + timedelta(hours=2)).sample_time == fetched  # far ahead: not trusted
    assert quote(None).sample_time == fetched
