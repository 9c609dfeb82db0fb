"""Market sentiment use case: ``GET /api/markets/{condition_id}/sentiment``.

- An analysis is one Azure OpenAI call (``shared.sentiment.analysis``) on the market record
  (``MarketsService.record``), the CLOB quote of its first outcome and that token's last week of
  prices (``PricesService.quote_with_history``).
  If the price lookup fails, the market record's outcome prices are used and the stored
  analysis says so (``inputs_note``): sentiment does not depend on the CLOB being up.
- Every analysis is stored in PostgreSQL and kept; the newest younger than ``SENTIMENT_TTL_S``
  is served as the cache. ``history=true`` adds the last ``HISTORY_LIMIT`` analyses.
- One model call per market at a time: in-process callers share one call (``SingleFlight``);
  across instances a lease row in ``sentiment_state`` makes the others wait for its result.
- ``refresh=true`` re-analyses only if the market had no attempt in the last
  ``SENTIMENT_REFRESH_MIN_INTERVAL_S`` (5 minutes), across instances; otherwise it is ignored.
- A model failure or timeout serves the last analysis marked stale, else a 502; after a failure
  the model is left alone for ``FAILURE_BACKOFF_S`` (an outage costs one attempt per market per
  minute, not one per request).
- The lease is given back on every path out of an analysis round (stored, model failure, bad
  output, database failure, any exception): ``try/finally`` around the round. A release that
  itself fails (the database is down) leaves a lease this instance takes back on its next
  request for the market (``store.claim``); other instances wait for it at most
  until it expires.
- What is served is what ``shared.sentiment.verdict`` validated: a plain-text summary and the
  verdict's ``flags`` (``contradicts_price_trend``). A stored summary that does not pass the plain-text
  check today (stored before it existed) is withheld, flagged ``summary_withheld``, never
  served as is.

Everything it uses (settings, database, the markets and prices services, the model client) is
given to its constructor by the composition root (``shared.container``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shared.core.cache import SingleFlight
from shared.core.config import CacheSettings, OpenAISettings
from shared.core.errors import AppError, ModelError
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer, Freshness
from shared.core.numbers import float_or_none
from shared.prices.query import HistoryQuery
from shared.sentiment import store
from shared.sentiment.analysis import analyze_market_sentiment
from shared.sentiment.query import HISTORY_LIMIT
from shared.sentiment.text import markup_in, plain_text
from shared.sentiment.verdict import FLAGS, MAX_SUMMARY_CHARS
from shared.upstream.azure_openai import check_configured

if TYPE_CHECKING:
    from openai import AzureOpenAI

    from shared.db.database import Cursor, Database
    from shared.markets.facts import MarketFacts
    from shared.markets.service import MarketsService
    from shared.prices.service import PricesService

log = logging.getLogger("polymarket_api.sentiment")
T = TypeVar("T")

FAILURE_BACKOFF_S = 60.0
PRICE_LOOKUP_TIMEOUT_S = 10.0
LEASE_MARGIN_S = 10.0
POLL_S = 0.25
# A week of prices at one point every 6 hours: enough for a direction, few prompt tokens.
PRICE_WINDOW = HistoryQuery(interval="1w", fidelity=360)
SUMMARY_WITHHELD = "summary_withheld"
SERVED_FLAGS = (*FLAGS, SUMMARY_WITHHELD)
WITHHELD_SUMMARY = "The stored summary did not pass the plain-text check and is withheld."


@dataclass(frozen=True)
class Outcome:
    """What one analysis round produced: the row to serve and how fresh it is."""

    row: dict[str, Any]
    source: str  # "live", "cache" (another caller's analysis) or "stale"
    stale_reason: str | None = None


def _stale_reason(kind: str | None) -> str:
    return f"the sentiment model failed ({kind or 'error'}); this is the last analysis"


def _error_name(error: BaseException) -> str:
    return error.code if isinstance(error, AppError) else type(error).__name__


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _served_summary(value: Any) -> tuple[str, bool]:
    """The stored summary, or a fixed text when it is not plain text (True: withheld)."""
    text = plain_text(value, MAX_SUMMARY_CHARS)
    if text is None or markup_in(text) is not None:
        return WITHHELD_SUMMARY, True
    return text, False


def analysis_json(row: Mapping[str, Any]) -> dict[str, Any]:
    summary, withheld = _served_summary(row["summary"])
    flags = [flag for flag in row.get("flags") or [] if flag in FLAGS]
    if withheld:
        log.warning("sentiment analysis %s: stored summary withheld (not plain text)", row["id"])
        flags.append(SUMMARY_WITHHELD)
    change = row.get("price_change")
    return {
        "id": row["id"],
        "condition_id": row["condition_id"],
        "outcome": row["outcome"],
        "token_id": row["token_id"],
        "sentiment": row["sentiment"],
        "score": row["score"],
        "confidence": row["confidence"],
        "summary": summary,
        "flags": flags,
        "price_trend": None if change is None else {"change": change, "window": row.get("price_change_window")},
        "analyzed_at": _iso(row["created_at"]),
        "display_price": float_or_none(row["display_price"]),
        "price_as_of": _iso(row["price_as_of"]),
        "price_source": row["price_source"],
        "inputs_note": row["inputs_note"],
        "model": row["model"],
        "deployment": row["deployment"],
        "prompt_version": row["prompt_version"],
        "usage": {
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["total_tokens"],
        },
    }



class SentimentService:
    """Parts whose lifetime is the container's (the database, the other services, the model
    client: each can be rebuilt on its own) are given as getters and asked on each use; settings
    are given as values (a change of settings rebuilds everything, this service included)."""

    def __init__(
        self,
        *,
        cache: CacheSettings,
        model_settings: OpenAISettings,
        database: Callable[[], Database],
        markets: Callable[[], MarketsService],
        prices: Callable[[], PricesService],
        model: Callable[[], AzureOpenAI],
    ) -> None:
        self._cache = cache
        self._model_settings = model_settings
        self._database = database
        self._markets = markets
        self._prices = prices
        self._model = model
        self._flight: SingleFlight[Outcome] = SingleFlight()
        # Names this process's leases; never sent anywhere but the database.
        self._holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sentiment-prices")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the request -------------------------------------------------------------------------

    def get(self, condition_id: str, *, history: bool, refresh: bool) -> Answer:
        """The market's newest analysis (and, with ``history``, the newest HISTORY_LIMIT);
        ``condition_id`` is a valid condition id (the API layer checks path ids)."""
        check_configured(self._model_settings)
        market = self._markets().record(condition_id)  # 404 for an unknown market
        cache = self._cache
        latest, state = self._db(lambda cur: (store.latest(cur, condition_id), store.read_state(cur, condition_id)))
        forced = refresh and (
            state["attempt_age_s"] is None or state["attempt_age_s"] >= cache.sentiment_refresh_min_interval_s
        )
        fresh = latest is not None and latest["age_s"] < cache.sentiment_ttl_s
        backoff = bool(state["last_error"]) and (state["error_age_s"] or 0.0) < FAILURE_BACKOFF_S
        if fresh and (not forced or backoff):
            outcome = Outcome(latest, "cache")  # type: ignore[arg-type]
        elif backoff:
            # The model failed moments ago: do not ask again yet.
            outcome = self._fallback(latest, state["last_error"], FAILURE_BACKOFF_S - (state["error_age_s"] or 0.0))
        else:
            seen = latest["id"] if latest else None
            outcome = self._flight.run(condition_id, lambda: self._analyse(condition_id, market, latest, seen))
        return self._answer(condition_id, outcome, history, cache.sentiment_ttl_s)

    def _answer(self, condition_id: str, outcome: Outcome, want_history: bool, ttl_s: int) -> Answer:
        row = outcome.row
        age = 0.0 if outcome.source == "live" else max(0.0, float(row["age_s"]))
        freshness = Freshness(outcome.source, row["created_at"], age, outcome.stale_reason)  # type: ignore[arg-type]
        body: dict[str, Any] = {"sentiment": analysis_json(row)}
        parts: list[Any] = [condition_id, row["id"], outcome.stale_reason, want_history]
        if want_history:
            rows = self._db(lambda cur: store.history(cur, condition_id, HISTORY_LIMIT))
            body["history"] = [analysis_json(r) for r in rows]
            parts.append(",".join(str(r["id"]) for r in rows))
        etag = make_etag(*parts)
        return Answer(body, freshness, etag, ttl_s)

    def _db(self, work: Callable[[Cursor], T]) -> T:
        return self._database().run(work)

    # --- one analysis round (one per market at a time) -------------------------------------------

    def _lease_s(self) -> float:
        ai = self._model_settings
        attempts = ai.max_retries + 1
        return PRICE_LOOKUP_TIMEOUT_S + attempts * (ai.timeout_s + ai.retry_after_max_s) + LEASE_MARGIN_S

    def _analyse(self, condition_id: str, market: MarketFacts, latest: dict[str, Any] | None,
                 seen: int | None) -> Outcome:
        lease_s = self._lease_s()

        def claim(cur: Cursor) -> tuple[dict[str, Any] | None, bool]:
            newest = store.latest(cur, condition_id)
            if newest is not None and newest["id"] != seen:
                return newest, False  # someone analysed it after this request looked
            return newest, store.claim(cur, condition_id, self._holder, lease_s)

        newest, claimed = self._db(claim)
        if newest is not None and newest["id"] != seen:
            return Outcome(newest, "cache")
        if not claimed:
            return self._wait_for_other(condition_id, latest, seen, lease_s)
        settled = False  # whether a transaction that released the lease committed
        try:
            quote, history, note = self._inputs(market)
            try:
                verdict = analyze_market_sentiment(market, quote, history, settings=self._model_settings,
                                                   client=self._model)
            except ModelError as failure:
                settled = self._record_failure(condition_id, failure.kind)
                return self._fallback(latest, failure.kind, FAILURE_BACKOFF_S, failure)
            row = self._db(lambda cur: store.record_success(cur, condition_id, self._holder, verdict, note))
            settled = True
            return Outcome(row, "live")
        finally:
            if not settled:  # any other way out: a database failure, a bug, an interrupt
                self._release(condition_id)

    def _wait_for_other(self, condition_id: str, latest: dict[str, Any] | None, seen: int | None,
                        lease_s: float) -> Outcome:
        """Another instance holds the lease: wait for its analysis (or its failure)."""
        deadline = time.monotonic() + lease_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            newest, state = self._db(lambda cur: (store.latest(cur, condition_id), store.read_state(cur, condition_id)))
            if newest is not None and newest["id"] != seen:
                return Outcome(newest, "cache")
            if not state["leased"]:
                break
        return self._fallback(latest, state.get("last_error") or "busy", FAILURE_BACKOFF_S)

    def _fallback(self, latest: dict[str, Any] | None, kind: str, retry_after_s: float,
                  failure: ModelError | None = None) -> Outcome:
        """The last analysis marked stale, or the model's failure as a 502."""
        if latest is not None:
            return Outcome(latest, "stale", _stale_reason(kind))
        if failure is not None:
            failure.headers.setdefault("Retry-After", str(max(1, round(retry_after_s))))
            raise failure
        raise ModelError(kind, "recent failure, not retried yet", retry_after_s=retry_after_s)

    def _record_failure(self, condition_id: str, kind: str) -> bool:
        """Release the lease with the failure recorded; False if the database would not."""
        try:
            self._db(lambda cur: store.record_failure(cur, condition_id, self._holder, kind))
        except Exception as error:  # the model's failure is the answer; the lease is released after
            log.warning("cannot record a sentiment failure for %s (%s)", condition_id, _error_name(error))
            return False
        return True

    def _release(self, condition_id: str) -> None:
        try:
            self._db(lambda cur: store.release(cur, condition_id, self._holder))
        except Exception as error:  # never mask the failure that got us here
            # This instance takes the lease back on its next request (store.claim).
            log.warning("cannot release the sentiment lease for %s (%s)", condition_id, _error_name(error))

    # --- inputs ------------------------------------------------------------------------------

    def _inputs(self, market: MarketFacts) -> tuple[dict[str, Any] | None, list[Any] | None, str]:
        """(quote, history points, note on what the analysis was based on)."""
        outcomes = market["outcomes"]
        token = outcomes[0]["token_id"] if outcomes else None
        fallback = "used the market catalogue's outcome price; no price history"
        if not token:
            return None, None, f"no order book for this market: {fallback}"
        future = self._pool.submit(self._prices().quote_with_history, token, PRICE_WINDOW)
        try:
            reading = future.result(timeout=PRICE_LOOKUP_TIMEOUT_S)
        except FutureTimeout:
            return None, None, f"price lookup timed out: {fallback}"
        except AppError as error:
            return None, None, f"price lookup failed ({error.code}): {fallback}"
        except Exception:
            log.exception("price lookup for sentiment failed")
            return None, None, f"price lookup failed (internal error): {fallback}"
        quote: dict[str, Any] | None = None
        if reading.quote.price is None:
            notes = ["the quote had no display price: used the market catalogue's outcome price"]
        else:
            quote = reading.quote.as_json()  # the prompt shows the quote as the prices API serves it
            notes = [f"price from the CLOB ({reading.quote.price_rule}, book {reading.quote.book})"]
            if reading.stale_reason is not None:
                notes.append(f"quote stale: {reading.stale_reason}")
        notes.append(f"1w history: {len(reading.points)} points")
        if reading.history_stale_reason:
            notes.append(f"history: {reading.history_stale_reason}")
        return quote, list(reading.points), "; ".join(notes)


def get_sentiment_service() -> SentimentService:
    from shared.container import get_container

    return get_container().sentiment
