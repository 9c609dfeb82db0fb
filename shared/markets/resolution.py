"""Markets that left the open set: what became of them, from one batched Gamma lookup.

After a refresh commits, the markets it saw leave the active set (and those closed but not yet
settled, at most every ``RECHECK_AFTER_H`` hours, for ``RECHECK_WINDOW_DAYS``) are looked up with
``GET /markets?condition_ids=...&closed=true`` (``MAX_IDS_PER_REQUEST`` a request, at most
``MAX_CHECKS_PER_REFRESH`` a refresh), and each closed row found is stored as the market's last
state (closed, closed time, final outcome prices, UMA statuses) without putting it back in the
active set. No per-market polling: one lookup per refresh, only for what left.

Its own transaction, after the refresh's: a failure (Gamma, the database, a bad answer) is
logged, counted and shown in deep health, never fails the refresh, and what was not checked is
checked at the next refresh. A bad row is skipped and counted; a row for a market not asked for,
or not closed, is not stored. A market Gamma does not return stays as the app knows it (left the
active set: closed, not resolved).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core import deadline
from shared.core.errors import AppError, UpstreamBadResponse, UpstreamError
from shared.db.database import Cursor, Database
from shared.markets import store
from shared.markets.crawl import condition_id_of
from shared.markets.rows import BadMarketRow, MarketRecord, parse_market, row_label
from shared.markets.snapshot import MAX_ROW_WARNINGS

if TYPE_CHECKING:  # the client (and httpx) is imported with the first refresh
    from shared.upstream.polymarket import GammaApi

log = logging.getLogger("polymarket_api.markets")

MAX_IDS_PER_REQUEST = 100  # Gamma's documented cap on condition_ids
MAX_CHECKS_PER_REFRESH = 2_000  # 20 requests
RECHECK_AFTER_H = 6  # closed but not settled: asked again at most this often
RECHECK_WINDOW_DAYS = 30  # and for this long after it closed (or left the set)
LOOKUP_DEADLINE_S = 20.0  # the reload of the refreshed catalogue waits on it; the rest waits a refresh
MAX_LOOKUP_ROWS = 1_000  # we ask for at most 100


@dataclass(frozen=True)
class LookupResult:
    asked: int = 0  # condition ids looked up
    requests: int = 0
    stored: int = 0  # closed rows stored
    settled: int = 0  # of those: a winner (outcome prices exactly 1 and 0)
    not_found: int = 0  # asked, no closed row came back: kept as the app knows it
    skipped_rows: int = 0  # bad rows, rows not asked for, refused by the database
    seconds: float = 0.0


def winner_index(record: MarketRecord) -> int | None:
    """The winning outcome of a closed market whose outcome prices are exactly one 1 and the
    rest 0; None otherwise (closed but not settled, or still open)."""
    if not record.closed or len(record.outcomes) < 2:
        return None
    winners = [o.index for o in record.outcomes if o.price == 1]
    if len(winners) != 1 or any(o.price != 0 for o in record.outcomes if o.index != winners[0]):
        return None
    return winners[0]


class LookupFailed(UpstreamBadResponse):
    """Gamma answered 200 with something that is not a list of market rows. ``cause`` is ours."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__("gamma", cause)

    def summary(self) -> str:
        return f"{self.kind}: {self.cause}"


