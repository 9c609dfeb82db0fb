"""Parsing Gamma rows, on the real captured payloads in ``tests/contract/samples/``."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.gamma_markets import BadMarketRow, parse_market
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
