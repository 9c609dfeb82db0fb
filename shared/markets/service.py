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
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import contextvars
import gc
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.core import deadline
from shared.core.cache import SingleFlight
from shared.core.config import get_settings
from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    AppError,
    BadRequest,
    ConfigError,
    DatabaseUnavailable,
    NotFound,
    ServiceUnavailable,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    retry_after_header,
)
from shared.core.freshness import Answer, Freshness
from shared.core.ids import is_condition_id, validate_condition_id
from shared.db.database import Cursor, Database, bound_transaction, get_database
from shared.markets import store
from shared.markets.facts import MarketFacts, market_facts
from shared.markets.query import SORTS, MarketQuery
from shared.markets.rows import BadMarketRow, MarketRecord, parse_market, row_label
from shared.upstream.polymarket import get_gamma

log = logging.getLogger("polymarket_api.markets")
T = TypeVar("T")

PAGE_SIZE = 100  # Gamma keyset's documented maximum
MAX_PAGES = 5_000  # 500,000 markets: far beyond the real catalogue; stops a cursor loop
# A refresh that would drop more than half the active set is more likely a broken upstream
# than a mass closure; it fails instead of marking thousands of markets inactive.
MIN_SURVIVING_SHARE = 0.5
INACTIVE_WINDOW_DAYS = 30
LOCK_WAIT_S = 60.0



# --- the in-memory snapshot ------------------------------------------------------------------


