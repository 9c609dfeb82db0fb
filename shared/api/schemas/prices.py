"""Bodies of /api/price/{token_id}, /api/prices and /api/book/{token_id}."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.api.schemas.base import Answer, Body, Count, NonNegative, Probability, Time, TokenId, optional
from shared.api.schemas.common import Freshness
from shared.core.display import (
    PRICE_RULE_LAST_KNOWN,
    PRICE_RULE_LAST_TRADE,
    PRICE_RULE_MIDPOINT,
    PRICE_RULE_NONE,
    PRICE_RULE_RESOLVED,
)
from shared.core.ids import TOKEN_ID_RULE
from shared.prices.candles import MAX_CANDLES, Resolution
from shared.prices.query import MAX_BATCH, MAX_DEPTH, MAX_FIDELITY, Interval

PriceRule = Literal["midpoint", "last_trade", "last_known", "resolved", "none"]
assert {PRICE_RULE_MIDPOINT, PRICE_RULE_LAST_TRADE, PRICE_RULE_LAST_KNOWN, PRICE_RULE_RESOLVED, PRICE_RULE_NONE} == set(
    PriceRule.__args__)  # type: ignore[attr-defined]


class Quote(Body):
    """One outcome token's price, from one order-book read."""

    price: Probability | None = Field(
        description="Display price: the midpoint, or the last trade when the spread is wider than 0.10 "
                    "(`price_rule`); the last known price for a closed book; 1 or 0 once the market "
                    "is settled (`resolved`); null (`price_rule` `none`) when the book is one-sided or empty and "
                    "has never traded.")
    price_rule: PriceRule = Field(
        description="Which rule gave `price`: `midpoint`, `last_trade` (spread wider than 0.10 or a "
                    "one-sided book), `last_known` (closed book), `resolved` (the market settled: 1 for the "
                    "winning outcome, 0 for the others; no book is read), `none` (no price: `price` is null).")
    midpoint: Probability | None
    best_bid: Probability | None
    best_ask: Probability | None
    spread: Probability | None
    last_trade_price: Probability | None
    tick_size: Probability | None
    book: Literal["open", "closed"] = Field(
        description="`closed`: the market closed or resolved; the price is the last known.")
    book_timestamp: Time | None = Field(description="When the order book last changed.")
    as_of: Time = Field(description="When the quote was observed.")


class Token(Body):
    """What is known about a token from the market catalogue."""

    token_id: TokenId
    condition_id: str | None = Field(description="The market the token belongs to, when known.")
    outcome: str | None
    outcome_index: Count | None


class Point(Body):
    t: Count = Field(description="Unix seconds.")
    p: Probability


class History(Body):
    """Price history of one token, Polymarket's merged with stored samples."""

    interval: Interval
    fidelity: Annotated[int, Field(ge=1, le=MAX_FIDELITY)] = Field(description="Minutes per point.")
    start: Time
    end: Time
    points: list[Point] = Field(description="Ascending by time.")
    upstream_points: Count
    stored_points: Count = Field(description="Points filled from stored samples where upstream had none.")
    stale_reason: str = optional("Polymarket failed: the points are stored ones only.")


class Candle(Body):
    """One period of the display price."""

    t: Time = Field(description="The period's start (UTC).")
    period_s: Count = Field(description="Its length: the resolution, or longer where only coarser history is "
                                        "stored (hourly beyond 7 days, daily beyond the retention).")
    open: Probability
    high: Probability
    low: Probability
    close: Probability
    points: Count = Field(description="Points merged into it; 0: a captured period the catalogue refresh saw "
                                      "unchanged (only changes are stored).")
    volume: NonNegative | None = Field(
        description="The market's traded volume in the period (USDC; per market, not per outcome): the "
                    "difference of its cumulative volume from the candle before. Null for the first candle after "
                    "a gap and for `history` candles.")
    source: Literal["captures", "history"] = Field(
        description="`captures`: the catalogue refresh's; `history`: Polymarket's history or stored quote samples.")


class CandlesAnswer(Answer):
    token_id: TokenId
    resolution: Resolution
    start: Time = Field(description="`start` rounded down to the resolution.")
    end: Time = Field(description="`end` rounded up to the resolution (exclusive).")
    candles: list[Candle] = Field(max_length=MAX_CANDLES, description="Ascending; periods without a point are absent.")
    freshness: Freshness


class Level(Body):
    price: Probability
    size: NonNegative


class Side(Body):
    levels: Count
    size: NonNegative
    notional: NonNegative


class Totals(Body):
    """Of the whole book, not only `depth`."""

    bids: Side
    asks: Side


class Book(Body):
    """An order book, best levels first."""

    token_id: TokenId
    condition_id: str | None
    bids: list[Level] = Field(max_length=MAX_DEPTH, description="Best (highest) first.")
    asks: list[Level] = Field(max_length=MAX_DEPTH, description="Best (lowest) first.")
    depth: Annotated[int, Field(ge=1, le=MAX_DEPTH)]
    best_bid: Probability | None
    best_ask: Probability | None
    midpoint: Probability | None
    spread: Probability | None
    last_trade_price: Probability | None
    totals: Totals = Field(description="Of the whole book, not only `depth`.")
    tick_size: Probability | None
    min_order_size: NonNegative | None
    neg_risk: bool | None
    hash: str | None
    timestamp: Time | None = Field(description="When the book last changed.")


class PriceAnswer(Answer):
    token: Token
    quote: Quote
    history: History = optional()
    freshness: Freshness


class ItemError(Body):
    message: str


class Priced(Body):
    token_id: TokenId
    status: Literal["ok"]
    quote: Quote
    token: Token
    freshness: Freshness | None


class Closed(Priced):
    """The order book is gone (market closed or resolved): the last known price."""

    status: Literal["closed"]  # type: ignore[assignment]


class UnknownError(ItemError):
    code: Literal["not_found"]


class Unknown(Body):
    """Polymarket has no order book for it and nothing else knows the token."""

    token_id: TokenId
    status: Literal["unknown"]
    quote: None
    token: None
    error: UnknownError


class UnavailableError(ItemError):
    code: Literal["unavailable"]


class Unavailable(Body):
    """Polymarket failed and no price is stored for it."""

    token_id: TokenId
    status: Literal["unavailable"]
    quote: None
    token: None
    error: UnavailableError


class InvalidError(ItemError):
    code: Literal["bad_request"]


class Invalid(Body):
    __doc__ = f"Not a token id ({TOKEN_ID_RULE})."

    token_id: str = Field(description="The id as sent.")
    status: Literal["invalid"]
    quote: None
    token: None
    error: InvalidError


BatchItem = Annotated[Priced | Closed | Unknown | Unavailable | Invalid, Field(discriminator="status")]


class PricesAnswer(Answer):
    quotes: list[BatchItem] = Field(max_length=MAX_BATCH, description="One per distinct id, in request order.")
    count: Annotated[int, Field(ge=0, le=MAX_BATCH)]
    freshness: Freshness = Field(description="Of the oldest quote; stale if any quote is.")


class BookAnswer(Answer):
    token: Token
    book: Book
    freshness: Freshness
