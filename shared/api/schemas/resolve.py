"""Body of /api/resolve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.api.schemas.base import Answer, Body, ConditionId, Probability, TokenId
from shared.api.schemas.common import Freshness
from shared.api.schemas.markets import Event
from shared.markets.lookup import Kind


class ResolvedOutcome(Body):
    token_id: TokenId | None = Field(description="Null for a market without an order book.")
    outcome: str = Field(examples=["Yes"])
    price: Probability | None = Field(description="The display price (Polymarket's rule; see `price_rule`).")
    price_rule: Literal["midpoint", "last_trade", "resolved", "outcome_prices", "none"] | None = Field(
        description="How `price` was chosen: Gamma's best bid/ask midpoint, the last trade (spread over 0.10), "
                    "the settled 1 or 0, Gamma's outcome price, or no price.")


class ResolvedMarket(Body):
    condition_id: ConditionId
    gamma_id: str | None = Field(description="Gamma's market id.")
    question: str
    slug: str | None
    group_item_title: str | None = Field(description="The candidate's name within its event (neg-risk groups).")
    status: Literal["open", "closed", "resolved"]
    outcomes: list[ResolvedOutcome] = Field(description="In Polymarket's order.")


class ResolveAnswer(Answer):
    q: str = Field(description="The reference as read (a URL's slug, or the id).")
    kind: Kind = Field(description="What the input matched.")
    source: Literal["store", "upstream"] = Field(
        description="`store`: this API already held it; `upstream`: fetched from Polymarket Gamma now (and stored).")
    event: Event | None = Field(description="The markets' event, when they have one.")
    markets: list[ResolvedMarket] = Field(description="One market, or every stored market of the event.")
    freshness: Freshness
