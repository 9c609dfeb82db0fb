"""Counts of what Polymarket sent that failed validation and was left out (deep health)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar

log = logging.getLogger("polymarket_api.prices")


class Rejections:
    """What Polymarket sent that failed validation and was left out, per kind, for deep health;
    each batch of them logs one warning naming the token and the fields (never the values)."""

    KINDS: ClassVar[dict[str, str]] = {
        "books": "book(s)", "book_levels": "book level(s)", "history_bodies": "price history answer(s)",
        "history_points": "price history point(s)", "samples": "sample(s) to store",
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.KINDS, 0)
        self._last: dict[str, Any] | None = None

    def add(self, kind: str, count: int, token: str | None, reason: str) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[kind] += count
            self._last = {"kind": kind, "token_id": token, "reason": reason, "at": datetime.now(UTC).isoformat()}
        log.warning("left out %d bad %s for token %s: %s", count, self.KINDS[kind], token or "(unreadable)", reason)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._counts, "last": self._last}
