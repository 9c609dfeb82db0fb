"""Prices use case: quotes, order books and price history for outcome tokens.

Round trips (see ``quotes.quote_from_book``):
* a quote is ONE upstream call, ``GET /book``: best bid/ask (the book's top levels, which the
  CLOB sends LAST), midpoint and spread computed exactly as ``/midpoint`` and ``/spread`` do,
  last trade price and tick size. The same read fills the book cache, so ``/api/book`` and
  ``/api/price`` share it;
* a batch is ONE ``POST /books`` for every requested token not fresh in the cache;
* history is ONE ``GET /prices-history`` per (token, interval, fidelity) per history TTL.

Caching: bounded LRUs per token (``PRICE_CACHE_MAX_TOKENS``); concurrent requests for a token
that is being fetched share one upstream call, whether they come from single, batch or book
requests. A failed fetch is answered from the last quote in memory, else the last stored
sample, marked stale; and that answer is cached for the TTL, so an outage costs at most one
upstream attempt per token per TTL window.

Storage: every fresh quote becomes a ``price_samples`` row keyed on (token, time the book took
that state), written in batches by a background writer so requests never wait on the
database; upstream history points are stored too, so history survives upstream forgetting it
(it keeps ~31 days). A database failure never fails a quote: samples wait in memory (bounded;
overflow is counted and logged) and are retried.

Unknown tokens: an id upstream has no book for and nothing stored knows costs one ``/book``
(or its share of one ``/books``) and no history call, and is remembered as unknown for the
quote TTL on every path (single, batch, book). A token this instance has never seen has its
book read first and its history after; a token known to exist gets both at once.

Validation (``quotes``): a bad level or history point is left out; a bad book fails only its
own token (stale from memory or the database, else 503). Both are counted in deep health
(``rejected``) with a warning naming the token.
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar

from shared.api.http import is_uint, parse_bool
from shared.core import deadline
from shared.core.cache import SingleFlight, TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    AppError,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTimeout,
    retry_after_header,
)
from shared.core.freshness import Answer, Freshness
from shared.core.ids import validate_token_id
from shared.db.database import get_database
from shared.prices import store
from shared.prices.quotes import (
    CLOCK_SKEW_ALLOWANCE,
    PRICE_RULE_LAST_KNOWN,
    PRICE_RULE_NONE,
    Book,
    HistoryQuery,
    Point,
    Quote,
    book_json,
    book_token,
    merge_history,
    parse_book,
    parse_history_query,
    quote_from_book,
    quote_from_sample,
    read_history,
)
from shared.upstream.polymarket import CLOB, get_clob

log = logging.getLogger("polymarket_api.prices")

MAX_BATCH = 100
MAX_DEPTH = 100
DEFAULT_DEPTH = 10
TOKEN_INFO_TTL_S = 300.0
TOKEN_LOOKUP_BACKOFF_S = 10.0
# A series is up to ~13,000 points (interval=max at fidelity 10 over 90 days): keep few of them.
HISTORY_CACHE_ENTRIES = 256
# Closed-or-unknown probe: does upstream have any history for a token it has no book for?
PROBE_QUERY = HistoryQuery("max", 60)
WAIT_S = 120.0  # a caller never waits longer than this on another caller's fetch
MAX_BACKGROUND_REFRESHES = 64  # batches of tokens refreshing after a stale answer, at once
PRUNE_BATCH = 10_000
PRUNE_BUDGET_S = 240.0  # the Functions timeout is 5 min; the next run carries on


class BookClosed(NotFound):
    code = "book_closed"


# Origins of an entry without a quote (upstream has no book for the token):
UNKNOWN = "unknown"  # and nothing stored knows it: no history is fetched for it
UNVERIFIED = "unverified"  # and the database could not be asked (never cached)
CATALOGUE = "catalogue"  # the markets store knows it (a closed market): its history may have a price


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


# --- entries ---------------------------------------------------------------------------------


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

    def freshness(self, source: str) -> Freshness:
        if self.quote is None:
            return Freshness(source, None, 0.0)
        age = max(0.0, (datetime.now(UTC) - self.quote.as_of).total_seconds())
        if self.stale_reason:
            return Freshness("stale", self.quote.as_of, age, self.stale_reason)
        if self.closed:
            return Freshness("stale", self.quote.as_of, age, _closed_reason(self.origin))
        return Freshness(source, self.quote.as_of, age)


def _retry_after(errors: Iterable[UpstreamError]) -> dict[str, str]:
    """The longest ``Retry-After`` of the failures, for a 503 that passes them on."""
    waits = [e.retry_after()["Retry-After"] for e in errors]
    return {"Retry-After": max(waits, key=int)} if waits else {}


def _closed_reason(origin: str) -> str:
    where = {
        "memory": "the last quote seen",
        "database": "stored price history",
        "history": "Polymarket price history",
        "catalogue": "the market catalogue",
    }.get(origin, origin)
    return f"order book closed (market closed or resolved); last known price from {where}"


def _failure_reason(error: BaseException, where: str) -> str:
    if isinstance(error, UpstreamError):
        return f"Polymarket {error.upstream} request failed ({error.summary()}); {where}"
    if isinstance(error, AppError):
        return f"request failed ({error.code}); {where}"
    return f"request failed (internal error); {where}"


def _closed(quote: Quote) -> Quote:
    # A quote that had no price (a one-sided book never traded) still has none.
    rule = PRICE_RULE_LAST_KNOWN if quote.price is not None else PRICE_RULE_NONE
    return replace(quote, book="closed", price_rule=rule)


@dataclass(frozen=True)
class TokenInfo:
    condition_id: str | None = None
    outcome: str | None = None
    outcome_index: int | None = None
    known: bool = False  # in the markets store


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
            out["stale_reason"] = _failure_reason(self.error, "stored history only")
        return out

    def signature(self) -> str:
        last = self.points[-1] if self.points else None
        first = self.points[0] if self.points else None
        return f"{self.query}|{len(self.points)}|{first}|{last}|{self.error is not None}"


Outcome = Entry | UpstreamError


def _etag(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


# --- background writer -----------------------------------------------------------------------


class SampleWriter:
    """Writes samples to ``price_samples`` in batches, off the request path.

    Samples wait in a bounded queue (oldest dropped first when full, counted and logged, never
    silently) and are retried with backoff while the database fails. Keys already written
    recently are skipped, so re-reading an unchanged book writes nothing.
    """

    def __init__(self, max_pending: int = 100_000, batch_size: int = 1_000, interval_s: float = 0.25,
                 rejections: Rejections | None = None) -> None:
        self.rejections = rejections or Rejections()
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: OrderedDict[tuple[str, datetime], store.Sample] = OrderedDict()
        self._recent: TTLCache[bool] = TTLCache(max_entries=200_000, ttl_s=6 * 3600)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    def add(self, samples: Iterable[store.Sample]) -> None:
        dropped = 0
        now = datetime.now(UTC)
        refused: list[tuple[str, str]] = []  # (token, why) of samples that could not be served back
        with self._lock:
            for sample in samples:
                if sample.key in self._pending or self._recent.get(sample.key) is not None:
                    continue
                problem = sample.problem(now)
                if problem is not None:
                    refused.append((sample.token_id, problem))
                    continue
                self._pending[sample.key] = sample
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                dropped += 1
            self.dropped += dropped
            backlog = len(self._pending)
        if refused:
            self.rejections.add("samples", len(refused), *refused[0])
        if dropped:
            log.error("price history writer dropped %d samples (queue full, %d total): %s",
                      dropped, self.dropped, self.last_error or "database slow")
        self._ensure_thread()
        if backlog >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {"pending": self.pending(), "written": self.written, "dropped": self.dropped,
                "failures": self.failures, "last_error": self.last_error}

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="price-samples-writer", daemon=True)
                self._thread.start()

    def _write_batch(self) -> bool:
        """Write the oldest batch; False when the database failed."""
        with self._write_lock:
            with self._lock:
                batch = [sample for _, sample in zip(range(self.batch_size), self._pending.values())]
            if not batch:
                return True
            try:
                added = get_database().run(lambda cur: store.insert_samples(cur, batch))
            except Exception as error:  # noqa: BLE001 - kept for retry, reported below
                self.failures += 1
                self.last_error = error.code if isinstance(error, AppError) else type(error).__name__
                log.warning("price samples not written yet (%s); %d waiting", self.last_error, self.pending())
                return False
            with self._lock:
                for sample in batch:
                    if self._pending.get(sample.key) is sample:
                        del self._pending[sample.key]
                    self._recent.put(sample.key, True)
            self.written += added
            self.last_error = None
            return True

    def _drain(self) -> bool:
        while self.pending():
            if not self._write_batch():
                return False
        return True

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            self._wake.wait(backoff or self.interval_s)
            self._wake.clear()
            if self._drain():
                backoff = 0.0
            else:
                backoff = min(30.0, max(1.0, backoff * 2))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything pending now; False if the database failed or time ran out."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline or not self._write_batch():
                return False
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.pending() and not self.flush(timeout_s):
            log.error("price history writer stopped with %d samples unwritten", self.pending())


# --- single flight over many keys ------------------------------------------------------------


class BookFlight:
    """Per-token single flight that a batch can lead for many tokens at once.

    A caller claims the tokens nobody is fetching (it must settle them) and waits on the
    futures of those already in flight, so single, batch and book requests share fetches.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[Outcome]] = {}

    def claim(self, tokens: Iterable[str]) -> tuple[dict[str, Future[Outcome]], dict[str, Future[Outcome]]]:
        mine: dict[str, Future[Outcome]] = {}
        theirs: dict[str, Future[Outcome]] = {}
        with self._lock:
            for token in tokens:
                future = self._calls.get(token)
                if future is None:
                    future = self._calls[token] = Future()
                    mine[token] = future
                else:
                    theirs[token] = future
        return mine, theirs

    def settle(self, token: str, future: Future[Outcome], outcome: Outcome | BaseException) -> None:
        with self._lock:
            if self._calls.get(token) is future:
                del self._calls[token]
        if isinstance(outcome, BaseException) and not isinstance(outcome, UpstreamError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def in_flight(self, token: str) -> bool:
        with self._lock:
            return token in self._calls


# --- the service -----------------------------------------------------------------------------


class PricesService:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        size = settings.price_cache_max_tokens
        self.entries: TTLCache[Entry] = TTLCache(size, settings.price_ttl_s)
        # Books are the biggest entries: keep fewer of them.
        self.books: TTLCache[tuple[Book, str | None]] = TTLCache(min(size, 2_000), settings.book_ttl_s)
        self.tokens: TTLCache[TokenInfo] = TTLCache(size, TOKEN_INFO_TTL_S)
        self.history: TTLCache[Series] = TTLCache(min(size, HISTORY_CACHE_ENTRIES), settings.price_history_ttl_s)
        # Newest upstream history point already queued for storage, per (token, fidelity).
        self._persisted: TTLCache[int] = TTLCache(min(size, HISTORY_CACHE_ENTRIES), 86_400)
        self._forced: TTLCache[bool] = TTLCache(size, max(settings.price_refresh_min_interval_s, 0.001))
        self._forced_lock = threading.Lock()
        self._token_lookup_retry_at = 0.0  # monotonic
        # Each token's latest upstream failure: a request that gives up waiting on a fetch
        # already under way (a background retry) names its cause, not just "timeout".
        self._failures: TTLCache[UpstreamError] = TTLCache(size, 60.0)
        self.flight = BookFlight()
        self._single: SingleFlight[Any] = SingleFlight()
        self.rejections = Rejections()
        self.writer = SampleWriter(rejections=self.rejections)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="prices")
        # Refreshes that go on after a request answered stale; bounded, so an outage cannot
        # queue work without limit (a token skipped now is tried by its next request).
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prices-refresh")
        self._background = 0  # refreshes submitted and not yet finished, at most MAX_BACKGROUND_REFRESHES
        self._background_lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        """For /api/health?deep=true: cache sizes and the history writer, without any I/O."""
        return {
            "cached_quotes": len(self.entries),
            "cached_books": len(self.books),
            "cached_histories": len(self.history),
            "quote_ttl_s": self.settings.price_ttl_s,
            "history_writer": self.writer.stats(),
            "rejected": self.rejections.stats(),
        }

    def close(self) -> None:
        self.writer.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._refresher.shutdown(wait=False, cancel_futures=True)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write pending samples now (tests, shutdown)."""
        return self.writer.flush(timeout_s)

    # --- upstream reads ------------------------------------------------------------------

    def _fetch_books(self, tokens: list[str]) -> dict[str, Book | UpstreamError | None]:
        """One round trip: ``GET /book`` for one token, ``POST /books`` for several.

        None for a token upstream has no book for (404, or left out of the batch answer). A batch
        refused as a whole with a 4xx (a 404 because one token has no book, or a 400 such as a
        batch cap) is split in two and each half asked again, down to ``GET /book`` for single
        tokens, so one unknown token cannot hide the books of the others (see ``_split_books``
        for the bound on calls). Raises UpstreamError when the call for all ``tokens`` failed;
        a half that failed otherwise carries its error per token.

        A book that fails validation is an UpstreamBadResponse for its own token only (so is a
        200 whose body is an error: the contract's "no book" is a 404). A ``/books`` answer
        holding a book that does not say readably whose it is cannot tell "left out" from
        "unreadable": the tokens missing from it are bad_body too, not "no book".
        """
        clob = get_clob()
        # ``fetched_at`` is taken when the answer is in: a book that changed while the request
        # was on its way carries a later timestamp than the request's start, and would be
        # keyed on the fetch time instead (see ``Quote.sample_time``), then stored a second
        # time under its own timestamp by the next read of the same state.
        if len(tokens) == 1:
            token = tokens[0]
            try:
                raw = clob.call(clob.client.get_order_book, token, expect=dict, about_id=True)
            except UpstreamNotFound:
                return {token: None}
            return {token: self._parse_book(raw, datetime.now(UTC), token)}
        from py_clob_client_v2.clob_types import BookParams  # loaded with the client (get_clob)

        try:
            raw_list = clob.call(clob.client.get_order_books, [BookParams(token_id=t) for t in tokens],
                                 expect=list, about_id=True)
        except (UpstreamNotFound, UpstreamRejected) as error:
            if isinstance(error, UpstreamRejected) and error.status_code == 404:
                raise  # no such route (wrong host or path): splitting cannot help
            return self._split_books(tokens)
        fetched_at = datetime.now(UTC)
        wanted = set(tokens)
        found: dict[str, Book | UpstreamError] = {}
        unreadable = 0
        for item in raw_list:
            token = book_token(item)  # response order is not guaranteed: join on asset_id
            if token is None:
                unreadable += 1
                self.rejections.add("books", 1, None, "a /books answer held a book without a readable asset_id")
            elif token in wanted and not isinstance(found.get(token), Book):
                try:
                    found[token] = self._parse_book(item, fetched_at, token)
                except UpstreamBadResponse as error:
                    found[token] = error
        missing: Book | UpstreamError | None = None
        if unreadable:
            missing = UpstreamBadResponse(CLOB, f"{unreadable} unreadable book(s) in a /books answer")
        return {token: found.get(token, missing) for token in tokens}

    def _parse_book(self, raw: Any, fetched_at: datetime, token: str) -> Book:
        """``parse_book``, counting the levels it left out, or the book it refused (raised)."""
        try:
            book = parse_book(raw, fetched_at, token)
        except UpstreamBadResponse as error:
            self.rejections.add("books", 1, token, error.detail)
            raise
        self.rejections.add("book_levels", book.rejected_levels, token, book.rejection)
        return book

    def _split_books(self, tokens: list[str]) -> dict[str, Book | UpstreamError | None]:
        """The two halves of a refused batch, each fetched (and split again if refused).

        Bound: every call either answers its tokens or is split in two, so the calls form a
        binary tree with at most n leaves: at most 2n - 1 upstream calls for a batch of n, and
        at most 1 + 2k * ceil(log2 n) when k tokens are to blame (15 for one unknown token in a
        batch of 100), each retried on transient failures only, as every call is.
        """
        middle = len(tokens) // 2
        out: dict[str, Book | UpstreamError | None] = {}
        for half in (tokens[:middle], tokens[middle:]):
            try:
                out.update(self._fetch_books(half))
            except UpstreamError as error:
                out.update(dict.fromkeys(half, error))
        return out

    def _read(self, tokens: list[str], recheck: Callable[[str], Entry | None] | None = None
              ) -> dict[str, Outcome]:
        """Fresh outcomes for ``tokens``, sharing in-flight fetches with other requests.

        ``recheck`` looks in the cache again once the fetch is ours: a fetch that finished
        between the caller's cache miss and its claim has just filled it, and a second upstream
        call would break "one fetch per token per TTL window".
        """
        mine, theirs = self.flight.claim(tokens)
        outcomes: dict[str, Outcome] = {}
        if mine and recheck is not None:
            for token in list(mine):
                entry = recheck(token)
                if entry is not None:
                    self.flight.settle(token, mine.pop(token), entry)
                    outcomes[token] = entry
        if mine:
            try:
                results = self._lead(list(mine))
            except BaseException as error:
                for token, future in mine.items():
                    self.flight.settle(token, future, error)
                raise
            for token, future in mine.items():
                self.flight.settle(token, future, results[token])
            outcomes.update(results)
        for token, future in theirs.items():
            try:
                outcomes[token] = future.result(timeout=deadline.remaining(WAIT_S))
            except FutureTimeout:
                known = self._failures.get(token)
                outcomes[token] = known[0] if known else UpstreamTimeout(CLOB, "waiting for another fetch")
        for token, outcome in outcomes.items():
            if isinstance(outcome, UpstreamError):
                self._failures.put(token, outcome)
        return outcomes

    def _lead(self, tokens: list[str]) -> dict[str, Outcome]:
        try:
            books = self._fetch_books(tokens)
        except UpstreamError as error:
            return dict.fromkeys(tokens, error)
        results: dict[str, Outcome] = {}
        samples: list[store.Sample] = []
        for token, book in books.items():
            if isinstance(book, UpstreamError):
                results[token] = book
                continue
            if book is None:
                continue
            quote = quote_from_book(book)
            self.entries.put(token, Entry(quote))
            self.books.put(token, (book, None))
            results[token] = Entry(quote, book=book)
            if quote.price is not None:
                samples.append(store.Sample(
                    token, quote.sample_time, quote.price, quote.midpoint, quote.best_bid, quote.best_ask,
                    quote.spread, quote.last_trade_price, store.SOURCE_QUOTE,
                ))
        self.writer.add(samples)
        missing = [token for token, book in books.items() if book is None]
        if missing:
            results.update(self._resolve_missing(missing))
        return results

    def _resolve_missing(self, tokens: list[str]) -> dict[str, Entry]:
        """Upstream has no book: a closed market's token (last known price) or an unknown one."""
        resolved: dict[str, Entry] = {}
        for token in tokens:
            previous = self.entries.get(token, allow_expired=True)
            if previous is not None and previous[0].quote is not None:
                entry = previous[0]
                origin = "memory" if entry.origin == "live" else entry.origin
                resolved[token] = Entry(_closed(entry.quote), origin)
        rest = [t for t in tokens if t not in resolved]
        lookup_failed = False
        if rest:
            try:
                samples, known = get_database().run(
                    lambda cur: (store.last_samples(cur, rest), store.known_tokens(cur, rest)))
            except AppError as error:
                log.warning("cannot look up stored prices (%s)", error.code)
                samples, known, lookup_failed = {}, {}, True
            for token in rest:
                if token in known:
                    self.tokens.put(token, _token_info(known[token]))
                if token in samples:
                    resolved[token] = Entry(_closed(quote_from_sample(token, samples[token])), "database")
                elif token in known and known[token]["price"] is not None:
                    row = known[token]
                    quote = Quote(
                        token_id=token, price=float(row["price"]), price_rule=PRICE_RULE_LAST_KNOWN,
                        midpoint=None, best_bid=None, best_ask=None, spread=None, last_trade_price=None,
                        tick_size=None, book="closed", as_of=row["updated_at"],
                    )
                    resolved[token] = Entry(quote, CATALOGUE)
                elif token in known:
                    resolved[token] = Entry(None, CATALOGUE)  # a closed market's token: history may know
                else:
                    resolved[token] = Entry(None, UNVERIFIED if lookup_failed else UNKNOWN)
        for token, entry in resolved.items():
            if not (lookup_failed and entry.quote is None):  # do not remember a guess
                self.entries.put(token, entry)
        return resolved

    def _read_or_fallback(
        self, tokens: list[str], recheck: Callable[[str], Entry | None] | None,
        fallback: Callable[[list[str], UpstreamError], dict[str, Entry | None]],
    ) -> tuple[dict[str, Entry], dict[str, Entry], dict[str, UpstreamError]]:
        """Stale-if-error at once: (live, stale, failed) entries for ``tokens``.

        One attempt, within STALE_IF_ERROR_WAIT_S, or none while the CLOB's latest attempt
        failed. Where that fails and ``fallback`` has stored data, that answers now and the
        refresh goes on in the background. Only where nothing is stored does the request
        retry, within what is left of its deadline.
        """
        failing = get_clob().breaker.failing()
        if failing is not None:  # the latest attempt failed: do not wait on another one
            outcomes: dict[str, Outcome] = dict.fromkeys(tokens, failing)
        else:
            with deadline.fail_fast(self.settings.stale_if_error_wait_s):
                outcomes = self._read(tokens, recheck)
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
            for token, outcome in self._read(retry).items():
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
                self._read(idle)
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

    def _book_fallback(self, tokens: list[str], error: UpstreamError) -> dict[str, Entry | None]:
        """Upstream failed: the last book in memory, kept (marked stale) for one TTL."""
        out: dict[str, Entry | None] = {}
        for token in tokens:
            old = self.books.get(token, allow_expired=True)
            if old is None:
                out[token] = None
                continue
            book, reason = old[0][0], _failure_reason(error, "last known order book from memory")
            self.books.put(token, (book, reason))
            out[token] = Entry(quote_from_book(book), "memory", reason, book=book)
        return out

    def _fallback(self, tokens: list[str], error: UpstreamError) -> dict[str, Entry | None]:
        """Upstream failed: the last quote in memory, else the last stored sample, else None."""
        out: dict[str, Entry | None] = {}
        for token in tokens:
            hit = self.entries.get(token, allow_expired=True)
            if hit is not None and hit[0].quote is not None:
                entry = hit[0]
                where = "last known quote from memory" if entry.origin == "live" else (
                    f"last known quote from {entry.origin}")
                out[token] = Entry(entry.quote, entry.origin if entry.origin != "live" else "memory",
                                   _failure_reason(error, where))
        rest = [t for t in tokens if t not in out]
        if rest:
            try:
                samples = get_database().run(lambda cur: store.last_samples(cur, rest))
            except AppError as db_error:
                log.warning("cannot read stored prices for a fallback (%s)", db_error.code)
                samples = {}
            for token in rest:
                row = samples.get(token)
                out[token] = None if row is None else Entry(
                    quote_from_sample(token, row), "database",
                    _failure_reason(error, "last known quote from the database"),
                )
        for token, entry in out.items():
            if entry is not None:
                # Served from the cache for one TTL: an outage costs one attempt per token per TTL.
                self.entries.put(token, entry)
        return out

    # --- token metadata ------------------------------------------------------------------

    def _token_infos(self, tokens: list[str]) -> dict[str, TokenInfo]:
        out: dict[str, TokenInfo] = {}
        missing = []
        for token in tokens:
            hit = self.tokens.get(token)
            if hit is None:
                missing.append(token)
            else:
                out[token] = hit[0]
        if missing and time.monotonic() < self._token_lookup_retry_at:
            return {**out, **dict.fromkeys(missing, TokenInfo())}  # the store just failed: not yet
        if missing:
            try:
                rows = get_database().run(lambda cur: store.known_tokens(cur, missing))
            except AppError as error:
                # Labels are optional: answer without them, and do not ask again for a while.
                self._token_lookup_retry_at = time.monotonic() + TOKEN_LOOKUP_BACKOFF_S
                log.warning("cannot look up tokens in the markets store (%s); retrying in %.0f s",
                            error.code, TOKEN_LOOKUP_BACKOFF_S)
                return {**out, **dict.fromkeys(missing, TokenInfo())}
            for token in missing:
                info = _token_info(rows[token]) if token in rows else TokenInfo()
                self.tokens.put(token, info)
                out[token] = info
        return out

    # --- history -------------------------------------------------------------------------

    def _cached_series(self, token: str, query: HistoryQuery) -> Series | None:
        hit = self.history.get((token, query))
        if hit is None:
            return None
        series = hit[0]
        if series.error is not None and time.monotonic() >= series.retry_at:
            return None
        return series

    def _series_or_stored(self, token: str, query: HistoryQuery, force: bool) -> Series:
        """The series, asking Polymarket once at most (stored points answer if it fails)."""
        with deadline.fail_fast(self.settings.stale_if_error_wait_s):
            return self._series(token, query, force)

    def _no_series(self, token: str, query: HistoryQuery) -> Series:
        """The request's deadline passed before its series arrived: an empty series, not cached."""
        end = int(time.time())
        start = end - query.window_s(self.settings.price_history_retention_days)
        return Series(query, [], 0, 0, start, end, UpstreamTimeout(CLOB, "history past the request deadline"))

    def _series(self, token: str, query: HistoryQuery, force: bool = False) -> Series:
        if not force:
            cached = self._cached_series(token, query)
            if cached is not None:
                return cached

        def load() -> Series:
            # A fetch that finished between the miss above and this claim has filled the cache.
            return (None if force else self._cached_series(token, query)) or self._load_series(token, query)

        return self._single.run(("history", token, query), load)

    def _load_series(self, token: str, query: HistoryQuery) -> Series:
        end = int(time.time())
        start = end - query.window_s(self.settings.price_history_retention_days)
        # Upstream's clock may run a little ahead of ours: its newest point, stamped a few
        # seconds past ``end``, is kept (dropping it until our clock catches up would make the
        # last point flicker); points further ahead than the skew allowance are not trusted
        # (``read_history`` leaves them out, with every other bad point, and counts them).
        latest = end + int(CLOCK_SKEW_ALLOWANCE.total_seconds())
        upstream: list[Point] = []
        error: UpstreamError | None = None
        clob = get_clob()
        from py_clob_client_v2.clob_types import PricesHistoryParams  # loaded with the client (get_clob)

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
        self._persist_history(token, query, upstream)
        try:
            stored = get_database().run(lambda cur: store.history_points(
                cur, token, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(latest, UTC),
                query.period_s))
        except AppError as db_error:
            log.warning("cannot read stored price history (%s)", db_error.code)
            stored = []
        points, from_store = merge_history(upstream, stored, period_s=query.period_s, start=start, end=latest)
        series = Series(query, points, len(points) - from_store, from_store, start, end, error,
                        time.monotonic() + self.settings.price_ttl_s)
        self.history.put((token, query), series)
        return series

    def _persist_history(self, token: str, query: HistoryQuery, points: list[Point]) -> None:
        key = (token, query.fidelity)
        hit = self._persisted.get(key)
        newest = hit[0] if hit is not None else None
        fresh = [(t, p) for t, p in points if newest is None or t > newest]
        if not fresh:
            return
        self.writer.add(
            store.Sample(token, datetime.fromtimestamp(t, UTC), p, midpoint=p, source=store.SOURCE_HISTORY)
            for t, p in fresh
        )
        self._persisted.put(key, fresh[-1][0])

    # --- refresh throttle ----------------------------------------------------------------

    def _allow_refresh(self, token: str) -> bool:
        """``refresh=true`` is honoured at most once per PRICE_REFRESH_MIN_INTERVAL_S per token."""
        if self.settings.price_refresh_min_interval_s == 0:
            return True
        with self._forced_lock:
            if self._forced.get(token) is not None:
                return False
            self._forced.put(token, True)
            return True

    # --- one token -----------------------------------------------------------------------

    def _cached_entry(self, token: str) -> Entry | None:
        hit = self.entries.get(token)
        return None if hit is None else hit[0]

    def _cached_book(self, token: str) -> Entry | None:
        hit = self.books.get(token)
        if hit is None or hit[0][1] is not None:
            return None
        return Entry(quote_from_book(hit[0][0]), book=hit[0][0])

    def _entry(self, token: str, force: bool) -> tuple[Entry, str]:
        """(entry, freshness source) for one token; raises 503 when upstream failed and
        nothing is known."""
        if not force:
            hit = self.entries.get(token)
            if hit is not None:
                return hit[0], "cache"
        live, stale, failed = self._read_or_fallback([token], None if force else self._cached_entry,
                                                     self._fallback)
        if token in live:
            return live[token], "live"
        if token in stale:
            return stale[token], "stale"
        error = failed[token]
        raise ServiceUnavailable(
            f"no price is known for token {token} and Polymarket is failing ({error.summary()}); "
            "try again shortly", headers=_retry_after([error]),
        )

    def _exists(self, token: str) -> bool:
        """Whether this instance has seen the token exist: a quote or a book of it, or the
        catalogue knowing it (an unknown one is never fetched history for)."""
        hit = self.entries.get(token, allow_expired=True)
        if hit is not None:
            return hit[0].quote is not None or hit[0].origin == CATALOGUE
        info = self.tokens.get(token, allow_expired=True)
        return self.books.get(token, allow_expired=True) is not None or (info is not None and info[0].known)

    def price(self, raw_token: str, params: Mapping[str, str]) -> Answer:
        token = validate_token_id(raw_token)
        with_history = parse_bool(params, "history", True)
        query = parse_history_query(params)
        force = parse_bool(params, "refresh", False) and self._allow_refresh(token)
        series_future: Future[Series] | None = None
        series = None if force or not with_history else self._cached_series(token, query)
        if with_history and series is None and self._exists(token):
            # Known to exist: its history is fetched beside its quote, not after it.
            series_future = self._pool.submit(
                contextvars.copy_context().run, self._series_or_stored, token, query, force)
        entry, source = self._entry(token, force)
        if entry.quote is None and entry.origin != CATALOGUE:
            _no_such_token(token, entry)  # no book and nothing stored: no history call for it
        if with_history and series is None:
            if series_future is None:  # never seen before: its book (or storage) just showed it exists
                series = self._series_or_stored(token, query, force)
            else:
                try:
                    series = series_future.result(timeout=deadline.remaining(WAIT_S))
                except FutureTimeout:
                    series = self._no_series(token, query)
        if entry.quote is None:
            entry = self._closed_from_history(token, series)
        elif entry.closed and series is not None and series.points and (
            series.points[-1][0] > entry.quote.as_of.timestamp()
        ):
            entry = self._closed_from_history(token, series)  # history knows a later price
        info = self._token_infos([token])[token]
        freshness = entry.freshness(source)
        if series is not None and series.error is not None and freshness.source != "stale":
            freshness = Freshness("stale", freshness.as_of, freshness.age_seconds,
                                  _failure_reason(series.error, "price history from storage only"))
        assert entry.quote is not None
        body: dict[str, Any] = {
            "token": _token_json(token, info, entry.quote),
            "quote": entry.quote.as_json(),
        }
        if series is not None:
            body["history"] = series.as_json()
        etag = _etag(token, entry.quote.version(), entry.stale_reason, info.condition_id, info.outcome,
                     series.signature() if series else None)
        return Answer(body, freshness, etag, self.settings.price_ttl_s)

    def _closed_from_history(self, token: str, series: Series | None) -> Entry:
        """No book, and the catalogue knows the token without a price: upstream's history may
        have its last one (a token nothing stored knows never gets here: see ``price``)."""
        probe = series if series is not None and series.points else self._series(token, PROBE_QUERY)
        if not probe.points:
            if probe.error is not None:
                raise ServiceUnavailable(
                    f"no order book for token {token} and its price history could not be checked "
                    f"({probe.error.summary()}); try again shortly", headers=_retry_after([probe.error]),
                )
            raise NotFound(f"unknown token {token}: Polymarket has no order book or price history for it")
        t, p = probe.points[-1]
        as_of = datetime.fromtimestamp(t, UTC)
        quote = Quote(token_id=token, price=p, price_rule=PRICE_RULE_LAST_KNOWN, midpoint=p, best_bid=None,
                      best_ask=None, spread=None, last_trade_price=None, tick_size=None, book="closed",
                      as_of=as_of, book_timestamp=as_of)
        entry = Entry(quote, "history")
        self.entries.put(token, entry)
        return entry

    # --- many tokens ---------------------------------------------------------------------

    def quotes(self, params: Mapping[str, str]) -> Answer:
        tokens, invalid = parse_token_ids(params.get("token_ids"))
        found: dict[str, tuple[Entry | None, str]] = {}
        misses = []
        for token in tokens:
            hit = self.entries.get(token)
            if hit is None:
                misses.append(token)
            else:
                found[token] = (hit[0], "cache")
        failures: dict[str, UpstreamError] = {}
        if misses:
            live, stale, failures = self._read_or_fallback(misses, self._cached_entry, self._fallback)
            found.update({token: (entry, "live") for token, entry in live.items()})
            found.update({token: (entry, "stale") for token, entry in stale.items()})
            found.update({token: (None, "stale") for token in failures})
        infos = self._token_infos(tokens)
        items = []
        fresh: list[Freshness] = []
        for raw in _ordered(params.get("token_ids")):
            if raw in invalid:
                items.append({"token_id": raw, "status": "invalid", "quote": None, "token": None,
                              "error": {"code": "bad_request", "message": invalid[raw]}})
                continue
            if raw not in found:
                continue
            entry, source = found[raw]
            freshness = entry.freshness(source) if entry is not None and entry.quote is not None else None
            items.append(_item(raw, entry, freshness, infos.get(raw, TokenInfo()), failures.get(raw)))
            if freshness is not None:
                fresh.append(freshness)
        if not fresh and failures:
            kinds = sorted({e.summary() for e in failures.values()})
            raise ServiceUnavailable(
                f"no price is known for any requested token and Polymarket is failing ({', '.join(kinds)}); "
                "try again shortly", headers=_retry_after(failures.values()),
            )
        freshness = _overall(fresh)
        etag = _etag(*(f"{i['token_id']}:{i['status']}:{i.get('_v')}" for i in items))
        for item in items:
            item.pop("_v", None)
        body = {"quotes": items, "count": len(items)}
        return Answer(body, freshness, etag, self.settings.price_ttl_s)

    # --- books ---------------------------------------------------------------------------

    def book(self, raw_token: str, params: Mapping[str, str]) -> Answer:
        token = validate_token_id(raw_token)
        depth = parse_depth(params)
        hit = self.books.get(token)
        source = "cache"
        book: Book | None = None
        if hit is not None:
            book, stale_reason = hit[0]
        else:
            known = self._cached_entry(token)
            stale_reason, source = None, "live"
            if known is not None and (known.quote is None or known.closed):
                outcome: Entry = known  # no book upstream, learnt within the TTL: do not ask again
            else:
                live, stale, failed = self._read_or_fallback([token], self._cached_book, self._book_fallback)
                if token in failed:
                    error = failed[token]
                    raise ServiceUnavailable(
                        f"no order book is known for token {token} and Polymarket is failing "
                        f"({error.summary()}); try again shortly", headers=_retry_after([error]),
                    )
                if token in stale:
                    outcome = stale[token]
                    stale_reason, source = outcome.stale_reason, "stale"
                else:
                    outcome = live[token]
            if outcome.quote is None and outcome.origin != CATALOGUE:
                raise NotFound(f"unknown token {token}: Polymarket has no order book for it")
            elif outcome.quote is None or outcome.closed:
                raise BookClosed(
                    f"the order book of token {token} is closed (market closed or resolved); "
                    f"/api/price/{token} has its last known price"
                )
            else:
                book = outcome.book
        if book is None:  # a closed entry from the cache of quotes carries no book
            raise BookClosed(f"the order book of token {token} is closed (market closed or resolved)")
        info = self._token_infos([token])[token]
        age = max(0.0, (datetime.now(UTC) - book.fetched_at).total_seconds())
        if stale_reason:
            freshness = Freshness("stale", book.fetched_at, age, stale_reason)
        else:
            freshness = Freshness(source, book.fetched_at, age)
        body = {"token": _token_json(token, info, None, book.condition_id), "book": book_json(book, depth)}
        etag = _etag(token, book.hash, book.timestamp, book.fetched_at if not book.hash else "", depth,
                     stale_reason, info.condition_id, info.outcome)
        return Answer(body, freshness, etag, self.settings.book_ttl_s)

    # --- retention -----------------------------------------------------------------------

    def prune(self, *, batch: int = PRUNE_BATCH, budget_s: float = PRUNE_BUDGET_S) -> dict[str, Any]:
        """Delete samples older than PRICE_HISTORY_RETENTION_DAYS, ``batch`` rows per transaction,
        and first any dated more than a day ahead (``misdated``: age alone would never remove
        them; written before times were checked)."""
        days = self.settings.price_history_retention_days
        cutoff = datetime.now(UTC) - timedelta(days=days)
        db = get_database()
        deleted = batches = misdated = 0
        stop_at = time.monotonic() + budget_s
        while time.monotonic() <= stop_at:
            removed = db.run(lambda cur: store.delete_misdated(cur, batch))
            misdated += removed
            if removed < batch:
                break
        if misdated:
            log.warning("deleted %d price samples dated before 2020 or more than a day ahead", misdated)
        while True:
            removed = db.run(lambda cur: store.delete_older_than(cur, cutoff, batch))
            batches += 1
            deleted += removed
            if removed == 0:
                return {"deleted": deleted, "batches": batches, "complete": True, "cutoff": cutoff,
                        "misdated": misdated}
            if time.monotonic() > stop_at:
                return {"deleted": deleted, "batches": batches, "complete": False, "cutoff": cutoff,
                        "misdated": misdated}


# --- shapes ----------------------------------------------------------------------------------


def _no_such_token(token: str, entry: Entry) -> None:
    """Raise for a token upstream has no book for and nothing stored knows (or could be asked)."""
    if entry.origin == UNVERIFIED:
        raise ServiceUnavailable(
            f"Polymarket has no order book for token {token}, and whether prices are stored for it cannot "
            "be checked now (database unavailable); try again shortly",
            headers=retry_after_header(DEFAULT_RETRY_AFTER_S),
        )
    raise NotFound(f"unknown token {token}: Polymarket has no order book for it and nothing is stored for it")


def _token_info(row: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(row["condition_id"], row["outcome"], row["outcome_index"], True)


def _token_json(token: str, info: TokenInfo, quote: Quote | None, condition_id: str | None = None) -> dict[str, Any]:
    return {
        "token_id": token,
        "condition_id": info.condition_id or condition_id or (quote.condition_id if quote else None),
        "outcome": info.outcome,
        "outcome_index": info.outcome_index,
    }


def _item(token: str, entry: Entry | None, freshness: Freshness | None, info: TokenInfo,
          failure: UpstreamError | None) -> dict[str, Any]:
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
        token=_token_json(token, info, entry.quote),
        freshness=freshness.as_dict() if freshness else None,
    )
    item["_v"] = f"{entry.quote.version()}|{entry.stale_reason}|{info.condition_id}|{info.outcome}"
    return item


def _overall(items: list[Freshness]) -> Freshness:
    """The batch's freshness: its oldest quote, and stale if any quote is."""
    if not items:
        return Freshness("live", datetime.now(UTC), 0.0)
    stale = [f for f in items if f.source == "stale"]
    oldest = max(items, key=lambda f: f.age_seconds)
    if stale:
        reasons = sorted({f.stale_reason or "" for f in stale})
        reason = reasons[0] if len(reasons) == 1 else f"{len(stale)} of {len(items)} quotes are stale"
        return Freshness("stale", oldest.as_of, oldest.age_seconds, reason)
    source = "live" if all(f.source == "live" for f in items) else "cache"
    return Freshness(source, oldest.as_of, oldest.age_seconds)


def _ordered(raw: str | None) -> list[str]:
    return list(dict.fromkeys(part.strip() for part in (raw or "").split(",") if part.strip()))


MAX_TOKEN_IDS_CHARS = MAX_BATCH * 80


def parse_token_ids(raw: str | None) -> tuple[list[str], dict[str, str]]:
    """(valid token ids, {invalid id: why}) from ``token_ids=a,b,c``; duplicates collapse."""
    if raw is not None and len(raw) > MAX_TOKEN_IDS_CHARS:
        raise BadRequest(f"parameter 'token_ids' lists more than {MAX_BATCH} ids", parameter="token_ids")
    ids = _ordered(raw)
    if not ids:
        raise BadRequest("parameter 'token_ids' is required: comma-separated token ids", parameter="token_ids")
    if len(ids) > MAX_BATCH:
        raise BadRequest(f"parameter 'token_ids' lists {len(ids)} ids; at most {MAX_BATCH}",
                         parameter="token_ids")
    valid, invalid = [], {}
    for token in ids:
        try:
            valid.append(validate_token_id(token))
        except BadRequest:
            invalid[token] = "a token id is 1 to 78 decimal digits"
    return valid, invalid


def parse_depth(params: Mapping[str, str]) -> int:
    raw = (params.get("depth") or str(DEFAULT_DEPTH)).strip()
    if not is_uint(raw) or not 1 <= int(raw) <= MAX_DEPTH:
        raise BadRequest(f"parameter 'depth' must be an integer from 1 to {MAX_DEPTH}", parameter="depth")
    return int(raw)


def get_prices_service() -> PricesService:
    from shared.container import get_container

    return get_container().prices


def reset_prices_service() -> None:
    """Flush and forget the service (tests; the next call re-reads settings)."""
    from shared.container import get_container

    get_container().reset("prices")


def _close_at_exit() -> None:
    from shared.container import get_container

    service = get_container().peek("prices")
    if service is not None:
        service.writer.stop()  # samples still queued are written, not lost


atexit.register(_close_at_exit)
