"""Stale-if-error: a read that fails is answered at once from what is known (the last book or
quote in memory, else the last stored sample), marked stale and cached for one TTL, while the
fetch is tried again in the background."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shared.core import deadline
from shared.core.cache import TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import AppError, UpstreamError
from shared.db.database import Database
from shared.prices import store
from shared.prices.entries import Entry, Outcome, failure_reason
from shared.prices.flight import BookFlight
from shared.prices.quotes import Book, quote_from_book, quote_from_sample
from shared.upstream.polymarket import ClobApi

log = logging.getLogger("polymarket_api.prices")

MAX_BACKGROUND_REFRESHES = 64  # batches of tokens refreshing after a stale answer, at once

# What is known of ``tokens`` now that ``error`` failed their fetch (None: nothing).
Fallback = Callable[[list[str], UpstreamError], dict[str, Entry | None]]


class StaleIfError:
    def __init__(self, settings: CacheSettings, clob: Callable[[], ClobApi], flight: BookFlight) -> None:
        self.settings = settings
        self._clob = clob
        self.flight = flight
        # Refreshes that go on after a request answered stale; bounded, so an outage cannot
        # queue work without limit (a token skipped now is tried by its next request).
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prices-refresh")
        self._background = 0  # refreshes submitted and not yet finished, at most MAX_BACKGROUND_REFRESHES
        self._background_lock = threading.Lock()

    def close(self) -> None:
        self._refresher.shutdown(wait=False, cancel_futures=True)

    def read(
        self, tokens: list[str], recheck: Callable[[str], Entry | None] | None, fallback: Fallback,
    ) -> tuple[dict[str, Entry], dict[str, Entry], dict[str, UpstreamError]]:
        """Stale-if-error at once: (live, stale, failed) entries for ``tokens``.

        One attempt, within STALE_IF_ERROR_WAIT_S, or none while the CLOB's latest attempt
        failed. Where that fails and ``fallback`` has stored data, that answers now and the
        refresh goes on in the background. Only where nothing is stored does the request
        retry, within what is left of its deadline.
        """
        failing = self._clob().breaker.failing()
        if failing is not None:  # the latest attempt failed: do not wait on another one
            outcomes: dict[str, Outcome] = dict.fromkeys(tokens, failing)
        else:
            with deadline.fail_fast(self.settings.stale_if_error_wait_s):
                outcomes = self.flight.read(tokens, recheck)
        live = {t: o for t, o in outcomes.items() if not isinstance(o, UpstreamError)}
        failed = {t: o for t, o in outcomes.items() if isinstance(o, UpstreamError)}
        stale: dict[str, Entry] = {}
        for error in {id(e): e for e in failed.values()}.values():
            same = [t for t, e in failed.items() if e is error]
            stale.update({t: entry for t, entry in fallback(same, error).items() if entry is not None})
        if stale:
            self._refresh_later(list(stale))
        retry = [t for t, e in failed.items() if t not in stale and e.transient]
        if retry and deadline.remaining(1.0):
            for token, outcome in self.flight.read(retry).items():
                if isinstance(outcome, UpstreamError):
                    failed[token] = outcome
                else:
                    live[token] = outcome
        return live, stale, {t: e for t, e in failed.items() if t not in stale and t not in live}

    def _refresh_later(self, tokens: list[str]) -> None:
        """Fetch ``tokens`` again in the background, with the full retry policy (no request
        deadline): the next request finds the result in the cache."""
        idle = [t for t in tokens if not self.flight.in_flight(t)]
        with self._background_lock:
            if not idle or self._background >= MAX_BACKGROUND_REFRESHES:
                return
            self._background += 1

        def done() -> None:
            with self._background_lock:
                self._background -= 1

        def run() -> None:
            try:
                self.flight.read(idle)
            except Exception:  # a background refresh must never kill its thread
                log.exception("background price refresh failed")
            finally:
                done()

        try:
            self._refresher.submit(run)
        except RuntimeError:  # shut down
            done()

    def background_refreshes(self) -> int:
        """Refreshes that requests left to the background and that have not finished yet."""
        with self._background_lock:
            return self._background


def book_fallback(books: TTLCache[tuple[Book, str | None]], tokens: list[str], error: UpstreamError
                  ) -> dict[str, Entry | None]:
    """Upstream failed: the last book in memory, kept (marked stale) for one TTL."""
    out: dict[str, Entry | None] = {}
    for token in tokens:
        old = books.get(token, allow_expired=True)
        if old is None:
            out[token] = None
            continue
        book, reason = old[0][0], failure_reason(error, "last known order book from memory")
        books.put(token, (book, reason))
        out[token] = Entry(quote_from_book(book), "memory", reason, book=book)
    return out


def quote_fallback(entries: TTLCache[Entry], database: Callable[[], Database], tokens: list[str],
                   error: UpstreamError) -> dict[str, Entry | None]:
    """Upstream failed: the last quote in memory, else the last stored sample, else None."""
    out: dict[str, Entry | None] = {}
    for token in tokens:
        hit = entries.get(token, allow_expired=True)
        if hit is not None and hit[0].quote is not None:
            entry = hit[0]
            where = "last known quote from memory" if entry.origin == "live" else (
                f"last known quote from {entry.origin}")
            out[token] = Entry(entry.quote, entry.origin if entry.origin != "live" else "memory",
                               failure_reason(error, where))
    rest = [t for t in tokens if t not in out]
    if rest:
        try:
            samples = database().run(lambda cur: store.last_samples(cur, rest))
        except AppError as db_error:
            log.warning("cannot read stored prices for a fallback (%s)", db_error.code)
            samples = {}
        for token in rest:
            row = samples.get(token)
            out[token] = None if row is None else Entry(
                quote_from_sample(token, row), "database",
                failure_reason(error, "last known quote from the database"),
            )
    for token, known in out.items():
        if known is not None:
            # Served from the cache for one TTL: an outage costs one attempt per token per TTL.
            entries.put(token, known)
    return out
