"""Bodies of /api/markets and /api/markets/{condition_id}."""

from __future__ import annotations

from typing import Annotated, Literal

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
    optional,
)
from shared.api.schemas.common import Freshness
from shared.markets.query import MAX_LIMIT
from shared.markets.trends import MAX_SPARKLINE_POINTS

PriceRule = Literal["midpoint", "last_trade", "resolved", "outcome_prices", "none"]
Status = Literal["open", "closed", "resolved"]


class Outcome(Body):
    outcome: str = Field(examples=["Yes"])
    token_id: TokenId | None = Field(description="Null for a market without an order book.",
                                     examples=[EXAMPLE_TOKEN_ID])
    price: Probability | None = Field(
        description="Display price by Polymarket's rule (`price_rule`): the midpoint of Gamma's best bid and ask "
                    "unless the spread is over 0.10, then the last trade (the second outcome of a binary market "
                    "is 1 minus the first); 1 or 0 once resolved.")
    price_rule: PriceRule = Field(
        description="`midpoint`, `last_trade`, `resolved`, `outcome_prices` (Gamma's outcomePrices: closed but "
                    "not settled, or no book fields), `none` (no price).")
    outcome_price: Probability | None = Field(description="Gamma's `outcomePrices` entry, as sent.")


class Resolution(Body):
    status: Status = Field(description="`open`; `closed` (closed or left the open set, not settled); `resolved` "
                                       "(closed with outcome prices exactly 1 and 0).")
    winner_outcome: str | None = Field(description="The winning outcome's label once resolved.")
    winner_token_id: TokenId | None = Field(description="The winning outcome's token id once resolved.")
    resolved_at: Time | None = Field(description="Gamma's `closedTime` of a resolved market.")
    uma_statuses: list[str] = Field(description="UMA resolution status history, oldest first "
                                                "(e.g. `proposed`, `resolved`).")


class Event(Body):
    id: str
    slug: str | None
    title: str | None


class SparkPoint(Body):
    t: Count = Field(description="Unix seconds: the start of the point's 30 minutes (24h) or 4 hours (7d).")
    p: Probability = Field(description="The first outcome's display price at the end of it.")


class Sparkline(Body):
    """The first outcome's captured price over the window, ending at the catalogue's refresh (no upstream call)."""

    window: Literal["24h", "7d"]
    points: list[SparkPoint] = Field(max_length=MAX_SPARKLINE_POINTS,
                                     description="Ascending; empty when nothing is captured for the market.")


class Change(Body):
    """The first outcome's price change over the window the list is sorted by."""

    window: Literal["1h", "24h", "7d"]
    value: Annotated[float, Field(ge=-1, le=1)] = Field(description="Price now less the price a window ago.")
    source: Literal["captures", "gamma"] = Field(
        description="`captures`: ours at the catalogue's refresh and a window before it; `gamma`: Gamma's one-day "
                    "change, where our captures do not reach a day back (24h only).")


class Market(Body):
    """A market as listed."""

    condition_id: ConditionId
    gamma_id: str | None = Field(description="Gamma's market id.")
    slug: str | None
    question: str = Field(examples=["Will it rain in London tomorrow?"])
    category: str | None
    tags: list[Annotated[str, Field(description="Tag slug, lower case.")]]
    tag_labels: list[Annotated[str, Field(description="Tag label in upstream's casing.")]] = Field(
        description="One per entry of `tags`, same order.")
    group_item_title: str | None = Field(description="The candidate's name within its event (neg-risk groups).")
    neg_risk_other: bool | None = Field(description="Gamma marks this market as its event's \"Other\" placeholder.")
    image: str | None
    icon: str | None
    event: Event | None
    end_date: Time | None
    active: bool = Field(description="In Polymarket's open set and not closed.")
    closed: bool = Field(description="Closed, or no longer in the open set.")
    status: Status = Field(description="Same as `resolution.status`.")
    closed_time: Time | None = Field(description="Gamma's `closedTime`.")
    resolution: Resolution
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
    sparkline: Sparkline | None = optional("With `sparkline=`: null when the database could not be read.")
    change: Change | None = optional("With a movers `sort`: null when no change is known (sorted last).")


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
