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

Where each part lives: ``books`` (reads from the CLOB), ``flight`` (shared fetches),
``fallback`` (stale-if-error, background refresh), ``tokens`` (labels, tokens without a book),
``history`` (series), ``writer`` (sample storage), ``retention`` (pruning), ``shaping`` (JSON
and ETags), ``entries`` and ``rejections``; this module composes them and answers.
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from shared.core import deadline
from shared.core.cache import TTLCache
from shared.core.config import CacheSettings
from shared.core.display import PRICE_RULE_LAST_KNOWN
from shared.core.errors import BadRequest, NotFound, ServiceUnavailable, UpstreamError
from shared.core.freshness import Answer, Freshness, Source
from shared.core.ids import TOKEN_ID_RULE, validate_token_id
from shared.db.database import Database
from shared.prices import retention, store
from shared.prices.books import BookReader
from shared.prices.entries import CATALOGUE, Entry, Outcome, failure_reason
from shared.prices.fallback import StaleIfError, book_fallback, quote_fallback
from shared.prices.flight import WAIT_S, BookFlight
from shared.prices.history import PROBE_QUERY, Histories, Series
from shared.prices.query import HistoryQuery
from shared.prices.quotes import (
    Book,
    Quote,
    book_json,
    quote_from_book,
)
from shared.prices.reading import QuoteWithHistory
from shared.prices.rejections import Rejections
from shared.prices.shaping import (
    batch_etag,
    batch_freshness,
    batch_item,
    book_etag,
    price_etag,
    retry_after,
    token_json,
)
from shared.prices.tokens import TokenInfo, TokenInfos, no_such_token, resolve_missing, resolved_entry
from shared.prices.writer import SampleWriter
from shared.upstream.polymarket import ClobApi


class BookClosed(NotFound):
    code = "book_closed"


@dataclass(frozen=True)
class _Reading:
    entry: Entry
    info: TokenInfo
    series: Series | None
    freshness: Freshness


