"""Price history: one ``GET /prices-history`` per (token, interval, fidelity) per history TTL,
merged with the stored samples and the catalogue refreshes' captures (so history outlives
upstream's ~31 days, and a market nobody asked about has one), its new points queued for
storage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from shared.core import deadline
from shared.core.cache import SingleFlight, TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import AppError, UpstreamBadResponse, UpstreamError, UpstreamNotFound, UpstreamTimeout
from shared.db.database import Cursor, Database
from shared.history.series import MAX_PERIODS, RESOLUTIONS
from shared.history.series import series as captured_series
from shared.prices import store
from shared.prices.entries import failure_reason
from shared.prices.query import HistoryQuery
from shared.prices.quotes import CLOCK_SKEW_ALLOWANCE, Point, merge_history, read_history
from shared.prices.rejections import Rejections
from shared.prices.writer import SampleWriter
from shared.upstream.polymarket import CLOB, ClobApi

log = logging.getLogger("polymarket_api.prices")

# A series is up to ~13,000 points (interval=max at fidelity 10 over 90 days): keep few of them.
HISTORY_CACHE_ENTRIES = 256
# Closed-or-unknown probe: does upstream have any history for a token it has no book for?
PROBE_QUERY = HistoryQuery(interval="max", fidelity=60)


@dataclass(frozen=True)
class Series:
    """Merged history of one (token, interval, fidelity)."""

    query: HistoryQuery
    points: list[Point]
    upstream_points: int
    stored_points: int
    start: int
    end: int
    error: UpstreamError | None = None  # upstream failed: stored points only
    retry_at: float = 0.0  # monotonic; a failed series is refetched after this

    def as_json(self) -> dict[str, Any]:
        """The ``history`` object (built once per series; callers must not modify it)."""
        return self._json

    @cached_property
    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "interval": self.query.interval,
            "fidelity": self.query.fidelity,
            "start": datetime.fromtimestamp(self.start, UTC).isoformat(),
            "end": datetime.fromtimestamp(self.end, UTC).isoformat(),
            "points": [{"t": t, "p": p} for t, p in self.points],
            "upstream_points": self.upstream_points,
            "stored_points": self.stored_points,
        }
        if self.error is not None:
            out["stale_reason"] = failure_reason(self.error, "stored history only")
        return out

    def signature(self) -> str:
        last = self.points[-1] if self.points else None
        first = self.points[0] if self.points else None
        return f"{self.query}|{len(self.points)}|{first}|{last}|{self.error is not None}"



def captured_points(cur: Cursor, token: str, start: datetime, end: datetime, period_s: int) -> list[Point]:
    """The token's history as the catalogue refreshes captured it (``shared.history``), one
    point per period of at least ``period_s`` (never finer than stored): each period's close,
    at its last second, and only periods in which a capture was taken (an unchanged stretch is the
    points around it, as upstream's own series shows it)."""
    resolution = "1d" if period_s >= 86_400 else "1h" if period_s >= 3_600 else "5m"
    if (end - start).total_seconds() / RESOLUTIONS[resolution] > MAX_PERIODS:
        resolution = "1d"
    found = captured_series(cur, [token], start, end, resolution).get(token, [])
    until = int(end.timestamp())
    # Stamped at the period's last second (its close), never past ``end``: inside the period.
    return [(min(int(p.ts.timestamp()) + p.period_s - 1, until), p.price) for p in found if p.captures]


class Histories(TTLCache[Series]):
    """The series cache, keyed on (token, query), and how a missing series is loaded."""

    def __init__(self, settings: CacheSettings, database: Callable[[], Database], clob: Callable[[], ClobApi],
                 writer: SampleWriter, rejections: Rejections) -> None:
        size = settings.price_cache_max_tokens
        super().__init__(min(size, HISTORY_CACHE_ENTRIES), settings.price_history_ttl_s)
        self.settings = settings
        self._database = database
        self._clob = clob
        self._writer = writer
        self.rejections = rejections
        # Newest upstream history point already queued for storage, per (token, fidelity).
        self._persisted: TTLCache[int] = TTLCache(min(size, HISTORY_CACHE_ENTRIES), 86_400)
        self._single: SingleFlight[Series] = SingleFlight()

    def cached(self, token: str, query: HistoryQuery) -> Series | None:
        hit = self.get((token, query))
        if hit is None:
            return None
        series = hit[0]
        if series.error is not None and time.monotonic() >= series.retry_at:
            return None
        return series

    def or_stored(self, token: str, query: HistoryQuery, force: bool) -> Series:
        """The series, asking Polymarket once at most (stored points answer if it fails)."""
        with deadline.fail_fast(self.settings.stale_if_error_wait_s):
            return self.series(token, query, force)

    def none_in_time(self, token: str, query: HistoryQuery) -> Series:
        """The request's deadline passed before its series arrived: an empty series, not cached."""
        end = int(time.time())
        start = end - query.window_s(self.settings.price_history_retention_days)
        return Series(query, [], 0, 0, start, end, UpstreamTimeout(CLOB, "history past the request deadline"))

    def series(self, token: str, query: HistoryQuery, force: bool = False) -> Series:
        if not force:
            cached = self.cached(token, query)
            if cached is not None:
                return cached

        def load() -> Series:
            # A fetch that finished between the miss above and this claim has filled the cache.
            return (None if force else self.cached(token, query)) or self._load(token, query)

        return self._single.run(("history", token, query), load)

    def _load(self, token: str, query: HistoryQuery) -> Series:
        end = int(time.time())
        start = end - query.window_s(self.settings.price_history_retention_days)
        # Upstream's clock may run a little ahead of ours: its newest point, stamped a few
        # seconds past ``end``, is kept (dropping it until our clock catches up would make the
        # last point flicker); points further ahead than the skew allowance are not trusted
        # (``read_history`` leaves them out, with every other bad point, and counts them).
        latest = end + int(CLOCK_SKEW_ALLOWANCE.total_seconds())
        upstream: list[Point] = []
        error: UpstreamError | None = None
        clob = self._clob()
        from py_clob_client_v2.clob_types import PricesHistoryParams  # loaded with the client

        params = PricesHistoryParams(market=token, interval=query.interval, fidelity=query.fidelity)
        # A request with stored data to fall back on does not wait on a CLOB whose latest attempt failed.
        failing = clob.breaker.failing() if deadline.is_fail_fast() else None
        try:
            if failing is not None:
                raise failing
            raw = clob.call(clob.client.get_prices_history, params, expect=dict, about_id=True)
        except UpstreamNotFound:
            raw = {"history": []}
        except UpstreamError as failure:
            raw, error = None, failure
        if raw is not None:
            try:
                read = read_history(raw, now=end)
            except UpstreamBadResponse as failure:
                self.rejections.add("history_bodies", 1, token, failure.detail)
                error = failure
            else:
                upstream = read.points
                self.rejections.add("history_points", read.rejected, token, read.rejection)
        self._persist(token, query, upstream)
        since, until = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(latest, UTC)

        def stored_and_captured(cur: Cursor) -> tuple[list[Point], list[Point]]:
            return (store.history_points(cur, token, since, until, query.period_s),
                    captured_points(cur, token, since, until, query.period_s))

        try:
            stored, captured = self._database().run(stored_and_captured)
        except AppError as db_error:
            log.warning("cannot read stored price history (%s)", db_error.code)
            stored, captured = [], []
        # Upstream wins its buckets, then the stored samples, then the catalogue's captures.
        stored, _ = merge_history(stored, captured, period_s=query.period_s, start=start, end=latest)
        points, from_store = merge_history(upstream, stored, period_s=query.period_s, start=start, end=latest)
        series = Series(query, points, len(points) - from_store, from_store, start, end, error,
                        time.monotonic() + self.settings.price_ttl_s)
        self.put((token, query), series)
        return series

    def _persist(self, token: str, query: HistoryQuery, points: list[Point]) -> None:
        key = (token, query.fidelity)
        hit = self._persisted.get(key)
        newest = hit[0] if hit is not None else None
        fresh = [(t, p) for t, p in points if newest is None or t > newest]
        if not fresh:
            return
        self._writer.add(
            store.Sample(token, datetime.fromtimestamp(t, UTC), p, midpoint=p, source=store.SOURCE_HISTORY)
            for t, p in fresh
        )
        self._persisted.put(key, fresh[-1][0])
