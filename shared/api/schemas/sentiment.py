"""Bodies of /api/markets/{condition_id}/sentiment."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.api.schemas.base import Answer, Body, ConditionId, Count, Probability, Time, TokenId, optional
from shared.api.schemas.common import Freshness
from shared.sentiment.query import HISTORY_LIMIT
from shared.sentiment.service import SERVED_FLAGS, SUMMARY_WITHHELD
from shared.sentiment.verdict import (
    CONTRADICTION_MIN_CONFIDENCE,
    CONTRADICTS_PRICE_TREND,
    MAX_SUMMARY_CHARS,
    SENTIMENTS,
    TREND_MIN_CHANGE,
)

Verdict = Literal["bullish", "bearish", "neutral"]
Flag = Literal["contradicts_price_trend", "summary_withheld"]
assert set(Verdict.__args__) == set(SENTIMENTS) and set(Flag.__args__) == set(SERVED_FLAGS)  # type: ignore[attr-defined]
TokenCount = Count | None


class PriceTrend(Body):
    """The price move the verdict was checked against; null when the prompt had none."""

    change: Annotated[float, Field(ge=-1, le=1)] = Field(description="Last minus first price over the window.")
    window: Literal["1w", "1d"] = Field(
        description="`1w`: the week of price history the prompt carried; `1d`: the catalogue's one-day change "
                    "(no history).")


class Usage(Body):
    prompt_tokens: TokenCount
    completion_tokens: TokenCount
    total_tokens: TokenCount


class Sentiment(Body):
    """One stored sentiment analysis of a market by the language model."""

    id: Annotated[int, Field(ge=1)]
    condition_id: ConditionId
    outcome: str | None = Field(description="The outcome the verdict is about (the market's first).")
    token_id: TokenId | None
    sentiment: Verdict
    score: Annotated[float, Field(ge=-1, le=1)] = Field(description="-1 strongly bearish .. 1 strongly bullish.")
    confidence: Probability
    summary: str = Field(
        min_length=1, max_length=MAX_SUMMARY_CHARS,
        description="Plain text: no control characters, markup or links (a reply with any is rejected, never "
                    "stored).")
    flags: set[Flag] = Field(description=(
        "Empty unless something about this verdict must not be taken as fact. "
        f"`{CONTRADICTS_PRICE_TREND}`: the verdict is {SENTIMENTS[0]} while the price it was given "
        f"fell by at least {TREND_MIN_CHANGE} over `price_trend.window` ({SENTIMENTS[1]}: rose), "
        f"at a confidence of at least {CONTRADICTION_MIN_CONFIDENCE}; it is kept, flagged. "
        f"`{SUMMARY_WITHHELD}`: the stored summary did not pass today's plain-text check and "
        "`summary` is a fixed text instead."))
    price_trend: PriceTrend | None
    analyzed_at: Time
    display_price: Probability | None = Field(description="The price the analysis saw.")
    price_as_of: Time | None
    price_source: Literal["quote", "catalogue", "none"]
    inputs_note: str | None = Field(description="What the analysis was based on.")
    model: str
    deployment: str
    prompt_version: str
    usage: Usage


class SentimentAnswer(Answer):
    sentiment: Sentiment
    history: list[Sentiment] = optional("With `history=true`: the newest analyses, newest first.",
                                        max_length=HISTORY_LIMIT)
    freshness: Freshness
