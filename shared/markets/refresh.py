"""Refreshing the stored catalogue from Gamma: one transaction under a transaction-scoped
advisory lock (one refresh at a time across instances; a refresh that fails halfway leaves the
previous catalogue whole), bounded by MARKETS_REFRESH_DEADLINE_S, and the per-instance backoff
after failures.

A catalogue that shrinks by half, or brings no usable row, fails the refresh.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.core import deadline
from shared.core.errors import AppError, DatabaseUnavailable, UpstreamError, UpstreamTimeout
from shared.db.database import Cursor, Database, bound_transaction
from shared.history.store import CaptureCounts, record_refresh
from shared.markets import store
from shared.markets.crawl import BadCatalogue, Crawl, catalogue_pages, prefetched

if TYPE_CHECKING:  # the client (and httpx) is imported with the first refresh
    from shared.upstream.polymarket import GammaApi

log = logging.getLogger("polymarket_api.markets")

# A refresh that would drop more than half the active set is more likely a broken upstream
# than a mass closure; it fails instead of marking thousands of markets inactive.
MIN_SURVIVING_SHARE = 0.5


@dataclass(frozen=True)
class RefreshResult:
    status: str  # "refreshed" | "fresh" (someone just did it) | "busy" (another instance is at it)
    markets: int = 0
    changed: int = 0
    deactivated: int = 0
    skipped_rows: int = 0  # rows not stored: invalid, duplicate, or refused by the database
    seconds: float = 0.0
    duplicate_rows: int = 0  # of skipped_rows: a condition, Gamma or token id an earlier row had
    captures: int = 0  # open markets whose prices the history captured (shared.history)
    captures_written: int = 0  # of those, rows written: the values changed
    captures_skipped: int = 0  # bad captures, skipped and counted (the market itself is stored)



def _refresh_in_transaction(cur: Cursor, gamma: GammaApi, *, min_age_s: float, limit_s: float) -> RefreshResult:
    started = time.perf_counter()
    if not store.try_refresh_lock(cur):
        return RefreshResult("busy")
    state = store.read_state(cur)
    if state and state["refreshed_at"] is not None:
        age = (state["db_now"] - state["refreshed_at"]).total_seconds()
        if age < min_age_s:
            return RefreshResult("fresh")
    before = store.active_count(cur)
    changed = 0
    crawl = Crawl()
    captured = CaptureCounts()
    at = store.transaction_time(cur)  # the refresh's time: refreshed_at, and every capture's
    for records in prefetched(catalogue_pages(gamma, crawl)):
        if deadline.remaining() == 0.0:  # pages came, but slowly: nothing more is written
            raise _refresh_deadline_passed(limit_s)
        changed += store.upsert_markets(cur, records, crawl.refused)
        captured.add(record_refresh(cur, records, at))
        left = deadline.remaining()
        if left is not None:  # the server ends a stalled refresh by its deadline too
            bound_transaction(cur, left)
    crawl.finish()
    seen, skipped = crawl.stored(), crawl.skipped
    if not seen and skipped:
        raise BadCatalogue(f"no usable market row ({skipped} skipped)")
    if before and len(seen) < before * MIN_SURVIVING_SHARE:
        raise BadCatalogue(f"catalogue shrank from {before} to {len(seen)} markets")
    # A market whose row was skipped keeps its stored version: a bad row is not a closure.
    deactivated = store.mark_missing_inactive(cur, [*seen, *crawl.kept])
    store.record_success(cur)
    if captured.skipped:
        log.warning("price captures skipped: %s", captured.skipped)
    return RefreshResult(
        "refreshed", len(seen), changed, deactivated, skipped, round(time.perf_counter() - started, 2),
        crawl.duplicates, captured.captured, captured.written, captured.skipped_total,
    )


def _refresh_deadline_passed(limit_s: float) -> UpstreamTimeout:
    return UpstreamTimeout("gamma", "catalogue refresh deadline passed",
                           cause=f"the refresh passed its {limit_s:g} s deadline")


def bounded_refresh(db: Database, gamma: GammaApi, *, min_age_s: float, limit_s: float) -> RefreshResult:
    """The refresh transaction, never longer than MARKETS_REFRESH_DEADLINE_S: Gamma calls are
    cut at the deadline, no page is written past it, and PostgreSQL (statement, lock and idle
    timeouts) and the client (database.py's watchdog) end the transaction by it too, so the
    refresh lock is free again within seconds of it, whatever stalls. ``limit_s``: that deadline."""
    with deadline.within(limit_s):
        try:
            return db.run(
                lambda cur: _refresh_in_transaction(cur, gamma, min_age_s=min_age_s, limit_s=limit_s), timeout_s=limit_s
            )
        except UpstreamError as error:
            if deadline.remaining() == 0.0:
                raise _refresh_deadline_passed(limit_s) from error
            raise


def failure_reason(error: BaseException) -> str:
    if isinstance(error, DatabaseUnavailable):
        return f"database unavailable ({error.code}); the catalogue is served from this instance's memory"
    if isinstance(error, UpstreamError):
        return f"Polymarket {error.upstream} refresh failed ({error.summary()})"
    if isinstance(error, AppError):
        return f"refresh failed ({error.code})"
    return "refresh failed (internal error)"


# After a failed refresh (or load), the next one that requests can start waits this long,
# doubling per consecutive failure up to the cap; a success resets it. Per instance, in memory.
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


class Backoff:
    """Consecutive failures push the next attempt out (BACKOFF_BASE_S doubling to BACKOFF_MAX_S)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self._not_before = 0.0  # monotonic

    def failed(self, at_least_s: float = 0.0) -> None:
        """One more failure; ``at_least_s``: the upstream's own Retry-After, honoured up to the cap."""
        with self._lock:
            self.failures += 1
            delay = min(BACKOFF_MAX_S, max(BACKOFF_BASE_S * 2 ** min(self.failures - 1, 30), at_least_s))
            self._not_before = time.monotonic() + delay

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self._not_before = 0.0

    def remaining(self) -> float:
        return max(0.0, self._not_before - time.monotonic())


def retry_after_s(error: BaseException) -> float:
    """The Retry-After an upstream failure carries (seconds), or 0."""
    if not isinstance(error, AppError):
        return 0.0
    try:
        seconds = float(error.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0

