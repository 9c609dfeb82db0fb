"""Bodies of /api/markets and /api/markets/{condition_id}."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.api.schemas.base import (
    EXAMPLE_TOKEN_ID,
    Answer,
    Body,
    ConditionId,
    Count,
    NonNegative,
    Probability,
    Time,
    TokenId,
)
from shared.api.schemas.common import Freshness
from shared.markets.query import MAX_LIMIT


class Outcome(Body):
    outcome: str = Field(examples=["Yes"])
    token_id: TokenId | None = Field(description="Null for a market without an order book.",
                                     examples=[EXAMPLE_TOKEN_ID])
    price: Probability | None


class Event(Body):
    id: str
    slug: str | None
    title: str | None


class Market(Body):
    """A market as listed."""

    condition_id: ConditionId
    gamma_id: str | None = Field(description="Gamma's market id.")
    slug: str | None
    question: str = Field(examples=["Will it rain in London tomorrow?"])
    category: str | None
    tags: list[Annotated[str, Field(description="Tag slug, lower case.")]]
    event: Event | None
    end_date: Time | None
    active: bool = Field(description="In Polymarket's open set and not closed.")
    closed: bool = Field(description="Closed, or no longer in the open set.")
    accepting_orders: bool | None
    volume: NonNegative | None
    volume_24h: NonNegative | None
    liquidity: NonNegative | None
    best_bid: Probability | None
    best_ask: Probability | None
    last_trade_price: Probability | None
    spread: Probability | None
    one_day_price_change: Annotated[float, Field(ge=-1, le=1)] | None = Field(
        description="One-day price change of the first outcome.")
    outcomes: list[Outcome] = Field(description="In Polymarket's order.")
    updated_at: Time = Field(description="When the stored row last changed.")


class MarketDetail(Market):
    """One market: the list fields plus description and order-book settings."""

    description: str | None
    enable_order_book: bool | None
    neg_risk: bool | None
    tick_size: Probability | None


class MarketList(Answer):
    markets: list[Market] = Field(max_length=MAX_LIMIT)
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    total: Count = Field(description="Every match of the query.")
    freshness: Freshness


class MarketAnswer(Answer):
    market: MarketDetail
    freshness: Freshness
