"""The model's reply, validated, and the verdict made of it.

The reply is untrusted: it is validated with pydantic (:class:`SentimentReply`, and the
completion envelope around it): the sentiment one of three, score and confidence finite and in
range, unknown fields ignored, and the summary plain text: NFKC-normalised, control characters
removed, at most ``MAX_SUMMARY_CHARS``, and **rejected** if it carries markup or a link (an HTML
tag, entity or comment, a Markdown link, a URL scheme, ``www.``, or a dotted name such as
``evil.example``). A rejected reply is a :class:`ModelError` (``bad_output``), never a guessed
value: a reply that carries markup or a link is a reply steered by the market text (or a broken
model), and its numbers are no more trustworthy than its summary, so stripping the markup and
keeping the rest would still serve an injected verdict.

A verdict that contradicts the price data it was given is kept but flagged
(:func:`consistency_flags`): ``contradicts_price_trend`` when the sentiment is bullish while the
price the prompt showed fell by at least ``TREND_MIN_CHANGE`` (bearish: rose), at a confidence
of at least ``CONTRADICTION_MIN_CONFIDENCE``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)

from shared.core.errors import ModelError
from shared.core.json_depth import deeper_than
from shared.sentiment.text import clean, markup_in

SENTIMENTS = ("bullish", "bearish", "neutral")
MAX_SUMMARY_CHARS = 600  # the prompt asks for 400; a little slack, then it is invalid output
MAX_REPLY_BYTES = 256 * 1024  # a completion is 1-3 KB; the output budget is 4,000 tokens
MAX_REPLY_NESTING = 32  # a completion's JSON is 5 levels deep
# The consistency rule (see the module docstring).
TREND_MIN_CHANGE = 0.05  # five points of probability over the window the prompt gave
CONTRADICTION_MIN_CONFIDENCE = 0.6
CONTRADICTS_PRICE_TREND = "contradicts_price_trend"
FLAGS = (CONTRADICTS_PRICE_TREND,)


# --- the model's reply -----------------------------------------------------------------------

_RANGES = {"score": (-1.0, 1.0), "confidence": (0.0, 1.0)}
_INT32_MAX = 2**31 - 1  # the token counts' column type
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,99}")


def _summary_too_long(length: int) -> ValueError:
    return ValueError(f"summary is {length} characters (at most {MAX_SUMMARY_CHARS})")


class SentimentReply(BaseModel):
    """The verdict object the model is asked for (``RESPONSE_FORMAT``); other fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sentiment: Literal["bullish", "bearish", "neutral"]
    score: Annotated[float, Field(strict=True, ge=-1.0, le=1.0, allow_inf_nan=False)]
    confidence: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
    summary: Annotated[str, Field(strict=True)]

    @field_validator("summary")
    @classmethod
    def _plain_summary(cls, value: str) -> str:
        if len(value) > 4 * MAX_SUMMARY_CHARS:  # not worth cleaning
            raise _summary_too_long(len(value))
        # NFKC first: fullwidth ＜ and the like become the characters the markup check knows.
        text = clean(unicodedata.normalize("NFKC", value))
        if not text:
            raise ValueError("summary is missing or empty")
        if len(text) > MAX_SUMMARY_CHARS:
            raise _summary_too_long(len(text))
        found = markup_in(text)
        if found is not None:
            raise ValueError(f"summary carries {found}")
        return text

    @model_validator(mode="after")
    def _score_agrees(self) -> Self:
        if (self.sentiment == "bullish" and self.score < 0) or (self.sentiment == "bearish" and self.score > 0):
            raise ValueError(f"{self.sentiment} contradicts score {self.score}")
        return self


def _or_none(value: Any, handler: Any) -> Any:
    """An accessory field that does not validate is absent, not a failed reply."""
    try:
        return handler(value)
    except ValidationError:
        return None


def _model_name(value: Any, handler: Any) -> str | None:
    return value if isinstance(value, str) and _MODEL_NAME.fullmatch(value) else None


TokenCount = Annotated[Annotated[int, Field(strict=True, ge=0, le=_INT32_MAX)] | None, WrapValidator(_or_none)]


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt_tokens: TokenCount = None
    completion_tokens: TokenCount = None
    total_tokens: TokenCount = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: str | None = None
    refusal: Any = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: _Message
    finish_reason: str | None = None


