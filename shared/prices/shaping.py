"""The JSON the prices endpoints answer with, and their ETags."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import UpstreamError
from shared.core.etag import etag
from shared.core.freshness import Freshness, Source
from shared.prices.entries import Entry
from shared.prices.history import Series
from shared.prices.quotes import Book, Quote
from shared.prices.tokens import TokenInfo


def retry_after(errors: Iterable[UpstreamError]) -> dict[str, str]:
    """The longest ``Retry-After`` of the failures, for a 503 that passes them on."""
    waits = [e.retry_after()["Retry-After"] for e in errors]
    return {"Retry-After": max(waits, key=int)} if waits else {}


def token_json(token: str, info: TokenInfo, quote: Quote | None, condition_id: str | None = None) -> dict[str, Any]:
    return {
        "token_id": token,
        "condition_id": info.condition_id or condition_id or (quote.condition_id if quote else None),
        "outcome": info.outcome,
        "outcome_index": info.outcome_index,
    }


def batch_item(token: str, entry: Entry | None, freshness: Freshness | None, info: TokenInfo,
               failure: UpstreamError | None) -> dict[str, Any]:
    """One token of a batch; ``_v`` is its version for ``batch_etag``, which takes it out."""
    item: dict[str, Any] = {"token_id": token}
    if entry is None:  # upstream failed and nothing is known
        assert failure is not None
        item.update(status="unavailable", quote=None, token=None, error={
            "code": "unavailable",
            "message": f"no price is known for this token and Polymarket is failing ({failure.kind})"})
        item["_v"] = "unavailable"
        return item
    if entry.quote is None:
        item.update(status="unknown", quote=None, token=None, error={
            "code": "not_found", "message": "unknown token: Polymarket has no order book for it"})
        item["_v"] = "unknown"
        return item
    item.update(
        status="closed" if entry.closed else "ok",
        quote=entry.quote.as_json(),
        token=token_json(token, info, entry.quote),
        freshness=freshness.as_dict() if freshness else None,
    )
    item["_v"] = f"{entry.quote.version()}|{entry.stale_reason}|{info.condition_id}|{info.outcome}"
    return item


def batch_freshness(items: list[Freshness]) -> Freshness:
    """The batch's freshness: its oldest quote, and stale if any quote is."""
    if not items:
        return Freshness("live", datetime.now(UTC), 0.0)
    stale = [f for f in items if f.source == "stale"]
    oldest = max(items, key=lambda f: f.age_seconds)
    if stale:
        reasons = sorted({f.stale_reason or "" for f in stale})
        reason = reasons[0] if len(reasons) == 1 else f"{len(stale)} of {len(items)} quotes are stale"
        return Freshness("stale", oldest.as_of, oldest.age_seconds, reason)
    source: Source = "live" if all(f.source == "live" for f in items) else "cache"
    return Freshness(source, oldest.as_of, oldest.age_seconds)


def batch_etag(items: list[dict[str, Any]]) -> str:
    """The batch's ETag from its items' versions, which it takes out of the items."""
    tag = etag(*(f"{i['token_id']}:{i['status']}:{i.get('_v')}" for i in items))
    for item in items:
        item.pop("_v", None)
    return tag


def price_etag(token: str, quote: Quote, stale_reason: str | None, info: TokenInfo, series: Series | None) -> str:
    return etag(token, quote.version(), stale_reason, info.condition_id, info.outcome,
                series.signature() if series else None)


def book_etag(token: str, book: Book, depth: int, stale_reason: str | None, info: TokenInfo) -> str:
    # A book without a hash is told apart by when it was read.
    return etag(token, book.hash, book.timestamp, book.fetched_at if not book.hash else "", depth,
                stale_reason, info.condition_id, info.outcome)
