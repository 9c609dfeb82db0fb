"""What the service knows about one token's price (``Entry``), and the reasons it gives when
that is not a live quote (a closed book, a failed fetch)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from shared.core.display import PRICE_RULE_LAST_KNOWN, PRICE_RULE_NONE, PRICE_RULE_RESOLVED
from shared.core.errors import AppError, UpstreamError
from shared.core.freshness import Freshness, Source
from shared.prices.quotes import Book, Quote

# Origins of an entry without a quote (upstream has no book for the token):
UNKNOWN = "unknown"  # and nothing stored knows it: no history is fetched for it
UNVERIFIED = "unverified"  # and the database could not be asked (never cached)
CATALOGUE = "catalogue"  # the markets store knows it (a closed market): its history may have a price
RESOLVED = "resolved"  # the markets store has its market settled: the price is final (1 or 0)


@dataclass(frozen=True)
class Entry:
    """What we know about one token's price right now.

    ``quote`` None: upstream has no book and nothing else knows the token. ``quote.book`` is
    "closed" for a known token whose book is gone. ``origin`` says where the quote came from
    (live, memory, database, history, catalogue); ``stale_reason`` is set when the last fetch
    failed and this is older data.
    """

    quote: Quote | None
    origin: str = "live"
    stale_reason: str | None = None
    book: Book | None = None  # the book just read (handed to waiters; never kept in the cache)

    @property
    def closed(self) -> bool:
        return self.quote is not None and self.quote.book == "closed"

    @property
    def resolved(self) -> bool:
        return self.quote is not None and self.quote.price_rule == PRICE_RULE_RESOLVED

    def freshness(self, source: Source) -> Freshness:
        if self.quote is None:
            return Freshness(source, None, 0.0)
        age = max(0.0, (datetime.now(UTC) - self.quote.as_of).total_seconds())
        if self.resolved:  # final: never stale, whatever its age
            return Freshness(source, self.quote.as_of, age)
        if self.stale_reason:
            return Freshness("stale", self.quote.as_of, age, self.stale_reason)
        if self.closed:
            return Freshness("stale", self.quote.as_of, age, closed_reason(self.origin))
        return Freshness(source, self.quote.as_of, age)


# What one fetch of a token gave: an entry, or the upstream failure.
Outcome = Entry | UpstreamError


def closed_reason(origin: str) -> str:
    where = {
        "memory": "the last quote seen",
        "database": "stored price history",
        "history": "Polymarket price history",
        "catalogue": "the market catalogue",
    }.get(origin, origin)
    return f"order book closed (market closed or resolved); last known price from {where}"


def failure_reason(error: BaseException, where: str) -> str:
    if isinstance(error, UpstreamError):
        return f"Polymarket {error.upstream} request failed ({error.summary()}); {where}"
    if isinstance(error, AppError):
        return f"request failed ({error.code}); {where}"
    return f"request failed (internal error); {where}"


def resolved_quote(token: str, price: float, resolved_at: datetime | None) -> Quote:
    """A settled market's token: its final price, from the store, without any book."""
    at = resolved_at or datetime.now(UTC)
    return Quote(token_id=token, price=price, price_rule=PRICE_RULE_RESOLVED, midpoint=None, best_bid=None,
                 best_ask=None, spread=None, last_trade_price=None, tick_size=None, book="closed", as_of=at)


def closed_quote(quote: Quote) -> Quote:
    # A quote that had no price (a one-sided book never traded) still has none.
    rule = PRICE_RULE_LAST_KNOWN if quote.price is not None else PRICE_RULE_NONE
    return replace(quote, book="closed", price_rule=rule)