class _Unloadable(ValueError):
    """A stored row that cannot be served (an unreadable date, a number no float holds)."""


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float)):
        raise _Unloadable("not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (a huge numeric inside JSON)
        raise _Unloadable("number out of range") from None
    if not math.isfinite(number):
        raise _Unloadable("number out of range")
    return number


def _date(value: Any) -> datetime | None:
    if value is not None and not isinstance(value, datetime):  # store.UNREADABLE
        raise _Unloadable("unreadable timestamp")
    return value


def _market_json(row: dict[str, Any]) -> dict[str, Any]:
    active = bool(row["in_active_set"]) and not row["closed"]
    out = {
        "condition_id": row["condition_id"],
        "gamma_id": row["gamma_id"],
        "slug": row["slug"],
        "question": row["question"],
        "category": row["category"],
        "tags": list(row["tags"] or []),
        "event": {"id": row["event_id"], "slug": row["event_slug"], "title": row["event_title"]}
        if row["event_id"]
        else None,
        "end_date": end_date.isoformat() if (end_date := _date(row["end_date"])) else None,
        "active": active,
        "closed": bool(row["closed"]) or not row["in_active_set"],
        "accepting_orders": row["accepting_orders"],
        "volume": _num(row["volume"]),
        "volume_24h": _num(row["volume_24h"]),
        "liquidity": _num(row["liquidity"]),
        "best_bid": _num(row["best_bid"]),
        "best_ask": _num(row["best_ask"]),
        "last_trade_price": _num(row["last_trade_price"]),
        "spread": _num(row["spread"]),
        "one_day_price_change": _num(row["one_day_price_change"]),
        "outcomes": [
            {
                "outcome": o["outcome"],
                "token_id": o["token_id"],
                "price": _num(o["price"]),
            }
            for o in row["outcomes"]
        ],
        "updated_at": _date(row["updated_at"]).isoformat(),
    }
    return out


@dataclass(frozen=True)
class _Item:
    condition_id: str
    json: dict[str, Any]
    text: str  # lower-cased question + slug, for search
    tags: frozenset[str]
    active: bool
    sort_values: dict[str, float | None]


def _item(row: dict[str, Any]) -> _Item:
    body = _market_json(row)
    tags = {t.lower() for t in body["tags"]}
    if row["category"]:
        tags.add(_slug(row["category"]))
    sort_values = {name: body[column] for name, column in SORTS.items() if name != "end_date"}
    sort_values["end_date"] = row["end_date"].timestamp() if row["end_date"] else None  # checked above
    return _Item(
        condition_id=row["condition_id"],
        json=body,
        text=f"{row['question']} {row['slug'] or ''}".lower(),
        tags=frozenset(tags),
        active=body["active"],
        sort_values=sort_values,
    )


def _slug(text: str) -> str:
    return "-".join(text.lower().split())


SortKey = tuple[bool, float, str]


def _sort_key(item: _Item, sort: str, descending: bool) -> SortKey:
    value = item.sort_values[sort]
    if value is None:
        return (True, 0.0, item.condition_id)  # missing values last in either order
    return (False, -value if descending else value, item.condition_id)


@dataclass
class _Selection:
    items: list[_Item]
    keys: list[SortKey]
    # Parallel lists for filtering (ordered selections only): scanning a list of strings is
    # several times faster than reaching each item's attribute.
    texts: list[str] = field(default_factory=list)
    tags: list[frozenset[str]] = field(default_factory=list)


MAX_ROW_WARNINGS = 20  # per refresh or load: the first rows skipped are named, the rest counted


class Snapshot:
    """An immutable view of the catalogue, with memoised selections per query.

    A stored row that cannot be served is left out, counted in ``skipped`` and named in the log:
    one row never stops the catalogue from loading."""

    MAX_SELECTIONS = 64

    def __init__(self, rows: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        self.items: list[_Item] = []
        self.skipped_ids: list[str] = []
        for row in rows:
            try:
                self.items.append(_item(row))
            except (_Unloadable, TypeError, ValueError, AttributeError, KeyError) as error:
                self.skipped_ids.append(row.get("condition_id"))
                if self.skipped <= MAX_ROW_WARNINGS:
                    log.warning("stored market %s left out of the catalogue: %s", row.get("condition_id"),
                                error if isinstance(error, _Unloadable) else type(error).__name__)
        if self.skipped > MAX_ROW_WARNINGS:
            log.warning("%d more stored markets left out of the catalogue", self.skipped - MAX_ROW_WARNINGS)
        self.by_id = {item.condition_id: item for item in self.items}
        last_change = max((row["updated_at"] for row in rows if isinstance(row["updated_at"], datetime)),
                          default=None)
        # Without a recorded refresh (a state row lost or never written) the data's own last
        # change is the honest "as of": never an infinite age.
        self.as_of: datetime | None = (state or {}).get("refreshed_at") or last_change
        # Changes only when stored data changes (upserts skip identical rows), so ETags hold.
        self.version = hashlib.sha1(f"{last_change}|{len(rows)}".encode()).hexdigest()[:16]
        self.loaded_at = time.monotonic()
        self._selections: dict[tuple[Any, ...], _Selection] = {}
        self._filtered: OrderedDict[tuple[Any, ...], _Selection] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)

    def age_seconds(self) -> float:
        if self.as_of is None:
            return float("inf")
        return max(0.0, (datetime.now(UTC) - self.as_of).total_seconds())

    def _ordered(self, sort: str, descending: bool, active_only: bool) -> _Selection:
        """Every (active) item in one sort order; sorted once per snapshot, then only filtered."""
        key = ("ordered", sort, descending, active_only)
        with self._lock:
            found = self._selections.get(key)
        if found is not None:
            return found
        items = [i for i in self.items if i.active or not active_only]
        keyed = sorted(((_sort_key(i, sort, descending), i) for i in items), key=lambda pair: pair[0])
        ordered_items = [i for _, i in keyed]
        ordered = _Selection(
            items=ordered_items,
            keys=[k for k, _ in keyed],
            texts=[i.text for i in ordered_items],
            tags=[i.tags for i in ordered_items],
        )
        with self._lock:
            self._selections[key] = ordered  # at most 20 of these: 5 sorts x 2 orders x 2 scopes
        return ordered

    def select(self, query: MarketQuery) -> _Selection:
        ordered = self._ordered(query.sort, query.order == "desc", query.active_only)
        if not query.q and not query.tag:
            return ordered
        key = (query.active_only, query.q, query.tag, query.sort, query.order)
        with self._lock:
            found = self._filtered.get(key)
            if found is not None:
                self._filtered.move_to_end(key)
                return found
        # Filtering an already sorted list keeps its order: no sort per query.
        items, keys, texts, tags = ordered.items, ordered.keys, ordered.texts, ordered.tags
        positions: list[int] | None = None
        for term in query.q.lower().split() if query.q else []:
            if positions is None:
                positions = [p for p, text in enumerate(texts) if term in text]
            else:
                positions = [p for p in positions if term in texts[p]]
        if query.tag:
            tag = _slug(query.tag)
            candidates = range(len(items)) if positions is None else positions
            positions = [p for p in candidates if tag in tags[p]]
        positions = positions or []
        selection = _Selection(items=[items[p] for p in positions], keys=[keys[p] for p in positions])
        with self._lock:
            self._filtered[key] = selection
            while len(self._filtered) > self.MAX_SELECTIONS:
                self._filtered.popitem(last=False)
        return selection


# --- cursors ---------------------------------------------------------------------------------


def encode_cursor(query: MarketQuery, key: SortKey) -> str:
    raw = json.dumps({"f": query.fingerprint(), "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(query: MarketQuery, cursor: str) -> SortKey:
    invalid = BadRequest("parameter 'cursor' is not a cursor this API returned", parameter="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        missing, value, condition_id = data["k"]
        fingerprint = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(missing, bool) or not isinstance(value, (int, float)) or not isinstance(condition_id, str):
        raise invalid
    try:
        number = float(value)
    except OverflowError:  # an integer no float holds (10**309): never one of ours
        raise invalid from None
    if fingerprint != query.fingerprint():
        raise BadRequest(
            "parameter 'cursor' belongs to a different query (q, tag, sort, order or active_only changed)",
            parameter="cursor",
        )
    return (missing, number, condition_id)


# --- refresh ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshResult:
    status: str  # "refreshed" | "fresh" (someone just did it) | "busy" (another instance is at it)
    markets: int = 0
    changed: int = 0
    deactivated: int = 0
    skipped_rows: int = 0  # rows not stored: invalid, duplicate, or refused by the database
    seconds: float = 0.0
    duplicate_rows: int = 0  # of skipped_rows: a condition, Gamma or token id an earlier row had


# A crawl whose pages bring no market it has not seen for this many pages in a row is going in
# circles (a cursor that changes but leads back): it fails rather than deactivate what it missed.
MAX_STALE_PAGES = 3
MAX_PAGE_ROWS = 1_000  # we ask for 100; one source documents 1,000 as Gamma's maximum
MAX_CURSOR_CHARS = 2_048


class BadCatalogue(UpstreamBadResponse):
    """Gamma answered 200 with something that is not a catalogue page (or not a catalogue).
    ``cause`` is ours, never upstream text, so it is safe in stale reasons and health."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__("gamma", cause)

    def summary(self) -> str:
        return f"{self.kind}: {self.cause}"


class _KeysetPage(BaseModel):
    """A keyset page's shape; its rows are validated one by one, so one bad row is one skip."""

    model_config = ConfigDict(extra="ignore")

    markets: Annotated[list[Any], Field(max_length=MAX_PAGE_ROWS)]
    next_cursor: Annotated[str, Field(max_length=MAX_CURSOR_CHARS)] | None = None


@dataclass
class _Crawl:
    """What a refresh has seen. The id rule: the first row seen with a condition id, Gamma id
    or token id wins; a later row repeating one is a duplicate, skipped and counted."""

    seen: dict[str, None] = field(default_factory=dict)  # condition ids stored, in upstream order
    skipped: int = 0
    duplicates: int = 0
    ids: set[str] = field(default_factory=set)  # every well-formed condition id, stored or not
    # Condition ids whose row was skipped: their stored version stays as it was (not deactivated).
    kept: set[str] = field(default_factory=set)
    gamma_ids: set[str] = field(default_factory=set)
    token_ids: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # condition ids the database refused

    def skip(self, row: Any, problem: str, *, duplicate: bool = False) -> None:
        self.skipped += 1
        self.duplicates += duplicate
        condition_id = _condition_id_of(row)
        if condition_id is not None and condition_id not in self.seen:
            self.kept.add(condition_id)
        if self.skipped <= MAX_ROW_WARNINGS:
            log.warning("Gamma row skipped (%s): %s", row_label(row), problem)

    def add(self, record: MarketRecord) -> bool:
        """Take ``record`` unless it repeats an id an earlier row had."""
        if record.condition_id in self.seen:
            return False
        if (record.gamma_id is not None and record.gamma_id in self.gamma_ids) or any(
            token in self.token_ids for token in record.token_ids()
        ):
            return False
        self.seen[record.condition_id] = None
        if record.gamma_id is not None:
            self.gamma_ids.add(record.gamma_id)
        self.token_ids.update(record.token_ids())
        return True

    def stored(self) -> list[str]:
        refused = set(self.refused)
        return [c for c in self.seen if c not in refused]

    def finish(self) -> None:
        self.skipped += len(self.refused)
        self.kept.update(self.refused)
        if self.skipped > MAX_ROW_WARNINGS:
            log.warning("%d more Gamma rows skipped", self.skipped - MAX_ROW_WARNINGS)


def _condition_id_of(row: Any) -> str | None:
    value = row.get("conditionId") if isinstance(row, dict) else None
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if is_condition_id(value) else None


def _page(raw: Any, number: int) -> _KeysetPage:
    try:
        return _KeysetPage.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False, include_context=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "page"
        raise BadCatalogue(f"keyset page {number}: {where}: {first['msg']}") from None


def _catalogue_pages(crawl: _Crawl) -> Iterator[list[MarketRecord]]:
    """Gamma's keyset pages of open markets, parsed; bad rows are counted and skipped."""
    gamma = get_gamma()
    cursor: str | None = None
    cursors: set[str] = set()
    stale_pages = 0
    for number in range(1, MAX_PAGES + 1):
        params: dict[str, Any] = {"closed": "false", "limit": PAGE_SIZE, "include_tag": "true"}
        if cursor:
            params["after_cursor"] = cursor
        page = _page(gamma.get("/markets/keyset", params), number)
        records = []
        known = len(crawl.ids)
        for row in page.markets:
            if (condition_id := _condition_id_of(row)) is not None:
                crawl.ids.add(condition_id)
            try:
                record = parse_market(row)
            except BadMarketRow as error:
                crawl.skip(row, str(error))
                continue
            if crawl.add(record):
                records.append(record)
            else:
                crawl.skip(row, "an id an earlier row had (the first row wins)", duplicate=True)
        yield records
        cursor = page.next_cursor
        if not cursor or not page.markets:
            return
        stale_pages = stale_pages + 1 if len(crawl.ids) == known else 0
        if stale_pages >= MAX_STALE_PAGES:
            raise BadCatalogue(f"keyset cursor loops: no new market in {MAX_STALE_PAGES} pages in a row")
        if cursor in cursors:
            raise BadCatalogue("keyset cursor repeated")
        cursors.add(cursor)
    raise BadCatalogue(f"more than {MAX_PAGES} keyset pages")


_END = object()


def _prefetched(pages: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``pages`` on a helper thread, so fetching page n+1 overlaps writing page n."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    abandoned = threading.Event()

    def put(item: Any) -> None:
        while not abandoned.is_set():
            try:
                slots.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for page in pages:
                put(page)
                if abandoned.is_set():
                    return
        except BaseException as error:
            put(_Raised(error))
            return
        put(_END)

    # The request's context travels with the work, so its log line counts these upstream calls.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name="catalogue-fetch", daemon=True).start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        abandoned.set()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def _refresh_in_transaction(cur: Cursor, *, min_age_s: float) -> RefreshResult:
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
    crawl = _Crawl()
    for records in _prefetched(_catalogue_pages(crawl)):
        if deadline.remaining() == 0.0:  # pages came, but slowly: nothing more is written
            raise _refresh_deadline_passed()
        changed += store.upsert_markets(cur, records, crawl.refused)
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
    return RefreshResult(
        "refreshed", len(seen), changed, deactivated, skipped, round(time.perf_counter() - started, 2),
        crawl.duplicates,
    )


def _refresh_deadline_passed() -> UpstreamTimeout:
    limit_s = get_settings().cache.markets_refresh_deadline_s
    return UpstreamTimeout("gamma", "catalogue refresh deadline passed",
                           cause=f"the refresh passed its {limit_s:g} s deadline")


def _bounded_refresh(db: Database, min_age_s: float) -> RefreshResult:
    """The refresh transaction, never longer than MARKETS_REFRESH_DEADLINE_S: Gamma calls are
    cut at the deadline, no page is written past it, and PostgreSQL (statement, lock and idle
    timeouts) and the client (database.py's watchdog) end the transaction by it too, so the
    refresh lock is free again within seconds of it, whatever stalls."""
    limit_s = get_settings().cache.markets_refresh_deadline_s
    with deadline.within(limit_s):
        try:
            return db.run(lambda cur: _refresh_in_transaction(cur, min_age_s=min_age_s), timeout_s=limit_s)
        except UpstreamError as error:
            if deadline.remaining() == 0.0:
                raise _refresh_deadline_passed() from error
            raise


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, DatabaseUnavailable):
        return f"database unavailable ({error.code}); the catalogue is served from this instance's memory"
    if isinstance(error, UpstreamError):
        return f"Polymarket {error.upstream} refresh failed ({error.summary()})"
    if isinstance(error, AppError):
        return f"refresh failed ({error.code})"
    return "refresh failed (internal error)"


# --- the service -----------------------------------------------------------------------------

# After a failed refresh (or load), the next one that requests can start waits this long,
# doubling per consecutive failure up to the cap; a success resets it. Per instance, in memory.
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


class _Backoff:
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


def _retry_after_s(error: BaseException) -> float:
    """The Retry-After an upstream failure carries (seconds), or 0."""
    if not isinstance(error, AppError):
        return 0.0
    try:
        seconds = float(error.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0


def _load_reason(error: BaseException) -> str:
    # The class name only: exception text can carry SQL, hosts or values.
    return f"the catalogue could not be loaded from the database ({type(error).__name__})"


def _settle_gc() -> None:
    """Freeze the live heap (the new snapshot) out of the cyclic GC's scans, but never garbage.

    ``gc.freeze()`` alone made whatever garbage was pending at each load permanent (RSS grew
    with every reload). Unfreezing what the last load froze, collecting, then freezing what is
    left keeps the snapshot out of later scans and lets every old snapshot and cycle go."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class MarketsService:
    _snapshot: Snapshot | None = None
    _state: dict[str, Any] | None = None
    _flight: SingleFlight[Any] = field(default_factory=SingleFlight)
    _next_check: float = 0.0
    _last_failure: str | None = None  # the last refresh from Gamma failed
    _database_failure: str | None = None  # the database failed the last time it was asked
    _last_attempt: float = float("-inf")  # monotonic; throttles refresh=true even when attempts fail
    _watches: dict[str, deadline.Watch] = field(default_factory=dict)  # per background job in flight
    # Counts finished refreshes, so a request's early "stale" cannot overwrite a later outcome.
    _refreshes_done: int = 0
    _outcome_lock: threading.Lock = field(default_factory=threading.Lock)
    _load_failure: str | None = None  # the last load of the stored catalogue failed
    _refresh_backoff: _Backoff = field(default_factory=_Backoff)
    _load_backoff: _Backoff = field(default_factory=_Backoff)
    _last_refresh: RefreshResult | None = None  # this instance's last completed crawl
    _failed_at: datetime | None = None  # when this instance's last refresh failed
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)  # one snapshot built at a time

    # refresh ------------------------------------------------------------------------------

    def refresh(self, *, min_age_s: float | None = None) -> RefreshResult:
        """Refresh from Gamma unless another instance is at it or did it within ``min_age_s``."""
        cache = get_settings().cache
        min_age = cache.markets_refresh_min_interval_s if min_age_s is None else min_age_s
        self._last_attempt = time.monotonic()
        db = get_database()
        try:
            result = _bounded_refresh(db, min_age)
        except DatabaseUnavailable as error:
            self._database_down(error)
            raise
        except Exception as error:
            reason = _failure_reason(error)
            with self._outcome_lock:
                self._last_failure = reason
                self._refreshes_done += 1
            self._database_failure = None
            if isinstance(error, AppError):
                log.warning("markets refresh failed: %s", reason)
            else:  # a bug or an unexpected database error: keep the traceback for the logs
                log.exception("markets refresh failed: %s", reason)
            try:
                db.run(lambda cur: store.record_failure(cur, reason))
            except AppError:
                pass  # the database is the failure; nothing more to record
            self._refresh_backoff.failed(_retry_after_s(error))
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
        if result.status != "busy":
            # Committed: a failed load leaves the previous snapshot served, stale with the
            # reason (recorded by _reload), rather than failing a refresh that succeeded.
            with contextlib.suppress(Exception):
                self._reload()
        return result

    def _database_down(self, error: DatabaseUnavailable) -> None:
        # Requests keep the catalogue in memory, marked stale with this reason.
        self._database_failure = _failure_reason(error)
        log.warning("markets catalogue not checked: %s", self._database_failure)

    def _reload(self) -> Snapshot:
        """Load the stored catalogue into a new snapshot. A failure is recorded (log, deep
        health, the stale reason of what is served) and raised; the old snapshot stays."""
        with self._reload_lock:
            try:
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
                # Older than what is now served: our failed refresh's catalogue, or our failure.
                older = previous.as_of if previous is not None else self._failed_at
                if snapshot.as_of and older and snapshot.as_of > older:
                    # A newer catalogue than the one our failed refresh kept (another instance, or
                    # the timer, refreshed): that failure no longer describes what is served.
                    self._last_failure = None
                    self._refresh_backoff.succeeded()
                del previous
            _settle_gc()
            return snapshot

    @staticmethod
    def _mark_for_rewrite(condition_ids: list[str]) -> None:
        """Rows the load left out are rewritten from Gamma's next (validated) row for them."""
        try:
            get_database().run(lambda cur: store.mark_for_rewrite(cur, condition_ids))
        except Exception as error:
            log.warning("could not mark %d unloadable markets for rewrite (%s)", len(condition_ids),
                        type(error).__name__)

    def _load(self) -> tuple[Snapshot, dict[str, Any] | None]:
        def work(cur: Cursor) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            return store.load_markets(cur, INACTIVE_WINDOW_DAYS), store.read_state(cur)

        # A snapshot is millions of long-lived objects without cycles. Building it with the
        # cyclic GC paused, then freezing it out of future collections (_settle_gc), stops
        # every later allocation burst from paying for a full scan of it (tens of ms per search
        # otherwise). Freed snapshots are still reclaimed by reference counting.
        gc.disable()
        try:
            rows, state = get_database().run(work)
            return Snapshot(rows, state), state
        finally:
            gc.enable()

    def _revalidate(self) -> None:
        """Background: adopt a newer catalogue from the database, or refresh from Gamma; each
        only once its backoff after a failure has passed. Failures are recorded, never lost."""
        ttl = get_settings().cache.markets_ttl_s
        try:
            state = get_database().run(store.read_state)
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

    def _first_load(self) -> tuple[Snapshot, str]:
        """No snapshot in this instance: take the database's, or wait for the first refresh.
        Returns the snapshot and its source: ``live`` only when it came from Gamma just now."""
        stop_at = time.monotonic() + LOCK_WAIT_S
        snapshot = self._reload()
        source = "cache"
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
                state = get_database().run(store.read_state)
            except AppError:
                state = None
            if state and state["refreshed_at"]:
                return
        raise ServiceUnavailable(f"no market data is available yet: {reason}; the next attempt is in "
                                 f"{math.ceil(wait_s)} s", headers=retry_after_header(wait_s))

    def _load_first(self) -> tuple[Snapshot, str]:
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
                f"no market data is available yet: {_failure_reason(error)}", headers=error.retry_after()
            ) from error
        except FutureTimeout:
            failure = watch.failure
            if isinstance(failure, UpstreamError):
                raise ServiceUnavailable(
                    f"no market data is available yet: {_failure_reason(failure)}; the first load is "
                    "still being retried", headers=failure.retry_after()) from None
            raise ServiceUnavailable("the market catalogue is being loaded; try again shortly",
                                     headers=retry_after_header(DEFAULT_RETRY_AFTER_S)) from None
        except (ServiceUnavailable, ConfigError):
            raise
        except Exception as error:  # the stored catalogue could not be read (logged by _reload)
            raise ServiceUnavailable(
                f"no market data is available yet: {self._load_failure or _failure_reason(error)}",
                headers=retry_after_header(max(self._load_backoff.remaining(), DEFAULT_RETRY_AFTER_S)),
            ) from error

    def _forced_refresh(self) -> tuple[str, str | None]:
        """``refresh=true``: (source, stale reason). Waits for the refresh until the request's
        deadline, but not past its first failed attempt, nor past STALE_IF_ERROR_WAIT_S without
        any answer from Gamma, and not at all while Gamma's latest attempt failed: then the
        stored catalogue answers at once, stale (and says so until the refresh ends), while the
        refresh and its retries go on in the background."""
        done_before = self._refreshes_done
        failing = get_gamma().breaker.failing()  # the latest attempt failed: do not wait on another
        if self._refresh_backoff.remaining() and not self._flight.in_flight("refresh"):
            # A refresh failed moments ago: none starts before its backoff has passed.
            reason = _failure_reason(failing) if failing is not None else (
                self._last_failure or "the last catalogue refresh failed")
            with self._outcome_lock:
                self._last_failure = reason
            return "stale", reason
        future, watch = self._begin("refresh", lambda: self.refresh(min_age_s=0))
        wait_s = get_settings().cache.stale_if_error_wait_s
        if failing is not None or not watch.wait(future, wait_s, deadline.remaining(LOCK_WAIT_S)):
            failure = watch.failure or failing
            if failure is None and watch.answered:
                return "cache", None  # Gamma answers, the crawl is long: it finishes in the background
            reason = _failure_reason(failure) if failure is not None else (
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
            return "stale", _failure_reason(error)
        raise error

    def current(self, *, force_refresh: bool = False) -> tuple[Snapshot, Freshness]:
        cache = get_settings().cache
        ttl = cache.markets_ttl_s
        source, reason = "cache", None
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

    def _freshness(self, snapshot: Snapshot, source: str, reason: str | None = None) -> Freshness:
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
            # Stored rows the last load could not serve (left out of the catalogue).
            "unloadable_rows": snapshot.skipped if snapshot else 0,
            "failures_in_a_row": max(self._refresh_backoff.failures, self._load_backoff.failures),
            "retry_in_s": round(retry_in, 1) if retry_in else None,
        }

    # queries ------------------------------------------------------------------------------

    def list(self, query: MarketQuery, *, force_refresh: bool = False) -> Answer:
        after = decode_cursor(query, query.cursor) if query.cursor else None
        snapshot, freshness = self.current(force_refresh=force_refresh)
        selection = snapshot.select(query)
        start = 0 if after is None else bisect.bisect_right(selection.keys, after)
        page = selection.items[start : start + query.limit]
        more = start + query.limit < len(selection.items)
        next_cursor = encode_cursor(query, selection.keys[start + len(page) - 1]) if more and page else None
        body = {
            "markets": [item.json for item in page],
            "next_cursor": next_cursor,
            "total": len(selection.items),
        }
        etag = hashlib.sha1(
            f"{snapshot.version}|{query.fingerprint()}|{query.cursor}|{query.limit}".encode()
        ).hexdigest()
        return Answer(body, freshness, etag, get_settings().cache.markets_ttl_s)

    def get(self, condition_id: str) -> Answer:
        condition_id = validate_condition_id(condition_id)
        snapshot, freshness = self.current()
        try:
            row = get_database().run(lambda cur: store.get_market(cur, condition_id))
        except DatabaseUnavailable as error:
            return self._from_memory(snapshot, condition_id, error)
        if self._database_failure is not None:  # it answered again: that is no longer the news
            self._database_failure = None
            freshness = self._freshness(snapshot, "cache" if freshness.source == "stale" else freshness.source)
        if row is None:
            raise NotFound(f"no market with condition_id {condition_id}")
        try:
            body = _market_json(row)
            body.update(
                description=row["description"],
                enable_order_book=row["enable_order_book"],
                neg_risk=row["neg_risk"],
                tick_size=_num(row["tick_size"]),
            )
        except _Unloadable as error:
            log.warning("stored market %s cannot be served: %s", condition_id, error)
            raise NotFound(f"market {condition_id} is stored with a value that cannot be served; it is left "
                           "out until Polymarket sends it again") from None
        etag = hashlib.sha1(f"{condition_id}|{row['updated_at']}|{row['in_active_set']}".encode()).hexdigest()
        return Answer({"market": body}, freshness, etag, get_settings().cache.markets_ttl_s)

    def _from_memory(self, snapshot: Snapshot, condition_id: str, error: DatabaseUnavailable) -> Answer:
        """The database failed: the market's list fields from the in-memory catalogue, stale.

        The detail fields (description, order-book settings) live only in the database, so
        they are null. A market this instance does not hold is the database's error.
        """
        item = snapshot.by_id.get(condition_id)
        if item is None:
            raise error
        body = {**item.json, "description": None, "enable_order_book": None, "neg_risk": None, "tick_size": None}
        reason = (f"database unavailable ({error.code}); market from this instance's in-memory catalogue, "
                  "without its description and order-book settings")
        freshness = Freshness("stale", snapshot.as_of, snapshot.age_seconds(), reason)
        etag = hashlib.sha1(f"{condition_id}|{snapshot.version}|memory".encode()).hexdigest()
        return Answer({"market": body}, freshness, etag, get_settings().cache.markets_ttl_s)

    # for other features ---------------------------------------------------------------------

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
