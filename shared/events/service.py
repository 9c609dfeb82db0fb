"""Events use case: Polymarket's events (one question, one or many candidate markets), served
from an in-memory catalogue built from what the markets refresh stores.

- No extra upstream calls for the catalogue: each Gamma market row carries its parent event,
  and ``shared.markets.store`` keeps one ``events`` row per event. The catalogue is built from
  the markets snapshot in memory (the markets' list JSON) and the stored event rows (one query)
  on the first events request, and again when the markets snapshot changes; never on the
  markets path, so a markets cold start does not pay for it.
- One event by id or slug is read from PostgreSQL; one never stored (an old link) is fetched
  from Gamma once by ``shared.markets.lookup`` (which the resolver uses: one read per id or
  slug, cached, a miss too; its markets stored outside the active set) and answered.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import psycopg2

from shared.core.cache import TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import AppError, NotFound
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer, Freshness
from shared.db.database import Cursor, Database
from shared.events import catalogue as cat
from shared.events import store
from shared.events.catalogue import EventsCatalogue
from shared.events.query import EventQuery
from shared.events.refs import validate_event_ref
from shared.markets import trends
from shared.markets.snapshot import STATUS_FACET, Snapshot, Unloadable, market_json

if TYPE_CHECKING:
    from shared.markets.lookup import Lookup
    from shared.markets.service import MarketsService

log = logging.getLogger("polymarket_api.events")

PAGE_CACHE_ENTRIES = 256
REBUILD_BACKOFF_S = 2.0  # a failed build is not retried by every request

OPEN_FACET = f"{STATUS_FACET}open"
# Module-level names: inside the class its ``list`` method shadows the builtin.
Rows = list[dict[str, Any]]


class SnapshotMarkets:
    """The markets' list JSON, from the markets snapshot the catalogue was last checked against."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def market_json(self, condition_id: str) -> dict[str, Any] | None:
        item = self.snapshot.by_id.get(condition_id)
        return item.json if item is not None else None