def _chunks(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


@dataclass
class _Batch:
    records: dict[str, MarketRecord]
    checked: list[str]
    requests: int = 0
    skipped: int = 0


def _look_up(gamma: GammaApi, ids: Sequence[str], batch: _Batch) -> None:
    """Fill ``batch`` chunk by chunk; an upstream failure stops it (the chunks before it stand)."""
    for chunk in _chunks(ids, MAX_IDS_PER_REQUEST):
        wanted = set(chunk)
        params = {"condition_ids": chunk, "closed": "true", "include_tag": "true", "limit": len(chunk)}
        batch.requests += 1
        rows = gamma.get("/markets", params)
        if not isinstance(rows, list):
            raise LookupFailed("the closed-markets lookup did not answer a list of markets")
        if len(rows) > MAX_LOOKUP_ROWS:
            raise LookupFailed(f"the closed-markets lookup answered more than {MAX_LOOKUP_ROWS} rows")
        for row in rows:
            problem = None
            try:
                record = parse_market(row)
            except BadMarketRow as error:
                problem = str(error)
            else:
                if record.condition_id not in wanted:
                    problem = "a market that was not asked for"
                elif not record.closed:
                    problem = "not closed"  # still open upstream: the next crawl sees it
                elif record.condition_id in batch.records:
                    problem = "a condition id an earlier row had (the first row wins)"
                else:
                    batch.records[record.condition_id] = record
            if problem is not None:
                batch.skipped += 1
                if batch.skipped <= MAX_ROW_WARNINGS:
                    log.warning("closed-market row skipped (%s): %s", row_label(row), problem)
                # A bad row of a market asked for leaves it unchecked: asked again next refresh.
                if (cid := condition_id_of(row)) in wanted:
                    wanted.discard(cid)
        batch.checked.extend(c for c in chunk if c in wanted)


def _store(cur: Cursor, batch: _Batch) -> tuple[int, int]:
    """(stored, refused) in the caller's transaction."""
    rejected: list[str] = []
    records = list(batch.records.values())
    store.upsert_markets(cur, records, rejected, in_active_set=False)
    refused = set(rejected)
    store.mark_resolution_checked(cur, [c for c in batch.checked if c not in refused])
    return len(records) - len(refused), len(refused)


def _reason(error: BaseException) -> str:
    # Our own words and the error's kind: never upstream text or SQL.
    if isinstance(error, UpstreamError):
        return f"Polymarket {error.upstream} closed-markets lookup failed ({error.summary()})"
    if isinstance(error, AppError):
        return f"closed-markets lookup failed ({error.code})"
    return "closed-markets lookup failed (internal error)"


class Resolutions:
    """The lookup, and how it went (this instance), for deep health."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one lookup at a time in this instance
        self.last: LookupResult | None = None
        self.last_run_at: datetime | None = None
        self.last_error: str | None = None
        self.failures = 0  # in a row
        self.totals = {"runs": 0, "failed": 0, "requests": 0, "stored": 0, "settled": 0, "skipped_rows": 0}

    def run(self, database: Database, gamma: GammaApi) -> LookupResult | None:
        """Look up what left the active set; never raises (a failure is recorded, and what was
        not checked is asked again next time). None when another lookup is running."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._run(database, gamma)
        finally:
            self._lock.release()

    def _run(self, database: Database, gamma: GammaApi) -> LookupResult:
        started = time.perf_counter()
        batch = _Batch({}, [])
        failure: BaseException | None = None
        result = LookupResult()
        try:
            with deadline.within(LOOKUP_DEADLINE_S):
                ids = database.run(lambda cur: store.resolution_candidates(
                    cur, MAX_CHECKS_PER_REFRESH, RECHECK_AFTER_H, RECHECK_WINDOW_DAYS))
                if ids:
                    try:
                        _look_up(gamma, ids, batch)
                    except UpstreamError as error:
                        failure = error  # what came before the failed request is still stored
                    if batch.checked or batch.records:
                        stored, refused = database.run(lambda cur: _store(cur, batch))
                    else:
                        stored, refused = 0, 0
                    settled = sum(winner_index(r) is not None for r in batch.records.values())
                    result = LookupResult(
                        asked=len(ids), requests=batch.requests, stored=stored, settled=settled,
                        not_found=len([c for c in batch.checked if c not in batch.records]),
                        skipped_rows=batch.skipped + refused, seconds=round(time.perf_counter() - started, 2))
        except Exception as error:  # the database, or a bug: the refresh stands either way
            failure = error
        self._record(result, failure)
        return result

    def _record(self, result: LookupResult, failure: BaseException | None) -> None:
        self.last = result
        self.last_run_at = datetime.now(UTC)
        totals = self.totals
        totals["runs"] += 1
        totals["requests"] += result.requests
        totals["stored"] += result.stored
        totals["settled"] += result.settled
        totals["skipped_rows"] += result.skipped_rows
        if failure is None:
            self.failures = 0
            self.last_error = None
            if result.asked:
                log.info("closed markets looked up: %s", result)
            return
        self.failures += 1
        totals["failed"] += 1
        self.last_error = _reason(failure)
        if isinstance(failure, AppError):
            log.warning("%s; retried at the next refresh (%s)", self.last_error, result)
        else:
            log.exception("%s; retried at the next refresh", self.last_error)

    def status(self) -> dict[str, Any]:
        """For /api/health?deep=true, under markets: without any I/O."""
        return {
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last": asdict(self.last) if self.last else None,
            "last_error": self.last_error,
            "failures_in_a_row": self.failures,
            "totals": dict(self.totals),
        }
