"""Parsing Gamma rows, on the real captured payloads in ``tests/contract/samples/``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.markets.rows import BadMarketRow, parse_market
from tests.conftest import sample


def test_list_rows_decode_json_inside_strings() -> None:
    rows = sample("gamma_markets.json")
    for row in rows:
        record = parse_market(row)
        assert record.condition_id == row["conditionId"]
        labels = json.loads(row["outcomes"])
        tokens = json.loads(row["clobTokenIds"])
        prices = json.loads(row["outcomePrices"])
        assert [o.label for o in record.outcomes] == labels  # upstream order kept
        assert [o.token_id for o in record.outcomes] == tokens
        assert [o.price for o in record.outcomes] == [Decimal(p) for p in prices]
        assert record.volume == Decimal(str(row["volumeNum"]))
        assert record.volume_24h == Decimal(str(row["volume24hr"]))
        assert record.best_bid == Decimal(str(row["bestBid"]))
        assert record.event_title == row["events"][0]["title"]
        assert record.end_date is not None and record.end_date.tzinfo is not None


def test_keyset_page_rows_parse() -> None:
    page = sample("gamma_markets_keyset.json")
    assert all(parse_market(row).outcomes for row in page["markets"])


def test_tags_become_category_and_tag_slugs() -> None:
    record = parse_market(sample("gamma_market_include_tag.json"))
    assert record.category == "world affairs"
    assert "geopolitics" in record.tags


def test_resolved_market_with_omitted_fields() -> None:
    row = sample("gamma_market_resolved.json")
    record = parse_market(row)
    assert record.closed is True
    assert record.best_bid is None and record.volume_24h is None  # omitted upstream, not zero
    assert [o.price for o in record.outcomes] == [Decimal(0), Decimal(1)]


@pytest.mark.parametrize(
    "change",
    [
        {"conditionId": "0x123"},
        {"conditionId": None},
        {"outcomes": "not json"},
        {"clobTokenIds": '["1", "2", "3"]'},
        {"clobTokenIds": '["0xabc", "2"]'},
        {"question": ""},
    ],
)
def test_bad_rows_are_rejected(change: dict) -> None:
    row = {**sample("gamma_market.json"), **change}
    with pytest.raises(BadMarketRow):
        parse_market(row)


def test_content_hash_is_stable_and_sensitive() -> None:
    row = sample("gamma_market.json")
    assert parse_market(row).content_hash() == parse_market(dict(row)).content_hash()
    assert parse_market(row).content_hash() != parse_market({**row, "volume24hr": 1.5}).content_hash()


# --- the value rules (shared.markets.rows.GammaMarket) ------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"volumeNum": "1e200000"},  # beyond PostgreSQL numeric
        {"volumeNum": -1},
        {"volumeNum": 1e15},
        {"volumeNum": "NaN"},
        {"volumeNum": "Infinity"},
        {"volumeNum": "1" * 100},  # longer than any real number
        {"volumeNum": True},
        {"volumeNum": "a lot"},
        {"liquidityNum": -0.01},
        {"volume24hr": [1]},
        {"bestBid": 12.0},
        {"bestAsk": -5},
        {"lastTradePrice": 1.0001},
        {"spread": 2},
        {"oneDayPriceChange": -1.5},
        {"orderPriceMinTickSize": 0},
        {"outcomePrices": '["1e400", "0"]'},
        {"outcomePrices": '["0.5", "-0.5"]'},
        {"endDate": "9999-12-31T23:59:59-23:59"},  # past datetime.max once in UTC
        {"endDate": "0001-01-01T00:00:00+14:00"},  # a BC date once in UTC
        {"endDate": "2101-01-01T00:00:00Z"},
        {"endDate": "1999-12-31T23:59:59Z"},
        {"endDate": "2026-06-01T00:00:00"},  # no time zone: ambiguous
        {"endDate": "next tuesday"},
        {"endDate": 1780000000},
        {"id": "12a"},
        {"id": "1" * 21},
        {"question": "x" * 1_001},
        {"question": "\u0000\u0007 "},  # nothing left once the control characters are gone
        {"description": "x" * 20_001},
        {"slug": "s" * 301},
        {"outcomes": '["' + '", "'.join(["x" * 301, "No"]) + '"]'},
        {"outcomes": json.dumps([str(i) for i in range(101)]), "clobTokenIds": None, "outcomePrices": None},
        {"tags": [{"slug": "t" * 301}]},
        {"tags": [{"slug": f"t{i}"} for i in range(101)]},
        {"clobTokenIds": '["1", "1"]'},  # one token on two outcomes
        {"clobTokenIds": '["1", {"id": 2}]'},
        {"outcomes": '[[' * 50_000 + ']]' * 50_000},
        {"events": [{"id": "12x", "title": "e"}]},
        {"events": [{"id": "1", "volume": "lots"}]},
        {"events": [{"id": "1", "openInterest": -1}]},
        {"events": [{"id": "1", "competitive": 7}]},
        {"events": [{"id": "1", "title": "t" * 1_001}]},
        {"events": [{"id": "1", "image": "i" * 2_001}]},
        {"events": [{"id": "1", "endDate": "soon"}]},
        {"events": [{"id": "1", "tags": [{"slug": f"t{i}"} for i in range(101)]}]},
        {"groupItemTitle": "g" * 301},
        {"closedTime": "2026-13-01 00:00:00+00"},
        {"umaResolutionStatuses": '["proposed", 7]'},
        {"umaResolutionStatuses": json.dumps(["proposed"] * 21)},
        {"umaResolutionStatuses": '[' * 50_000 + ']' * 50_000},
    ],
    ids=lambda change: next(iter(change)) + "=" + str(next(iter(change.values())))[:30],
)
def test_values_outside_their_rules_reject_the_row(change: dict) -> None:
    row = {**sample("gamma_market.json"), **change}
    with pytest.raises(BadMarketRow):
        parse_market(row)


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"question": "Will a\u0000b happen?"}, "question", "Will ab happen?"),
        ({"question": "Will a\ud800b\udfff happen?"}, "question", "Will ab happen?"),
        ({"question": "\u009bWill\u001b[31m it?\u007f"}, "question", "Will[31m it?"),
        ({"description": "line one\nline\ttwo\r\n"}, "description", "line one\nline\ttwo"),
        ({"volumeNum": "", "volume": "12.5"}, "volume", None),  # volumeNum present: volume is the fallback only
        ({"volumeNum": None}, "volume", None),
        ({"bestBid": 0, "bestAsk": 1}, "best_bid", Decimal(0)),
        ({"endDate": None, "endDateIso": "2027-03-04"}, "end_date", datetime(2027, 3, 4, tzinfo=UTC)),
        ({"endDate": "2100-12-31T23:59:59Z"}, "end_date", datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ({"id": 559651}, "gamma_id", "559651"),
        ({"closed": "yes"}, "closed", False),
        ({"acceptingOrders": "true"}, "accepting_orders", None),
        ({"groupItemTitle": "Other\u0000"}, "group_item_title", "Other"),
        ({"groupItemTitle": ""}, "group_item_title", None),
        ({"negRiskOther": "true"}, "neg_risk_other", None),
        ({"closedTime": "2026-06-12 20:41:49+00"}, "closed_time", datetime(2026, 6, 12, 20, 41, 49, tzinfo=UTC)),
        ({"umaResolutionStatuses": None, "umaResolutionStatus": "resolved"}, "uma_statuses", ("resolved",)),
        ({"umaResolutionStatuses": '["proposed", "resolved"]'}, "uma_statuses", ("proposed", "resolved")),
        ({"events": [{"title": "no id"}]}, "event", None),  # no event id: no event, as before
        ({"tags": [{"slug": "us-politics", "label": "US Politics"}, {"slug": "US-Politics", "label": "x"}]},
         "tag_labels", ("US Politics",)),  # one label per distinct slug, upstream's casing
    ],
)
def test_values_within_their_rules_are_kept(change: dict, field: str, expected: object) -> None:
    record = parse_market({**sample("gamma_market.json"), **change})
    assert getattr(record, field) == expected


def test_a_rejected_row_says_which_rule_without_the_value() -> None:
    secret = "9" * 60 + "e99999"
    with pytest.raises(BadMarketRow) as caught:
        parse_market({**sample("gamma_market.json"), "volumeNum": secret})
    assert str(caught.value).startswith("volume:") and secret not in str(caught.value)
    with pytest.raises(BadMarketRow, match="not an object"):
        parse_market(["not", "a", "row"])


def test_the_parent_event_comes_with_the_row() -> None:
    rows = sample("gamma_markets.json")
    record = parse_market(rows[0])
    event = record.event
    assert event is not None and event.id == record.event_id == rows[0]["events"][0]["id"]
    assert event.slug == rows[0]["events"][0]["slug"] and event.title == record.event_title
    # Event numbers are JSON numbers, unlike the market's strings (contract section 1).
    assert event.volume == Decimal(str(rows[0]["events"][0]["volume"]))
    assert event.open_interest == Decimal(str(rows[0]["events"][0]["openInterest"]))
    assert event.neg_risk is True and record.group_item_title == rows[0]["groupItemTitle"]
    assert record.neg_risk_other is False
    resolved = parse_market(sample("gamma_market_resolved.json"))
    assert resolved.closed and resolved.uma_statuses == ("proposed", "resolved")
    assert resolved.closed_time == datetime(2026, 6, 12, 20, 41, 49, tzinfo=UTC)


def _row(**change: object) -> dict:
    """A stored market row as store.load_markets gives it (every column market_json reads)."""
    from shared.markets import compact

    row = {**compact._PROBE_ROW, "closed_time": None, "uma_statuses": [],
           "outcomes": [{"index": 0, "outcome": "Yes", "token_id": "1", "price": Decimal("0.3")},
                        {"index": 1, "outcome": "No", "token_id": "2", "price": Decimal("0.7")}]}
    row.update(change)
    return row


def _prices(**change: object) -> list[tuple[float | None, str]]:
    from shared.markets.snapshot import market_json

    body = market_json(_row(**change))
    return [(o["price"], o["price_rule"]) for o in body["outcomes"]]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"best_bid": Decimal("0.40"), "best_ask": Decimal("0.50"), "last_trade_price": Decimal("0.9")},
         [(0.45, "midpoint"), (0.55, "midpoint")]),  # a spread of exactly 0.10 is not over it
        ({"best_bid": Decimal("0.40"), "best_ask": Decimal("0.51"), "last_trade_price": Decimal("0.9")},
         [(0.9, "last_trade"), (0.1, "last_trade")]),
        ({"best_bid": None, "best_ask": Decimal("0.5"), "last_trade_price": Decimal("0.2")},
         [(0.2, "last_trade"), (0.8, "last_trade")]),
        ({"best_bid": Decimal("0.6"), "best_ask": Decimal("0.5"), "last_trade_price": None},  # crossed: no book
         [(0.3, "outcome_prices"), (0.7, "outcome_prices")]),
        ({"best_bid": None, "best_ask": None, "last_trade_price": None},
         [(0.3, "outcome_prices"), (0.7, "outcome_prices")]),
    ],
)
def test_list_prices_follow_polymarkets_display_rule(change: dict, expected: list) -> None:
    assert _prices(**change) == [(pytest.approx(p), rule) for p, rule in expected]


def test_resolution_needs_closed_and_prices_exactly_one_and_zero() -> None:
    from shared.markets.snapshot import market_json

    settled = [{"index": 0, "outcome": "Yes", "token_id": "1", "price": Decimal("0")},
               {"index": 1, "outcome": "No", "token_id": "2", "price": Decimal("1.000")}]
    body = market_json(_row(closed=True, outcomes=settled, uma_statuses=["proposed", "resolved"],
                            closed_time=datetime(2026, 6, 12, 20, 41, 49, tzinfo=UTC)))
    assert body["status"] == "resolved" and not body["active"]
    assert body["resolution"] == {"status": "resolved", "winner_outcome": "No", "winner_token_id": "2",
                                  "resolved_at": "2026-06-12T20:41:49+00:00", "uma_statuses": ["proposed", "resolved"]}
    assert [(o["price"], o["price_rule"]) for o in body["outcomes"]] == [(0.0, "resolved"), (1.0, "resolved")]
    unsettled = [{**settled[0], "price": Decimal("0.5")}, {**settled[1], "price": Decimal("0.5")}]
    body = market_json(_row(closed=True, outcomes=unsettled))
    assert body["status"] == "closed" and body["resolution"]["winner_token_id"] is None
    assert body["resolution"]["resolved_at"] is None
    assert [o["price_rule"] for o in body["outcomes"]] == ["outcome_prices", "outcome_prices"]
    # 1 and 0 while still open is a price, not a result; leaving the active set closes it.
    assert market_json(_row(outcomes=settled))["status"] == "open"
    assert market_json(_row(in_active_set=False))["status"] == "closed"
