"""What other features read of one market (sentiment's prompt), typed: ``MarketsService.record``.

The keys and values are those of ``GET /api/markets/{condition_id}``'s ``market`` object, kept to
the ones read outside the markets feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict


class OutcomeFacts(TypedDict):
    outcome: str
    token_id: str | None
    price: float | None


class EventFacts(TypedDict):
    title: str | None


class MarketFacts(TypedDict):
    condition_id: str
    question: str
    description: str | None  # None when served from memory (the database is down)
    category: str | None
    tags: list[str]
    event: EventFacts | None
    end_date: str | None  # ISO 8601
    active: bool
    volume: float | None
    volume_24h: float | None
    liquidity: float | None
    one_day_price_change: float | None
    outcomes: list[OutcomeFacts]
    updated_at: str  # ISO 8601


def market_facts(market: Mapping[str, Any]) -> MarketFacts:
    """The facts of a served ``market`` object."""
    event = market["event"]
    return MarketFacts(
        condition_id=market["condition_id"],
        question=market["question"],
        description=market["description"],
        category=market["category"],
        tags=list(market["tags"]),
        event=None if event is None else EventFacts(title=event["title"]),
        end_date=market["end_date"],
        active=market["active"],
        volume=market["volume"],
        volume_24h=market["volume_24h"],
        liquidity=market["liquidity"],
        one_day_price_change=market["one_day_price_change"],
        outcomes=[OutcomeFacts(outcome=o["outcome"], token_id=o["token_id"], price=o["price"])
                  for o in market["outcomes"]],
        updated_at=market["updated_at"],
    )