class Completion(BaseModel):
    """The parts of a chat completion this app reads; everything else is ignored."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str | None, WrapValidator(_model_name)] = None  # served and stored: a name, or nothing
    choices: Annotated[list[_Choice], Field(min_length=1)]
    usage: Annotated[_Usage | None, WrapValidator(_or_none)] = None


def _bad(detail: str) -> ModelError:
    return ModelError("bad_output", detail)


def _first_problem(error: ValidationError) -> str:
    """The first failed check as a short detail for the logs (never the reply's text)."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else None
    kind, value = first["type"], first.get("input")
    if kind == "missing":
        return f"{field} is missing" if field != "summary" else "summary is missing or empty"
    if field == "sentiment":
        return f"sentiment {str(value)[:40]!r} is not one of {', '.join(SENTIMENTS)}"
    if field in _RANGES:
        if kind in ("float_type", "float_parsing"):
            return f"{field} is not a number"
        low, high = _RANGES[field]
        return f"{field} {value!r} is outside {low}..{high}"
    if field == "summary" and kind == "string_type":
        return "summary is missing or empty"
    if kind == "value_error":  # the validators' own words
        return str(first.get("ctx", {}).get("error", first["msg"]))
    return str(first["msg"])


def _json(text: str, what: str) -> Any:
    # Bounded before parsing: a deeply nested reply must not reach the recursive parser.
    if deeper_than(text, MAX_REPLY_NESTING):
        raise _bad(f"{what} nests deeper than {MAX_REPLY_NESTING}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _bad(f"{what} is not JSON") from None


def parse_completion(body: bytes) -> Completion:
    """The chat-completion body as a :class:`Completion`; ModelError (bad_output) otherwise."""
    if len(body) > MAX_REPLY_BYTES:
        raise _bad(f"response body of {len(body)} bytes (at most {MAX_REPLY_BYTES})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("response body is not UTF-8") from None
    data = _json(text, "response body")
    if not isinstance(data, dict):
        raise _bad("response body is not a JSON object")
    try:
        return Completion.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise _bad(f"malformed completion at {'.'.join(map(str, first['loc']))}: {first['type']}") from None


def parse_reply(content: Any) -> SentimentReply:
    """The model's message as a validated :class:`SentimentReply`; ModelError otherwise."""
    if not isinstance(content, str) or not content.strip():
        raise _bad("empty reply")
    if len(content) > MAX_REPLY_BYTES:
        raise _bad(f"reply of {len(content)} characters")
    fields = _json(content, "reply")
    if not isinstance(fields, dict):
        raise _bad("reply is not a JSON object")
    try:
        return SentimentReply.model_validate(fields)
    except ValidationError as error:
        raise _bad(_first_problem(error)) from None


def parse_verdict(content: str | None) -> tuple[str, float, float, str]:
    """(sentiment, score, confidence, summary) from the model's reply; ModelError otherwise."""
    reply = parse_reply(content)
    return reply.sentiment, reply.score, reply.confidence, reply.summary


# --- the verdict -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None

    def as_json(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class PriceTrend:
    """The price move the prompt showed the model."""

    change: float  # last minus first price, in probability points
    window: str  # "1w": the week of history in the prompt; "1d": the catalogue's one-day change


@dataclass(frozen=True)
class Verdict:
    """One validated analysis, with what makes it auditable: which model and prompt produced it,
    at what price and when, what it cost, and whether it contradicts the prices it was given."""

    sentiment: str
    score: float
    confidence: float
    summary: str
    model: str  # the model the service reports (e.g. gpt-5-2025-08-07)
    deployment: str
    prompt_version: str
    outcome: str | None  # the outcome the verdict is about (the market's first)
    token_id: str | None
    display_price: float | None
    price_as_of: datetime | None
    price_source: str  # "quote" (CLOB), "catalogue" (market record) or "none"
    analyzed_at: datetime
    usage: Usage
    latency_ms: float
    price_trend: PriceTrend | None = None
    flags: tuple[str, ...] = ()


def consistency_flags(sentiment: str, confidence: float, trend: PriceTrend | None) -> tuple[str, ...]:
    """``contradicts_price_trend`` for a confident bullish verdict on a price that fell by at
    least ``TREND_MIN_CHANGE`` over the window (bearish: rose); nothing otherwise."""
    if trend is None or confidence < CONTRADICTION_MIN_CONFIDENCE:
        return ()
    if (sentiment == "bullish" and trend.change <= -TREND_MIN_CHANGE) or (
        sentiment == "bearish" and trend.change >= TREND_MIN_CHANGE
    ):
        return (CONTRADICTS_PRICE_TREND,)
    return ()


def usage_of(completion: Completion) -> Usage:
    """The completion's token counts (each None when the service did not report a valid one)."""
    usage = completion.usage
    if usage is None:
        return Usage(None, None, None)
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)