class PricesService:
    """Composes the parts (see the package's modules) and answers the three endpoints.

    ``database`` and ``clob`` are providers, called on each use: the pool is built on first use
    and again after it failed, so the service exists (and answers from upstream) while the
    database is down; the CLOB client is built on the first call upstream.
    """

    def __init__(self, settings: CacheSettings, database: Callable[[], Database],
                 clob: Callable[[], ClobApi]) -> None:
        self.settings = settings
        self._database = database
        size = settings.price_cache_max_tokens
        self.entries: TTLCache[Entry] = TTLCache(size, settings.price_ttl_s)
        # Books are the biggest entries: keep fewer of them.
        self.books: TTLCache[tuple[Book, str | None]] = TTLCache(min(size, 2_000), settings.book_ttl_s)
        self.tokens = TokenInfos(database, size)
        self._forced: TTLCache[bool] = TTLCache(size, max(settings.price_refresh_min_interval_s, 0.001))
        self._forced_lock = threading.Lock()
        self.rejections = Rejections()
        self.writer = SampleWriter(database, rejections=self.rejections)
        self.history = Histories(settings, database, clob, self.writer, self.rejections)
        self.reader = BookReader(clob, self.rejections)
        self.flight = BookFlight(self._lead, size)
        self.stale_if_error = StaleIfError(settings, clob, self.flight)
        self._fallback = partial(quote_fallback, self.entries, database)
        self._book_fallback = partial(book_fallback, self.books)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="prices")

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
        self.stale_if_error.close()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write pending samples now (tests, shutdown)."""
        return self.writer.flush(timeout_s)

    def background_refreshes(self) -> int:
        """Refreshes that requests left to the background and that have not finished yet."""
        return self.stale_if_error.background_refreshes()

    def prune(self, *, batch: int = retention.PRUNE_BATCH, budget_s: float = retention.PRUNE_BUDGET_S
              ) -> dict[str, Any]:
        """See ``retention.prune``: samples older than PRICE_HISTORY_RETENTION_DAYS go."""
        return retention.prune(self._database, self.settings.price_history_retention_days,
                               batch=batch, budget_s=budget_s)

    # --- the read path -------------------------------------------------------------------

    def _lead(self, tokens: list[str]) -> dict[str, Outcome]:
        """Fetch the books of ``tokens`` (claimed in ``flight``): quotes cached, samples queued."""
        try:
            books = self.reader.fetch(tokens)
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
            results.update(resolve_missing(missing, self.entries, self.tokens, self._database))
        return results

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

    def _entry(self, token: str, force: bool) -> tuple[Entry, Source]:
        """(entry, freshness source) for one token; raises 503 when upstream failed and
        nothing is known."""
        if not force:
            hit = self.entries.get(token)
            if hit is not None:
                return hit[0], "cache"
        live, stale, failed = self.stale_if_error.read([token], None if force else self._cached_entry,
                                                      self._fallback)
        if token in live:
            return live[token], "live"
        if token in stale:
            return stale[token], "stale"
        error = failed[token]
        raise ServiceUnavailable(
            f"no price is known for token {token} and Polymarket is failing ({error.summary()}); "
            "try again shortly", headers=retry_after([error]),
        )

    def _exists(self, token: str) -> bool:
        """Whether this instance has seen the token exist: a quote or a book of it, or the
        catalogue knowing it (an unknown one is never fetched history for)."""
        hit = self.entries.get(token, allow_expired=True)
        if hit is not None:
            return hit[0].quote is not None or hit[0].origin == CATALOGUE
        info = self.tokens.get(token, allow_expired=True)
        return self.books.get(token, allow_expired=True) is not None or (info is not None and info[0].known)

    def price(self, token: str, *, history: HistoryQuery | None, refresh: bool) -> Answer:
        """One token's quote, with its history over ``history`` (none when None); ``token`` is a
        valid token id (the API layer checks path ids)."""
        force = refresh and self._allow_refresh(token)
        reading = self._read(token, history, force)
        entry, info, series = reading.entry, reading.info, reading.series
        assert entry.quote is not None
        body: dict[str, Any] = {
            "token": token_json(token, info, entry.quote),
            "quote": entry.quote.as_json(),
        }
        if series is not None:
            body["history"] = series.as_json()
        etag = price_etag(token, entry.quote, entry.stale_reason, info, series)
        return Answer(body, reading.freshness, etag, self.settings.price_ttl_s)

    def quote_with_history(self, raw_token: str, window: HistoryQuery) -> QuoteWithHistory:
        """The token's quote and its history over ``window``: what :meth:`price` serves with
        ``history=true`` (same caches, fallbacks and errors), typed, for other features."""
        reading = self._read(validate_token_id(raw_token), window, False)
        assert reading.entry.quote is not None and reading.series is not None
        series, freshness = reading.series, reading.freshness
        return QuoteWithHistory(
            quote=reading.entry.quote,
            points=series.points,
            stale_reason=freshness.stale_reason if freshness.source == "stale" else None,
            history_stale_reason=None if series.error is None else failure_reason(
                series.error, "stored history only"),
        )

    def _read(self, token: str, query: HistoryQuery | None, force: bool) -> _Reading:
        """A token's quote (and its history over ``query``, when asked): the one flow behind
        ``price`` and ``quote_with_history``."""
        series_future: Future[Series] | None = None
        series = None if force or query is None else self.history.cached(token, query)
        # A settled market's token (the store says so): its final price, no book read.
        info = self.tokens.lookup([token])[token]
        if query is not None and series is None and self._exists(token):
            # Known to exist: its history is fetched beside its quote, not after it.
            series_future = self._pool.submit(
                contextvars.copy_context().run, self.history.or_stored, token, query, force)
        source: Source = "cache"
        if info.settled_price is not None:
            entry = resolved_entry(token, info)
        else:
            entry, source = self._entry(token, force)
        if entry.quote is None and entry.origin != CATALOGUE:
            no_such_token(token, entry)  # no book and nothing stored: no history call for it
        if query is not None and series is None:
            if series_future is None:  # never seen before: its book (or storage) just showed it exists
                series = self.history.or_stored(token, query, force)
            else:
                try:
                    series = series_future.result(timeout=deadline.remaining(WAIT_S))
                except FutureTimeout:
                    series = self.history.none_in_time(token, query)
        if entry.quote is None:
            entry = self._closed_from_history(token, series)
        elif entry.closed and not entry.resolved and series is not None and series.points and (
            series.points[-1][0] > entry.quote.as_of.timestamp()
        ):
            entry = self._closed_from_history(token, series)  # history knows a later price
        info = self.tokens.lookup([token])[token]  # as the book path may just have learnt it
        freshness = entry.freshness(source)
        if series is not None and series.error is not None and freshness.source != "stale":
            freshness = Freshness("stale", freshness.as_of, freshness.age_seconds,
                                  failure_reason(series.error, "price history from storage only"))
        return _Reading(entry, info, series, freshness)

    def _closed_from_history(self, token: str, series: Series | None) -> Entry:
        """No book, and the catalogue knows the token without a price: upstream's history may
        have its last one (a token nothing stored knows never gets here: see ``price``)."""
        probe = series if series is not None and series.points else self.history.series(token, PROBE_QUERY)
        if not probe.points:
            if probe.error is not None:
                raise ServiceUnavailable(
                    f"no order book for token {token} and its price history could not be checked "
                    f"({probe.error.summary()}); try again shortly", headers=retry_after([probe.error]),
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

    def quotes(self, token_ids: Sequence[str]) -> Answer:
        """Quotes of distinct ids, in order; an id that is not a token id is answered ``invalid``
        in its place (the API layer splits, deduplicates and caps the list)."""
        tokens, invalid = _split_valid(token_ids)
        found: dict[str, tuple[Entry | None, Source]] = {}
        misses = []
        for token in tokens:
            hit = self.entries.get(token)
            if hit is None:
                misses.append(token)
            else:
                found[token] = (hit[0], "cache")
        failures: dict[str, UpstreamError] = {}
        if misses:
            live, stale, failures = self.stale_if_error.read(misses, self._cached_entry, self._fallback)
            found.update({token: (entry, "live") for token, entry in live.items()})
            found.update({token: (entry, "stale") for token, entry in stale.items()})
            found.update({token: (None, "stale") for token in failures})
        infos = self.tokens.lookup(tokens)
        items = []
        fresh: list[Freshness] = []
        for raw in token_ids:
            if raw in invalid:
                items.append({"token_id": raw, "status": "invalid", "quote": None, "token": None,
                              "error": {"code": "bad_request", "message": invalid[raw]}})
                continue
            if raw not in found:
                continue
            entry, source = found[raw]
            freshness = entry.freshness(source) if entry is not None and entry.quote is not None else None
            items.append(batch_item(raw, entry, freshness, infos.get(raw, TokenInfo()), failures.get(raw)))
            if freshness is not None:
                fresh.append(freshness)
        if not fresh and failures:
            kinds = sorted({e.summary() for e in failures.values()})
            raise ServiceUnavailable(
                f"no price is known for any requested token and Polymarket is failing ({', '.join(kinds)}); "
                "try again shortly", headers=retry_after(failures.values()),
            )
        freshness = batch_freshness(fresh)
        etag = batch_etag(items)
        body = {"quotes": items, "count": len(items)}
        return Answer(body, freshness, etag, self.settings.price_ttl_s)

    # --- books ---------------------------------------------------------------------------

    def book(self, token: str, *, depth: int) -> Answer:
        """``token``'s order book, ``depth`` levels a side; ``token`` is a valid token id."""
        hit = self.books.get(token)
        source: Source = "cache"
        book: Book | None = None
        if hit is not None:
            book, stale_reason = hit[0]
        else:
            known = self._cached_entry(token)
            stale_reason, source = None, "live"
            if known is not None and (known.quote is None or known.closed):
                outcome: Entry = known  # no book upstream, learnt within the TTL: do not ask again
            else:
                live, stale, failed = self.stale_if_error.read([token], self._cached_book, self._book_fallback)
                if token in failed:
                    error = failed[token]
                    raise ServiceUnavailable(
                        f"no order book is known for token {token} and Polymarket is failing "
                        f"({error.summary()}); try again shortly", headers=retry_after([error]),
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
        info = self.tokens.lookup([token])[token]
        age = max(0.0, (datetime.now(UTC) - book.fetched_at).total_seconds())
        if stale_reason:
            freshness = Freshness("stale", book.fetched_at, age, stale_reason)
        else:
            freshness = Freshness(source, book.fetched_at, age)
        body = {"token": token_json(token, info, None, book.condition_id), "book": book_json(book, depth)}
        etag = book_etag(token, book, depth, stale_reason, info)
        return Answer(body, freshness, etag, self.settings.book_ttl_s)


# --- helpers ---------------------------------------------------------------------------------


def _split_valid(token_ids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(valid token ids, {invalid id: why})."""
    valid, invalid = [], {}
    for token in token_ids:
        try:
            valid.append(validate_token_id(token))
        except BadRequest:
            invalid[token] = f"a token id is {TOKEN_ID_RULE}"
    return valid, invalid


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
