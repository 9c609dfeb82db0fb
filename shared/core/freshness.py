"""How fresh an answer is: the ``freshness`` object on every cached response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Source = Literal["cache", "live", "stale"]


@dataclass(frozen=True)
class Freshness:
    """``source``: ``live`` (fetched from Polymarket for this request), ``cache`` (stored data
    within its TTL, or being revalidated) or ``stale`` (the last fetch failed; this is the last
    good data, and ``stale_reason`` says what failed)."""

    source: Source
    as_of: datetime | None
    age_seconds: float
    stale_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "age_seconds": round(self.age_seconds, 1),
        }
        if self.stale_reason:
            out["stale_reason"] = self.stale_reason
        return out


@dataclass(frozen=True)
class Answer:
    """What a use case hands the HTTP layer: the body, how fresh it is, its ETag and TTL.

    ``body_key``: set only by a use case that can promise it, a key that fixes the body within
    this process (an immutable in-memory object and the query), so its JSON may be made once."""

    body: dict[str, Any]
    freshness: Freshness
    etag: str
    ttl_s: int
    body_key: str | None = None
