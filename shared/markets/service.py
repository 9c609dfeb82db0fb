"""Markets use case: the active catalogue from Gamma, stored in PostgreSQL, served from memory.

- PostgreSQL is the cache of record shared by all instances; each instance holds an immutable
  in-memory ``Snapshot`` of it for fast search, sort and paging.
- A refresh pulls Gamma's keyset pages and writes them in one transaction under a
  transaction-scoped advisory lock: one refresh at a time across instances, and a refresh that
  fails halfway leaves the previous catalogue whole.
- Requests never wait on Polymarket when there is data: an expired snapshot is served while
  one background refresh runs (stale-while-revalidate); only an empty store makes them wait.
- Trust nothing that comes in: each row is validated (``shared.markets.rows``); a bad row is
  skipped, counted and named in the log, and its stored version stays; of rows sharing a
  condition, Gamma or token id the first wins. A bad page, a cursor that loops or a catalogue
  that shrinks by half fails the refresh; the previous catalogue stays, served stale with the
  reason. Failed refreshes back off (2 s doubling to 5 min, per instance), so no request can
  start more than one crawl or load per backoff; a stored row that cannot be loaded is left
  out of the snapshot and reported, never a failed load.
- A new instance loads the compact snapshot stored with the catalogue (``shared.markets.compact``)
  in one read when it was built from the rows as they are now; else the rows, and stores one.

Modules: ``snapshot`` (the in-memory catalogue, cursors), ``crawl`` (Gamma's keyset pages),
``refresh`` (the refresh transaction, backoff), ``compact``, ``store`` (SQL), ``rows`` (Gamma rows).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from shared.core import deadline
from shared.core.cache import SingleFlight, TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    AppError,
    ConfigError,
    DatabaseUnavailable,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    retry_after_header,
)
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer, Freshness, Source
from shared.core.ids import is_condition_id, validate_market_ref
from shared.db.database import Cursor, Database
from shared.markets import compact, store, trends
from shared.markets.facts import MarketFacts, market_facts
from shared.markets.query import SORTS as _QUERY_SORTS
from shared.markets.query import MarketQuery
from shared.markets.refresh import Backoff, RefreshResult, bounded_refresh, failure_reason, retry_after_s
from shared.markets.resolution import Resolutions
from shared.markets.snapshot import (
    Selection,
    Snapshot,
    Unloadable,
    decode_cursor,
    encode_cursor,
    market_json,
    number,
)

if TYPE_CHECKING:  # the client (and httpx) is imported with the first refresh
    from shared.upstream.polymarket import GammaApi

log = logging.getLogger("polymarket_api.markets")
T = TypeVar("T")

INACTIVE_WINDOW_DAYS = 30
PAGE_CACHE_ENTRIES = 256
MOVERS_WAIT_S = 30.0  # without a request deadline (tests, tools)
LOCK_WAIT_S = 60.0
# Sort name -> the JSON field it orders by (str keys: what snapshot and compact read).
SORTS: dict[str, str] = {str(name): column for name, column in _QUERY_SORTS.items()}
COMPACT_COUNTS = ("loaded", "missing", "stale", "undecodable", "written", "too_large", "write_failed")


def _load_reason(error: BaseException) -> str:
    # The class name only: exception text can carry SQL, hosts or values.
    return f"the catalogue could not be loaded from the database ({type(error).__name__})"


def _settle_gc(first: bool) -> None:
    """Freeze the live heap (the new snapshot) out of the cyclic GC's scans, but never garbage.

    ``gc.freeze()`` alone made whatever garbage was pending at each load permanent (RSS grew
    with every reload). Unfreezing what the last load froze, collecting, then freezing what is
    left keeps the snapshot out of later scans and lets every old snapshot and cycle go.

    ``first``: nothing was frozen before, and the heap was collected just before this load
    (``_collect_before_first_load``); the load itself makes no cycles, so freezing is enough.
    A full collection would scan the whole new snapshot (0.5 s at 50,000 markets) on the path
    of a new instance's first answer."""
    if not first:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _collect_before_first_load() -> bool:
    """Whether this is the process's first snapshot; if so, the (small) heap is collected now."""
    if gc.get_freeze_count():
        return False
    gc.collect()
    return True


