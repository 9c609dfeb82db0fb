"""Bodies of /api/events and /api/events/{event}."""

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
from shared.api.schemas.markets import Market, Sparkline
from shared.events.query import MAX_LIMIT

Status = Literal["open", "closed", "resolved"]
PriceRule = Literal["midpoint", "last_trade", "resolved", "outcome_prices", "none"]


class CompactOutcome(Body):
    token_id: TokenId | None = Field(description="Null for a market without an order book.",
                                     examples=[EXAMPLE_TOKEN_ID])
    outcome: str = Field(examples=["Yes"])
    price: Probability | None = Field(description="The display price (Polymarket's rule; see `price_rule`).")
    price_rule: PriceRule = Field(description="How `price` was chosen, as in the markets list.")


class CompactMarket(Body):
    """A market as an events list shows it."""

    condition_id: ConditionId
    question: str
    group_item_title: str | None = Field(description="The candidate's short name in its event (e.g. a name).")
    status: Status
    outcomes: list[CompactOutcome] = Field(description="In Polymarket's order.")
    sparkline: Sparkline | None = optional("With `sparkline=`: null when the database could not be read.")


class Leading(Body):
    condition_id: ConditionId
    group_item_title: str | None
    price: Probability | None = Field(description="Its first outcome's display price.")


class EventFields(Body):
    id: str = Field(description="Gamma's event id.", examples=["16085"])
    slug: str | None
    title: str | None
    description: str | None
    image: str | None
    icon: str | None
    start_date: Time | None
    end_date: Time | None
    volume: NonNegative | None = Field(description="Gamma's, else the sum of its markets'.")
    volume_24h: NonNegative | None = Field(description="Gamma's, else the sum of its markets'.")
    liquidity: NonNegative | None = Field(description="Gamma's, else the sum of its markets'.")
    open_interest: NonNegative | None
    competitive: Annotated[float, Field(ge=0, le=1)] | None
    neg_risk: bool = Field(description="One winner among the candidates (each market a candidate).")
    closed: bool = Field(description="Gamma closed it, or none of its markets is open.")
    active: bool = Field(description="Not closed, and at least one market in the open set.")
    tags: list[Annotated[str, Field(description="Tag slug, lower case.")]] = Field(
        description="The event's own tags, else the union of its markets'.")
    tag_labels: list[str] = Field(description="The tags' labels in Polymarket's casing, parallel to `tags`.")
    market_count: Count
    price_sum: NonNegative | None = Field(
        description="Neg-risk events: the sum of the candidates' first-outcome display prices (near 1); else null.")
    leading: Leading | None = Field(description="Neg-risk events: the candidate with the highest price, "
                                                "the \"Other\" placeholder aside; else null.")
    other_candidate: ConditionId | None = Field(
        description="Neg-risk events: the market Gamma marks as the \"Other\" placeholder (`negRiskOther`), if any.")


class EventSummary(EventFields):
    """An event as listed, with its markets in compact form."""

    markets: list[CompactMarket] = Field(
        description="Neg-risk events: by first-outcome display price, highest first; others by volume.")


class EventDetail(EventFields):
    """One event, with its markets as the markets list shows them."""

    markets: list[Market] = Field(
        description="Neg-risk events: by first-outcome display price, highest first; others by volume.")


class EventList(Answer):
    events: list[EventSummary] = Field(max_length=MAX_LIMIT)
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    total: Count = Field(description="Every match of the query.")
    freshness: Freshness


class EventAnswer(Answer):
    event: EventDetail
    freshness: Freshness
