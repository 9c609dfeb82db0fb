"""One analysis: the prompt for a market, one model call, and the validated verdict.

The model client and its settings are the caller's (the sentiment service's, given by the
composition root), so nothing here reads settings or builds a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.config import OpenAISettings
from shared.core.errors import ModelError
from shared.core.ids import is_token_id
from shared.sentiment.prompt import (
    MAX_OUTCOME_CHARS,
    MAX_PROMPT_CHARS,
    PROMPT_VERSION,
    RESPONSE_FORMAT,
    market_data,
    messages,
    price_basis,
    price_trend,
    subject,
)
from shared.sentiment.text import plain_text
from shared.sentiment.verdict import Verdict, consistency_flags, parse_completion, parse_reply, usage_of
from shared.upstream.azure_openai import complete

if TYPE_CHECKING:
    from openai import AzureOpenAI

# The name these records have always had: log queries and alerts select on it.
log = logging.getLogger("polymarket_api.azure_openai")


def _token_id(value: Any) -> str | None:
    return value if is_token_id(value) else None


def analyze_market_sentiment(
    market: Mapping[str, Any],
    quote: Mapping[str, Any] | None,
    history: Sequence[Any] | None,
    *,
    settings: OpenAISettings,
    client: Callable[[], AzureOpenAI],
) -> Verdict:
    """Ask the deployment for a structured verdict on ``market``.

    ``market`` is the markets API's market object (question, description, outcomes with prices),
    ``quote`` the prices API's quote for its first outcome (None when unavailable: the market's
    own outcome price is used), ``history`` that token's price points (``[{"t", "p"}]`` or
    ``[(t, p)]``). ``client`` gives the model client (NotConfigured without one).
    Raises NotConfigured, or ModelError for any failure or unusable output.
    """
    model = client()
    now = datetime.now(UTC)
    data = market_data(market, quote, history, now=now)
    chat = messages(data)
    prompt_chars = sum(len(m["content"]) for m in chat)
    if prompt_chars > MAX_PROMPT_CHARS:  # the caps make this unreachable; never send an unbounded prompt
        raise ModelError("input_too_large", f"a prompt of {prompt_chars} characters")
    started = time.perf_counter()
    body = complete(model, settings, chat, RESPONSE_FORMAT)
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        completion = parse_completion(body)
        choice = completion.choices[0]
        if choice.message.refusal:
            raise ModelError("refused", "the model refused")
        if choice.finish_reason == "length":
            # Reasoning tokens count toward max_completion_tokens: the budget ran out before the answer.
            raise ModelError("truncated", f"max_completion_tokens={settings.max_completion_tokens} reached")
        if choice.finish_reason == "content_filter":
            raise ModelError("content_filter", "the reply was filtered")
        reply = parse_reply(choice.message.content)
    except ModelError as failure:
        log.warning("sentiment model output rejected for %s: %s (%s)",
                    market.get("condition_id"), failure.kind, failure.detail)
        raise
    usage = usage_of(completion)
    price, as_of, source = price_basis(market, quote)
    outcome = subject(market)
    trend = price_trend(data)
    flags = consistency_flags(reply.sentiment, reply.confidence, trend)
    if flags:
        log.warning("sentiment for %s flagged %s: %s at confidence %.2f on a %+.4f move over %s",
                    market.get("condition_id"), ",".join(flags), reply.sentiment, reply.confidence,
                    trend.change if trend else 0.0, trend.window if trend else "-")
    log.info(
        "sentiment for %s: %s (%.2f) in %.0f ms, %s tokens",
        market.get("condition_id"), reply.sentiment, reply.score, latency_ms, usage.total_tokens,
    )
    return Verdict(
        sentiment=reply.sentiment,
        score=reply.score,
        confidence=reply.confidence,
        summary=reply.summary,
        model=completion.model or settings.deployment,
        deployment=settings.deployment,
        prompt_version=PROMPT_VERSION,
        outcome=plain_text(outcome.get("outcome"), MAX_OUTCOME_CHARS),
        token_id=_token_id(outcome.get("token_id")),
        display_price=price,
        price_as_of=as_of,
        price_source=source,
        analyzed_at=now,
        usage=usage,
        latency_ms=latency_ms,
        price_trend=trend,
        flags=flags,
    )