class MarketsService:
    """One instance's catalogue. ``cache``: the freshness settings; ``database``: gives the pool
    on each use (building it may fail while the server is down, which is answered, not raised
    at construction); ``gamma``: gives the Gamma client (built, with httpx, only when a refresh
    or a forced one needs it: a catalogue loaded from PostgreSQL never does)."""

    def __init__(self, cache: CacheSettings, database: Callable[[], Database], gamma: Callable[[], GammaApi]) -> None:
        self._cache = cache
        self._database = database
        self._gamma = gamma
        self._snapshot: Snapshot | None = None
        self._state: dict[str, Any] | None = None
        self._flight: SingleFlight[Any] = SingleFlight()
        self._next_check = 0.0
        self._last_failure: str | None = None  # the last refresh from Gamma failed
        self._database_failure: str | None = None  # the database failed the last time it was asked
        self._last_attempt = float("-inf")  # monotonic; throttles refresh=true even when attempts fail
        self._watches: dict[str, deadline.Watch] = {}  # per background job in flight
        # Counts finished refreshes, so a request's early "stale" cannot overwrite a later outcome.
        self._refreshes_done = 0
        self._outcome_lock = threading.Lock()
        self._load_failure: str | None = None  # the last load of the stored catalogue failed
        self._refresh_backoff = Backoff()
        self._load_backoff = Backoff()
        self._last_refresh: RefreshResult | None = None  # this instance's last completed crawl
        self._failed_at: datetime | None = None  # when this instance's last refresh failed
        self._reload_lock = threading.Lock()  # one snapshot built at a time
        # How loads went with the stored compact snapshot (shared.markets.compact).
        self.compact_counts = dict.fromkeys(COMPACT_COUNTS, 0)
        # One background writer of compact snapshots; a newer one waiting replaces an older.
        self._compact_lock = threading.Lock()
        self._compact_pending: tuple[Snapshot, str] | None = None
        self._compact_writer: threading.Thread | None = None
        # Pages with sparklines or changes, per (snapshot, query): their reads are made once.
        self._pages: TTLCache[dict[str, Any]] = TTLCache(PAGE_CACHE_ENTRIES, cache.markets_ttl_s)
        self._volume_filtered: TTLCache[Selection] = TTLCache(32, cache.markets_ttl_s)
        self._movers_state: trends.Movers | None = None
        self._movers_lock = threading.Lock()
        # What became of the markets that left the active set (shared.markets.resolution).
        self.resolutions = Resolutions()

    # refresh ------------------------------------------------------------------------------

    def refresh(self, *, min_age_s: float | None = None) -> RefreshResult:
        """Refresh from Gamma unless another instance is at it or did it within ``min_age_s``."""
        cache = self._cache
        min_age = cache.markets_refresh_min_interval_s if min_age_s is None else min_age_s
        self._last_attempt = time.monotonic()
        db = self._database()
        try:
            result = bounded_refresh(db, self._gamma(), min_age_s=min_age, limit_s=cache.markets_refresh_deadline_s)
        except DatabaseUnavailable as error:
            self._database_down(error)
            raise
        except Exception as error:
            reason = failure_reason(error)
            with self._outcome_lock:
                self._last_failure = reason
                self._refreshes_done += 1
            self._database_failure = None
            if isinstance(error, AppError):
                log.warning("markets refresh failed: %s", reason)
            else:  # a bug or an unexpected database error: keep the traceback for the logs
                log.exception("markets refresh failed: %s", reason)
            with contextlib.suppress(AppError):  # the database is the failure; nothing more to record
                db.run(lambda cur: store.record_failure(cur, reason))
            self._refresh_backoff.failed(retry_after_s(error))
            self._failed_at = datetime.now(UTC)
            raise
        self._database_failure = None
        with self._outcome_lock:
            self._refreshes_done += 1
            if result.status == "refreshed":
                self._last_failure = None
        if result.status != "busy":
            self._refresh_backoff.succeeded()
        if result.status == "refreshed":
            self._last_refresh = result
            if result.skipped_rows:
                log.warning("markets refreshed, %d Gamma rows skipped: %s", result.skipped_rows, result)
            else:
                log.info("markets refreshed: %s", result)
            # Committed; its own transaction, and it never raises: the refresh stands whatever it meets.
            self.resolutions.run(db, self._gamma())
        if result.status != "busy":
            # Committed: a failed load leaves the previous snapshot served, stale with the
            # reason (recorded by _reload), rather than failing a refresh that succeeded.
            with contextlib.suppress(Exception):
                self._reload()
        return result

    def _database_down(self, error: DatabaseUnavailable) -> None:
        # Requests keep the catalogue in memory, marked stale with this reason.
        self._database_failure = failure_reason(error)
        log.warning("markets catalogue not checked: %s", self._database_failure)

    def _reload(self) -> Snapshot:
        """Load the stored catalogue into a new snapshot. A failure is recorded (log, deep
        health, the stale reason of what is served) and raised; the old snapshot stays."""
        with self._reload_lock:
            try:
                first = _collect_before_first_load()
                snapshot, state = self._load()
            except DatabaseUnavailable as error:
                self._database_down(error)
                raise
            except ConfigError:
                raise  # a setting, not the stored catalogue: answered as the config_error it is
            except Exception as error:
                self._load_failure = _load_reason(error)
                self._load_backoff.failed()
                log.exception("markets catalogue load failed: %s", self._load_failure)
                raise
            self._load_failure = None
            self._load_backoff.succeeded()
            if snapshot.skipped_ids:
                self._mark_for_rewrite(snapshot.skipped_ids)
            self._state = state
            self._database_failure = None
            if snapshot.items:
                previous = self._snapshot
                self._snapshot = snapshot
                self._prefetch_movers(previous, snapshot)
                # Older than what is now served: our failed refresh's catalogue, or our failure.
                older = previous.as_of if previous is not None else self._failed_at
                if snapshot.as_of and older and snapshot.as_of > older:
                    # A newer catalogue than the one our failed refresh kept (another instance, or
                    # the timer, refreshed): that failure no longer describes what is served.
                    self._last_failure = None
                    self._refresh_backoff.succeeded()
                del previous
            _settle_gc(first)
            return snapshot

    def _mark_for_rewrite(self, condition_ids: list[str]) -> None:
        """Rows the load left out are rewritten from Gamma's next (validated) row for them."""
        try:
            self._database().run(lambda cur: store.mark_for_rewrite(cur, condition_ids))
        except Exception as error:
            log.warning("could not mark %d unloadable markets for rewrite (%s)", len(condition_ids),
                        type(error).__name__)

    def _load(self) -> tuple[Snapshot, dict[str, Any] | None]:
        """The stored catalogue: its compact snapshot when that was built from the rows as they
        are now (one read), else the rows, whose snapshot is then stored for the next instance."""

        def work(cur: Cursor) -> tuple[str, str | None, memoryview | None, list[dict[str, Any]] | None,
                                       dict[str, Any] | None]:
            # Computed before the rows are read, so a snapshot built from them is never tagged
            # newer than they are.
            fingerprint = store.current_fingerprint(cur, INACTIVE_WINDOW_DAYS)
            stored, payload = store.read_stored(cur, fingerprint)
            rows = None if payload is not None else store.load_markets(cur, INACTIVE_WINDOW_DAYS)
            return fingerprint, stored, payload, rows, store.read_state(cur)

        def rows_only(cur: Cursor) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            return store.load_markets(cur, INACTIVE_WINDOW_DAYS), store.read_state(cur)

        # A snapshot is millions of long-lived objects without cycles. Building it with the
        # cyclic GC paused, then freezing it out of future collections (_settle_gc), stops
        # every later allocation burst from paying for a full scan of it (tens of ms per search
        # otherwise). Freed snapshots are still reclaimed by reference counting.
        gc.disable()
        try:
            fingerprint, stored, payload, rows, state = self._database().run(work)
            if payload is not None:
                try:
                    snapshot = compact.decode(payload, state, SORTS)
                except compact.CompactError as error:
                    self.compact_counts["undecodable"] += 1
                    log.warning("stored catalogue snapshot not used (%s); loading the markets rows", error)
                    stored = None  # replaced below
                else:
                    self.compact_counts["loaded"] += 1
                    if snapshot.skipped:
                        log.warning("%d stored markets left out of the catalogue (as when its snapshot was built)",
                                    snapshot.skipped)
                    return snapshot, state
                del payload
                rows, state = self._database().run(rows_only)
            else:
                self.compact_counts["missing" if stored is None else "stale"] += 1
            assert rows is not None  # read whenever no payload was used
            snapshot = Snapshot.from_rows(rows, state, SORTS)
            del rows
            if stored != fingerprint and snapshot.items:
                self._store_compact_later(snapshot, fingerprint)
            return snapshot, state
        finally:
            gc.enable()

    def _store_compact_later(self, snapshot: Snapshot, fingerprint: str) -> None:
        """Stores the snapshot's compact copy in the background: the load that built it answers
        first. One writer at a time; a snapshot waiting for it is replaced by a newer one."""
        with self._compact_lock:
            self._compact_pending = (snapshot, fingerprint)
            if self._compact_writer is not None and self._compact_writer.is_alive():
                return
            # Not a daemon: an instance shutting down finishes the write it started.
            self._compact_writer = threading.Thread(target=self._write_compacts, name="compact-snapshot-writer")
            self._compact_writer.start()

    def _write_compacts(self) -> None:
        while True:
            with self._compact_lock:
                pending, self._compact_pending = self._compact_pending, None
                if pending is None:
                    self._compact_writer = None
                    return
            try:
                self._store_compact(*pending)
            except Exception:  # never lost silently, never the writer's end
                self.compact_counts["write_failed"] += 1
                log.exception("catalogue snapshot not stored")
            del pending

    def wait_compact(self, timeout: float | None = None) -> bool:
        """Waits for the background compact writer (tests, benchmarks); False if still writing."""
        with self._compact_lock:
            writer = self._compact_writer
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    def _store_compact(self, snapshot: Snapshot, fingerprint: str) -> None:
        """Best effort: without it, the next new instance loads the rows, as before."""
        try:
            payload = compact.encode_parts(snapshot, SORTS)
        except compact.CompactError as error:
            self.compact_counts["too_large"] += 1
            log.warning("catalogue snapshot not stored: %s", error)
            return
        try:
            self._database().run(lambda cur: store.write_payload(cur, fingerprint, payload))
        except Exception as error:
            self.compact_counts["write_failed"] += 1
            log.warning("catalogue snapshot not stored (%s)", type(error).__name__)
            return
        self.compact_counts["written"] += 1

    def _revalidate(self) -> None:
        """Background: adopt a newer catalogue from the database, or refresh from Gamma; each
        only once its backoff after a failure has passed. Failures are recorded, never lost."""
        ttl = self._cache.markets_ttl_s
        try:
            state = self._database().run(store.read_state)
        except DatabaseUnavailable as error:
            self._database_down(error)
            return
        except Exception:
            log.exception("markets revalidation failed")
            return
        self._database_failure = None
        current = self._snapshot
        if (state and state["refreshed_at"] and current and current.as_of and state["refreshed_at"] > current.as_of
                and not self._load_backoff.remaining()):
            # Another instance (or the timer) refreshed. A failed load is recorded by _reload.
            with contextlib.suppress(Exception):
                self._reload()
            if self._snapshot and self._snapshot.age_seconds() < ttl:
                return
        if self._refresh_backoff.remaining():
            return
        # A failure is recorded by refresh() and shows as stale freshness; requests keep the old data.
        with contextlib.suppress(Exception):
            self.refresh(min_age_s=ttl)

    def _first_load(self) -> tuple[Snapshot, Source]:
        """No snapshot in this instance: take the database's, or wait for the first refresh.
        Returns the snapshot and its source: ``live`` only when it came from Gamma just now."""
        stop_at = time.monotonic() + LOCK_WAIT_S
        snapshot = self._reload()
        source: Source = "cache"
        while not snapshot.items:
            if self._refresh_backoff.remaining() and self._last_failure:
                raise ServiceUnavailable(f"no market data is available yet: {self._last_failure}")
            result = self.refresh(min_age_s=0)
            if result.status != "busy":
                snapshot = self._snapshot or snapshot
                source = "live" if result.status == "refreshed" else "cache"
                break
            if time.monotonic() > stop_at:
                raise ServiceUnavailable("the market catalogue is being loaded; try again shortly")
            time.sleep(0.5)  # another instance holds the refresh lock: wait for its commit
            snapshot = self._reload()
        if not snapshot.items:
            raise ServiceUnavailable("no market data is available yet")
        return snapshot, source

    def _begin(self, key: str, job: Callable[[], T]) -> tuple[Future[T], deadline.Watch]:
        """Start (or join) a background job, with the watch that reports its failed attempts."""
        watch = deadline.Watch()
        # The request's context goes along, so its log line counts the job's upstream calls;
        # its deadline does not: the job outlives the request.
        context = contextvars.copy_context()

        def run() -> T:
            with deadline.unbounded(), watch.watching():
                return job()

        def watched() -> T:
            return context.run(run)

        future, leader = self._flight.begin(key, watched)
        if leader:
            self._watches[key] = watch
        return future, self._watches.get(key, watch)

    def _first_load_allowed(self) -> None:
        """Raises 503 while a failed first load backs off, unless another instance has stored a
        catalogue since (checked at most every 2 s): that one is loaded, without a crawl."""
        wait_s = max(self._refresh_backoff.remaining(), self._load_backoff.remaining())
        reason = self._last_failure or self._load_failure
        if not wait_s or not reason:
            return
        if not self._load_backoff.remaining() and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + 2.0
            try:
                state = self._database().run(store.read_state)
            except AppError:
                state = None
            if state and state["refreshed_at"]:
                return
        raise ServiceUnavailable(f"no market data is available yet: {reason}; the next attempt is in "
                                 f"{math.ceil(wait_s)} s", headers=retry_after_header(wait_s))

    def _load_first(self) -> tuple[Snapshot, Source]:
        """The first load runs in the background (it may crawl all of Gamma); the request waits
        for it only until its deadline, then answers 503 while the load goes on. After a failed
        first load, requests answer 503 at once until the backoff has passed: failing requests
        never start one crawl each."""
        if not self._flight.in_flight("first-load"):
            self._first_load_allowed()
        future, watch = self._begin("first-load", self._first_load)
        try:
            return future.result(timeout=deadline.remaining(LOCK_WAIT_S))
        except UpstreamError as error:
            raise ServiceUnavailable(
                f"no market data is available yet: {failure_reason(error)}", headers=error.retry_after()
            ) from error
        except FutureTimeout:
            failure = watch.failure
            if isinstance(failure, UpstreamError):
                raise ServiceUnavailable(
                    f"no market data is available yet: {failure_reason(failure)}; the first load is "
                    "still being retried", headers=failure.retry_after()) from None
            raise ServiceUnavailable("the market catalogue is being loaded; try again shortly",
                                     headers=retry_after_header(DEFAULT_RETRY_AFTER_S)) from None
        except (ServiceUnavailable, ConfigError):
            raise
        except Exception as error:  # the stored catalogue could not be read (logged by _reload)
            raise ServiceUnavailable(
                f"no market data is available yet: {self._load_failure or failure_reason(error)}",
                headers=retry_after_header(max(self._load_backoff.remaining(), DEFAULT_RETRY_AFTER_S)),
            ) from error

    def _forced_refresh(self) -> tuple[Source, str | None]:
        """``refresh=true``: (source, stale reason). Waits for the refresh until the request's
        deadline, but not past its first failed attempt, nor past STALE_IF_ERROR_WAIT_S without
        any answer from Gamma, and not at all while Gamma's latest attempt failed: then the
        stored catalogue answers at once, stale (and says so until the refresh ends), while the
        refresh and its retries go on in the background."""
        done_before = self._refreshes_done
        failing = self._gamma().breaker.failing()  # the latest attempt failed: do not wait on another
        if self._refresh_backoff.remaining() and not self._flight.in_flight("refresh"):
            # A refresh failed moments ago: none starts before its backoff has passed.
            reason = failure_reason(failing) if failing is not None else (
                self._last_failure or "the last catalogue refresh failed")
            with self._outcome_lock:
                self._last_failure = reason
            return "stale", reason
        future, watch = self._begin("refresh", lambda: self.refresh(min_age_s=0))
        wait_s = self._cache.stale_if_error_wait_s
        if failing is not None or not watch.wait(future, wait_s, deadline.remaining(LOCK_WAIT_S)):
            failure = watch.failure or failing
            if failure is None and watch.answered:
                return "cache", None  # Gamma answers, the crawl is long: it finishes in the background
            reason = failure_reason(failure) if failure is not None else (
                f"Polymarket gamma refresh failed (timeout: no answer within {wait_s:g} s); "
                "the refresh goes on in the background")
            with self._outcome_lock:
                if self._refreshes_done == done_before:  # what every request says until it ends
                    self._last_failure = reason
            return "stale", reason
        error = future.exception()
        if error is None:
            if self._load_failure is not None:  # stored, but this instance still serves the old one
                return "stale", self._load_failure
            return ("live" if future.result().status == "refreshed" else "cache"), None
        if isinstance(error, (UpstreamError, ServiceUnavailable)):
            return "stale", failure_reason(error)
        raise error

    def current(self, *, force_refresh: bool = False) -> tuple[Snapshot, Freshness]:
        cache = self._cache
        ttl = cache.markets_ttl_s
        source: Source = "cache"
        reason: str | None = None
        snapshot = self._snapshot
        if snapshot is None:
            snapshot, source = self._load_first()
        elif snapshot.age_seconds() > ttl and time.monotonic() >= self._next_check and not force_refresh:
            self._next_check = time.monotonic() + 2.0  # at most one check every 2 s
            self._flight.start("revalidate", self._revalidate)
        if force_refresh and source != "live" and self._refresh_allowed(cache.markets_refresh_min_interval_s):
            source, reason = self._forced_refresh()
            snapshot = self._snapshot or snapshot
        return snapshot, self._freshness(snapshot, source, reason)

    def _refresh_allowed(self, min_interval_s: int) -> bool:
        if time.monotonic() - self._last_attempt < min_interval_s:
            return False
        state = self._state
        if state and state.get("last_attempt_at"):
            age = (datetime.now(UTC) - state["last_attempt_at"]).total_seconds()
            if age < min_interval_s:
                return False
        return True

    def _served_failure(self) -> str | None:
        """Why what is served may be old. A failed load of the stored catalogue comes first: it
        is why this instance still serves an older one, whatever failed after it."""
        return self._load_failure or self._database_failure or self._last_failure

    def _freshness(self, snapshot: Snapshot, source: Source, reason: str | None = None) -> Freshness:
        age = snapshot.age_seconds()
        reason = reason or self._served_failure()
        state = self._state or {}
        if reason is None and state.get("last_error_at") and (
            state.get("refreshed_at") is None or state["last_error_at"] > state["refreshed_at"]
        ):
            reason = state.get("last_error")
        if reason and source != "live":
            return Freshness("stale", snapshot.as_of, age, reason)
        return Freshness(source, snapshot.as_of, age)

    def status(self) -> dict[str, Any]:
        """For /api/health?deep=true: this instance's catalogue, without any I/O."""
        snapshot = self._snapshot
        last = self._last_refresh
        retry_in = max(self._refresh_backoff.remaining(), self._load_backoff.remaining())
        return {
            "loaded": snapshot is not None,
            "as_of": snapshot.as_of.isoformat() if snapshot and snapshot.as_of else None,
            "age_seconds": round(snapshot.age_seconds(), 1) if snapshot else None,
            "markets": len(snapshot.items) if snapshot else 0,
            "refreshing": self._flight.in_flight("revalidate") or self._flight.in_flight("refresh"),
            "last_error": self._served_failure(),
            # This instance's last completed crawl: Gamma rows not stored (invalid, duplicate ids).
            "skipped_rows": last.skipped_rows if last else 0,
            "duplicate_rows": last.duplicate_rows if last else 0,
            "captures": last.captures if last else 0,
            "skipped_captures": last.captures_skipped if last else 0,
            # Stored rows the last load could not serve (left out of the catalogue).
            "unloadable_rows": snapshot.skipped if snapshot else 0,
            "failures_in_a_row": max(self._refresh_backoff.failures, self._load_backoff.failures),
            "retry_in_s": round(retry_in, 1) if retry_in else None,
            "compact_snapshot": dict(self.compact_counts),
            "resolution": self.resolutions.status(),
        }

    # queries ------------------------------------------------------------------------------

    def list(self, query: MarketQuery, *, force_refresh: bool = False) -> Answer:
        after = decode_cursor(query, query.cursor) if query.cursor else None
        snapshot, freshness = self.current(force_refresh=force_refresh)
        mover = trends.MOVER_SORTS.get(query.sort)
        if mover is not None:
            self._order_movers(snapshot, query, *mover)
        selection = snapshot.select(query)
        if query.min_volume_24h is not None:
            selection = self._min_volume(snapshot, query, selection)
        start = 0 if after is None else bisect.bisect_right(selection.keys, after)
        page = selection.items[start : start + query.limit]
        more = start + query.limit < len(selection.items)
        next_cursor = encode_cursor(query, selection.keys[start + len(page) - 1]) if more and page else None
        # Sparklines and changes follow the captures of the snapshot's refresh: its time is in the tag.
        extra = (query.sparkline, snapshot.as_of) if query.sparkline or mover else ()
        etag = make_etag(snapshot.version, query.fingerprint(), query.cursor, query.limit, *extra)
        # The page is fixed by this in-memory snapshot and the query (the ETag alone is not: rows
        # changed behind the catalogue's back keep its version).
        key = f"{snapshot.serial}:{etag}"
        hit = self._pages.get(key) if extra else None
        if hit is not None:
            return Answer(hit[0], freshness, etag, self._cache.markets_ttl_s, key)
        markets = [item.json for item in page]
        complete = True
        if mover is not None:
            changed = self._changes(snapshot, mover[0])
            markets = [{**m, "change": c.as_json() if (c := changed.get(m["condition_id"])) else None}
                       for m in markets]
        if query.sparkline:
            lines = trends.page_sparklines(self._database, markets, snapshot.as_of, query.sparkline)
            complete = lines is not None
            markets = [trends.with_sparkline(m, lines, query.sparkline) for m in markets]
        body = {"markets": markets, "next_cursor": next_cursor, "total": len(selection.items)}
        if extra and complete:
            self._pages.put(key, body)
        return Answer(body, freshness, etag, self._cache.markets_ttl_s, key if complete else None)

    # --- movers and sparklines (shared.markets.trends) -----------------------------------

    def _movers(self, snapshot: Snapshot) -> trends.Movers:
        with self._movers_lock:
            if self._movers_state is None or self._movers_state.serial != snapshot.serial:
                self._movers_state = trends.Movers(snapshot.serial)
            return self._movers_state

    def _changes(self, snapshot: Snapshot, window: str) -> dict[str, trends.Change]:
        """Every market's change over ``window``, computed once per snapshot in the background;
        the request waits for it until its deadline, then answers 503 while it goes on. A failed
        read is the request's error: an order is never built from half the changes."""
        movers = self._movers(snapshot)
        ready = movers.ready(("changes", window))
        if ready is not None:
            return cast(dict[str, trends.Change], ready)
        future = self._start_changes(snapshot, window)
        try:
            return future.result(timeout=deadline.remaining(MOVERS_WAIT_S))
        except FutureTimeout:
            raise ServiceUnavailable(f"the {window} price changes of this catalogue are being computed; try again "
                                     "shortly", headers=retry_after_header(DEFAULT_RETRY_AFTER_S)) from None

    def _compute_changes(self, snapshot: Snapshot, window: str) -> dict[str, trends.Change]:
        as_of = snapshot.as_of
        if as_of is None:
            return {}
        movers = self._movers(snapshot)
        ids = [i.condition_id for i in snapshot.items]

        def prices_at(back_s: int) -> dict[str, float]:
            at = as_of - timedelta(seconds=back_s)
            return movers.once(("prices", back_s), lambda: self._database().run(
                lambda cur: trends.captured_prices(cur, ids, at)))

        def compute() -> dict[str, trends.Change]:
            gamma = [(i.condition_id, i.sort_values.get("price_change")) for i in snapshot.items]
            return trends.changes(prices_at(0), prices_at(trends.MOVER_WINDOWS[window]), gamma, window)

        return movers.once(("changes", window), compute)

    def _prefetch_movers(self, previous: Snapshot | None, snapshot: Snapshot) -> None:
        """Windows someone sorted the previous snapshot by are computed for the new one at once,
        in the background: only the first movers request ever waits for them."""
        state = self._movers_state
        if previous is None or state is None or state.serial != previous.serial:
            return
        for window in state.windows():
            self._start_changes(snapshot, window)

    def _start_changes(self, snapshot: Snapshot, window: str) -> Future[dict[str, trends.Change]]:
        """The background computation (one per snapshot and window), outliving the request."""

        def run() -> dict[str, trends.Change]:
            with deadline.unbounded():
                return self._compute_changes(snapshot, window)

        context = contextvars.copy_context()
        return self._flight.start(f"movers:{snapshot.serial}:{window}", lambda: context.run(run))

    def _order_movers(self, snapshot: Snapshot, query: MarketQuery, window: str, absolute: bool) -> None:
        """Give the snapshot its order by the change over ``window`` (once per snapshot and order)."""
        active_only = query.active_only and query.status not in ("closed", "resolved")
        descending = query.order == "desc"
        movers = self._movers(snapshot)
        order = (query.sort, descending, active_only)
        if order in movers.adopted:
            return
        changed = self._changes(snapshot, window)

        def key(item: Any) -> tuple[bool, float, str]:
            change = changed.get(item.condition_id)
            if change is None:
                return (True, 0.0, item.condition_id)  # no change known: last in either order
            value = abs(change.value) if absolute else change.value
            return (False, -value if descending else value, item.condition_id)

        keyed = sorted(((key(i), i) for i in snapshot.items if i.active or not active_only), key=lambda p: p[0])
        snapshot.adopt_order(query.sort, descending, active_only, [i for _, i in keyed], [k for k, _ in keyed])
        movers.adopted.add(order)

    def _min_volume(self, snapshot: Snapshot, query: MarketQuery, selection: Selection) -> Selection:
        """The selection's markets with at least ``min_volume_24h`` (kept per snapshot and query)."""
        key = f"{snapshot.serial}:{query.fingerprint()}"
        hit = self._volume_filtered.get(key)
        if hit is not None:
            return hit[0]
        floor = query.min_volume_24h or 0
        kept = [p for p, item in enumerate(selection.items)
                if (v := item.sort_values.get("volume_24h")) is not None and v >= floor]
        filtered = Selection(items=[selection.items[p] for p in kept], keys=[selection.keys[p] for p in kept])
        self._volume_filtered.put(key, filtered)
        return filtered

    def get(self, market: str) -> Answer:
        """One market by condition id, Gamma id or slug; by Gamma id or slug, one only Gamma has
        (an old link) is fetched once and stored (``shared.markets.lookup``)."""
        market = validate_market_ref(market)
        snapshot, freshness = self.current()
        try:
            condition_id, row = self._stored(market)
        except DatabaseUnavailable as error:
            return self._from_memory(snapshot, market, error)
        if self._database_failure is not None:  # it answered again: that is no longer the news
            self._database_failure = None
            freshness = self._freshness(snapshot, "cache" if freshness.source == "stale" else freshness.source)
        if row is None:
            raise NotFound(f"no market with condition_id {condition_id} is stored (/api/resolve?q= looks it up on "
                           "Polymarket)")
        try:
            body = market_json(row)
            body.update(
                description=row["description"],
                enable_order_book=row["enable_order_book"],
                neg_risk=row["neg_risk"],
                tick_size=number(row["tick_size"]),
            )
        except Unloadable as error:
            log.warning("stored market %s cannot be served: %s", condition_id, error)
            raise NotFound(f"market {condition_id} is stored with a value that cannot be served; it is left "
                           "out until Polymarket sends it again") from None
        etag = make_etag(condition_id, row["updated_at"], row["in_active_set"])
        return Answer({"market": body}, freshness, etag, self._cache.markets_ttl_s)

    def _stored(self, market: str) -> tuple[str, dict[str, Any] | None]:
        """(condition id, stored row); what is not stored is looked up on Gamma and stored."""
        from shared.container import get_container
        from shared.markets.lookup import market_reference_kind

        kind = market_reference_kind(market)
        if kind == "condition_id":  # stored or unknown here; /api/resolve looks condition ids up on Gamma
            return market, self._database().run(lambda cur: store.get_market(cur, market))
        condition_id = get_container().lookup.market(kind, market)  # NotFound saying what was tried
        return condition_id, self._database().run(lambda cur: store.get_market(cur, condition_id))

    def _from_memory(self, snapshot: Snapshot, market: str, error: DatabaseUnavailable) -> Answer:
        """The database failed: the market's list fields from the in-memory catalogue, stale.

        The detail fields (description, order-book settings) live only in the database, so
        they are null. A market this instance does not hold is the database's error.
        """
        item = snapshot.by_id.get(market)
        if item is None and not is_condition_id(market):  # a scan, only while the database is down
            item = next((i for i in snapshot.items if market in (i.json["slug"], i.json["gamma_id"])), None)
        if item is None:
            raise error
        condition_id = item.condition_id
        body = {**item.json, "description": None, "enable_order_book": None, "neg_risk": None, "tick_size": None}
        reason = (f"database unavailable ({error.code}); market from this instance's in-memory catalogue, "
                  "without its description and order-book settings")
        freshness = Freshness("stale", snapshot.as_of, snapshot.age_seconds(), reason)
        etag = make_etag(condition_id, snapshot.version, "memory")
        return Answer({"market": body}, freshness, etag, self._cache.markets_ttl_s)

    # --- for other features --------------------------------------------------------------

    def record(self, condition_id: str) -> MarketFacts:
        """One market as other features read it: what :meth:`get` serves (from memory while the
        database is down), typed; NotFound for an unknown market."""
        return market_facts(self.get(condition_id).body["market"])


def get_markets_service() -> MarketsService:
    from shared.container import get_container

    return get_container().markets


def reset_markets_service() -> None:
    from shared.container import get_container

    get_container().reset("markets")
