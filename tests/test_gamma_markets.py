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
