"""Gamma market rows -> our market records, with the contract's traps handled in one place.

Traps (``docs/polymarket-api.md`` section 4): ``outcomes``, ``outcomePrices`` and
``clobTokenIds`` are JSON arrays inside strings (the prices inside are strings too);
``volume``/``liquidity`` are decimal strings while ``volumeNum``/``volume24hr``/``bestBid``...
are numbers; null fields are omitted, not null; ``active`` stays true on closed markets.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

CONDITION_ID_RE = re.compile(r"^0x[0-9a-f]{64}$")
TOKEN_ID_RE = re.compile(r"^[0-9]{1,78}$")


class BadMarketRow(ValueError):
    """A row that cannot be a market (missing condition id, mismatched outcome arrays...)."""


@dataclass(frozen=True)
class Outcome:
    index: int
    label: str
    token_id: str | None
    price: Decimal | None


@dataclass(frozen=True)
class MarketRecord:
    condition_id: str
    gamma_id: str | None
    slug: str | None
    question: str
    description: str | None
    category: str | None
    tags: tuple[str, ...]
    event_id: str | None
    event_slug: str | None
    event_title: str | None
    end_date: datetime | None
    closed: bool
    accepting_orders: bool | None
    enable_order_book: bool | None
    neg_risk: bool | None
    volume: Decimal | None
    volume_24h: Decimal | None
    liquidity: Decimal | None
    best_bid: Decimal | None
    best_ask: Decimal | None
    last_trade_price: Decimal | None
    spread: Decimal | None
    one_day_price_change: Decimal | None
    tick_size: Decimal | None
    outcomes: tuple[Outcome, ...]

    def content_hash(self) -> str:
        """Stable hash of every stored field: an unchanged market is not rewritten."""
        # The dataclass repr lists every field in a fixed order and is deterministic for the
        # types used here (str, Decimal, datetime, tuples); several times cheaper than asdict().
        return hashlib.sha1(repr(self).encode()).hexdigest()


def decimal_or_none(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _json_list(row: dict[str, Any], key: str) -> list[Any]:
    value = row.get(key)
    if value is None:
        return []
    if isinstance(value, list):  # tolerate a real array should Gamma ever fix the encoding
        return value
    if not isinstance(value, str):
        raise BadMarketRow(f"{key} is neither a JSON string nor an array")
    try:
        decoded = json.loads(value)
    except ValueError:
        raise BadMarketRow(f"{key} holds invalid JSON") from None
    if not isinstance(decoded, list):
        raise BadMarketRow(f"{key} does not hold a JSON array")
    return decoded


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if re.match(r"^\d{4}-\d{2}-\d{2} ", text):
        text = text.replace(" ", "T", 1)  # closedTime's "2026-06-12 20:41:49+00"
    if re.search(r"[+-]\d{2}$", text):
        text += ":00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a date without a zone is ambiguous; better unknown than wrong
    return parsed


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_market(row: dict[str, Any]) -> MarketRecord:
    condition_id = _str(row.get("conditionId"))
    condition_id = condition_id.lower() if condition_id else None
    if not condition_id or not CONDITION_ID_RE.match(condition_id):
        raise BadMarketRow("missing or malformed conditionId")
    question = _str(row.get("question"))
    if not question:
        raise BadMarketRow("missing question")

    labels = _json_list(row, "outcomes")
    prices = _json_list(row, "outcomePrices")
    token_ids = _json_list(row, "clobTokenIds")
    if token_ids and len(token_ids) != len(labels):
        raise BadMarketRow("clobTokenIds and outcomes differ in length")
    outcomes = []
    for index, label in enumerate(labels):
        token_id = _str(token_ids[index]) if index < len(token_ids) else None
        if token_id is not None and not TOKEN_ID_RE.match(token_id):
            raise BadMarketRow("malformed token id")
        price = decimal_or_none(prices[index]) if index < len(prices) else None
        outcomes.append(Outcome(index, str(label), token_id, price))

    events = row.get("events") if isinstance(row.get("events"), list) else []
    event = events[0] if events and isinstance(events[0], dict) else {}
    tag_objects = row.get("tags") if isinstance(row.get("tags"), list) else []
    tags = tuple(
        dict.fromkeys(
            str(tag.get("slug") or tag.get("label")).lower()
            for tag in tag_objects
            if isinstance(tag, dict) and (tag.get("slug") or tag.get("label"))
        )
    )
    first_label = next(
        (str(tag["label"]) for tag in tag_objects if isinstance(tag, dict) and tag.get("label")), None
    )

    return MarketRecord(
        condition_id=condition_id,
        gamma_id=_str(row.get("id")),
        slug=_str(row.get("slug")),
        question=question,
        description=_str(row.get("description")),
        category=_str(row.get("category")) or first_label,
        tags=tags,
        event_id=_str(event.get("id")),
        event_slug=_str(event.get("slug")),
        event_title=_str(event.get("title")),
        end_date=_datetime(row.get("endDate")) or _datetime(row.get("endDateIso") and row["endDateIso"] + "T00:00:00Z"),
        closed=row.get("closed") is True,
        accepting_orders=_bool(row.get("acceptingOrders")),
        enable_order_book=_bool(row.get("enableOrderBook")),
        neg_risk=_bool(row.get("negRisk")),
        # volumeNum is the number; volume is the same value as a string (fallback only).
        volume=decimal_or_none(row.get("volumeNum", row.get("volume"))),
        volume_24h=decimal_or_none(row.get("volume24hr")),
        liquidity=decimal_or_none(row.get("liquidityNum", row.get("liquidity"))),
        best_bid=decimal_or_none(row.get("bestBid")),
        best_ask=decimal_or_none(row.get("bestAsk")),
        last_trade_price=decimal_or_none(row.get("lastTradePrice")),
        spread=decimal_or_none(row.get("spread")),
        one_day_price_change=decimal_or_none(row.get("oneDayPriceChange")),
        tick_size=decimal_or_none(row.get("orderPriceMinTickSize")),
        outcomes=tuple(outcomes),
    )
