"""What other features read of one token's prices (sentiment's prompt), typed:
``PricesService.quote_with_history``."""

from __future__ import annotations

from dataclasses import dataclass

from shared.prices.quotes import Point, Quote


@dataclass(frozen=True)
class QuoteWithHistory:
    """A token's quote and its price history over one window, as ``GET /api/prices/{token}``
    would serve them."""

    quote: Quote
    points: list[Point]  # ascending (unix seconds, price)
    stale_reason: str | None  # why the answer is stale (its quote, or its history); None when it is not
    history_stale_reason: str | None  # why the points are stored ones only (upstream's history failed)