class EventsService:
    """``markets``: the markets service (its snapshot says when the stored catalogue changed);
    ``database`` and ``lookup`` (fetches an event never stored) are providers, used on demand."""

    def __init__(self, cache: CacheSettings, database: Callable[[], Database], lookup: Callable[[], Lookup],
                 markets: Callable[[], MarketsService]) -> None:
        self._cache = cache
        self._database = database
        self._lookup = lookup
        self._markets = markets
        self._catalogue: EventsCatalogue | None = None
        self._build_lock = threading.Lock()
        self._failed_at = float("-inf")  # monotonic: when the last build failed
        # Pages with sparklines, per (catalogue, query): their read is made once.
        self._pages: TTLCache[dict[str, Any]] = TTLCache(PAGE_CACHE_ENTRIES, cache.markets_ttl_s)
        self._failure: str | None = None

    # the catalogue --------------------------------------------------------------------------

    def catalogue(self, *, force_refresh: bool = False) -> tuple[EventsCatalogue, Freshness]:
        """The current catalogue and the freshness of the markets it was built from. A build
        that fails while a catalogue is held serves that one, stale with the reason, and is not
        tried again for REBUILD_BACKOFF_S."""
        snapshot, freshness = self._markets().current(force_refresh=force_refresh)
        current = self._catalogue
        if current is not None and current.markets_serial == snapshot.serial:
            return current, freshness
        if current is not None and time.monotonic() - self._failed_at < REBUILD_BACKOFF_S:
            return current, self._stale(freshness)
        # One build at a time; while one runs, others serve the catalogue they have.
        if current is not None and not self._build_lock.acquire(blocking=False):
            return current, freshness
        if current is None:
            self._build_lock.acquire()
        try:
            current = self._catalogue
            if current is None or current.markets_serial != snapshot.serial:
                try:
                    built = self._build(snapshot, current)
                except (AppError, psycopg2.Error) as error:
                    if current is None:
                        raise
                    self._failed_at = time.monotonic()
                    self._failure = f"the events catalogue could not be read again ({type(error).__name__})"
                    log.warning("%s; serving the one built before", self._failure)
                    return current, self._stale(freshness)
                self._failure = None
                self._catalogue = current = built
            return current, freshness
        finally:
            self._build_lock.release()

    def _stale(self, freshness: Freshness) -> Freshness:
        if freshness.source == "stale" or self._failure is None:
            return freshness
        return Freshness("stale", freshness.as_of, freshness.age_seconds, self._failure)

    def _build(self, snapshot: Snapshot, previous: EventsCatalogue | None) -> EventsCatalogue:
        """The events of the markets snapshot's markets and their stored rows (one transaction),
        unless neither changed since ``previous``. The markets' JSON is not read (a new
        instance holds it compressed): each event's is made when first served."""
        fingerprint = self._database().run(store.events_fingerprint)
        source = (snapshot.version, fingerprint)
        if previous is not None and previous.source == source:  # the same events, a new snapshot
            previous.markets_serial = snapshot.serial
            cast(SnapshotMarkets, previous.markets).snapshot = snapshot  # the old one can go
            return previous

        def work(cur: Cursor) -> tuple[list[tuple[str, str]], Rows]:
            pairs = [(c, e) for c, e in store.event_memberships(cur) if c in snapshot.by_id]
            return pairs, store.load_events(cur, sorted({e for _, e in pairs}))

        # Tens of thousands of new objects, no cycles: without the cyclic GC's passes over the
        # heap on the way (as the markets snapshot is built).
        collecting = gc.isenabled()
        gc.disable()
        try:
            pairs, events = self._database().run(work)
            grouped: dict[str, list[cat.Member]] = {}
            for condition_id, event_id in pairs:
                item = snapshot.by_id[condition_id]
                grouped.setdefault(event_id, []).append(
                    cat.Member(condition_id, item.active, OPEN_FACET in item.facets, item.sort_values))
            built = cat.build(events, grouped, SnapshotMarkets(snapshot), source=source,
                              version=make_etag(*source)[:16], markets_serial=snapshot.serial)
        finally:
            if collecting:
                gc.enable()
        log.info("events catalogue built: %d events from %d markets (%d left out)", len(built.items),
                 len(pairs), built.skipped)
        return built

    def status(self) -> dict[str, Any]:
        """For /api/health?deep=true: this instance's events catalogue, without any I/O."""
        catalogue = self._catalogue
        return {
            "loaded": catalogue is not None,
            "events": len(catalogue.items) if catalogue else 0,
            "left_out": catalogue.skipped if catalogue else 0,
            "last_error": self._failure,
        }

    # queries --------------------------------------------------------------------------------

    def list(self, query: EventQuery, *, force_refresh: bool = False) -> Answer:
        if query.cursor:
            cat.decode_cursor(query, query.cursor)  # a bad cursor is a 400 before any work
        catalogue, freshness = self.catalogue(force_refresh=force_refresh)
        page, next_cursor, total = catalogue.page(query)
        # Sparklines follow the captures of the catalogue's refresh: its time is in the tag.
        extra = (query.sparkline, freshness.as_of) if query.sparkline else ()
        etag = make_etag("events", catalogue.version, query.fingerprint(), query.cursor, query.limit, *extra)
        key = f"{catalogue.serial}:{etag}"
        events = [item.json for item in page]
        if query.sparkline:
            hit = self._pages.get(key)
            if hit is not None:
                return Answer(hit[0], freshness, etag, self._cache.markets_ttl_s, key)
            window = query.sparkline
            lines = trends.page_sparklines(self._database, [m for e in events for m in e["markets"]],
                                           freshness.as_of, window)
            events = [{**e, "markets": [trends.with_sparkline(m, lines, window) for m in e["markets"]]}
                      for e in events]
            body = {"events": events, "next_cursor": next_cursor, "total": total}
            if lines is None:  # the database failed: answered, not kept
                return Answer(body, freshness, etag, self._cache.markets_ttl_s)
            self._pages.put(key, body)
            return Answer(body, freshness, etag, self._cache.markets_ttl_s, key)
        body = {"events": events, "next_cursor": next_cursor, "total": total}
        return Answer(body, freshness, etag, self._cache.markets_ttl_s, key)

    def get(self, ref: str) -> Answer:
        """One event by Gamma id or slug, with its markets in full: from the catalogue when it
        holds the event (so a database outage does not stop it), else from the store, else
        fetched from Gamma when it was never stored."""
        ref = validate_event_ref(ref)
        catalogue, freshness = self.catalogue()
        item = catalogue.find(ref)
        if item is not None:  # as listed, from memory: no query, and its JSON made once
            body = {**item.json, "markets": item.full_markets()}
            etag = make_etag("event", item.event_id, catalogue.version)
            return Answer({"event": body}, freshness, etag, self._cache.markets_ttl_s, f"{catalogue.serial}:{etag}")
        found = self._read(ref)  # not in the catalogue: older, or never seen
        if found is None:
            self._fetch_once(ref)
            found = self._read(ref)
            if found is None:  # Gamma answered under another id or slug (its read is cached)
                raise NotFound(f"no event with id or slug {ref!r}")
        row, market_rows = found
        markets: Rows = []
        for market_row in market_rows:
            try:
                markets.append(market_json(market_row))
            except (Unloadable, TypeError, ValueError, KeyError, AttributeError) as error:
                log.warning("stored market %s left out of event %s: %s", market_row.get("condition_id"),
                            row["event_id"], type(error).__name__)
        ordered = cat.order_candidates(markets, bool(row.get("neg_risk")))
        try:
            body = cat.event_json(row, row["event_id"], ordered, cat.other_candidates(ordered))
        except Unloadable as error:
            raise NotFound(f"event {ref!r} is stored with a value that cannot be served ({error})") from None
        body["markets"] = ordered
        etag = make_etag("event", row["event_id"], row["updated_at"],
                         *sorted((m["condition_id"], m["updated_at"]) for m in markets))
        return Answer({"event": body}, freshness, etag, self._cache.markets_ttl_s)

    def _read(self, ref: str) -> tuple[dict[str, Any], Rows] | None:
        def work(cur: Cursor) -> tuple[dict[str, Any], Rows] | None:
            row = store.find_event(cur, ref)
            if row is None:
                return None
            return row, store.event_markets(cur, row["event_id"])

        return self._database().run(work)

    # on demand ------------------------------------------------------------------------------

    def _fetch_once(self, ref: str) -> None:
        """Fetch the event from Gamma and store its markets (``shared.markets.lookup``: one read
        per id or slug, cached, a miss too); NotFound when Gamma has no such event."""
        if not self._lookup().fetch_event(ref):
            raise NotFound(f"no event with id or slug {ref!r}")
