"""Backfill of Polymarket's own price history for tokens nobody asked about, so a market's
chart, candles and sparkline have a past before our captures started.

A timer (``function_app.backfill_price_history``, on the catalogue refresh's schedule) claims
up to ``MAX_TOKENS_PER_RUN`` first-outcome tokens of open markets that have no stored upstream
history and were never asked (``price_backfill``), highest volume first, and asks for them
``BATCH`` at a time through ``POST /batch-prices-history``: the last week, hourly. Points land
in ``price_samples`` (source ``upstream_history``), read by ``/api/price`` history, candles
and sparklines (``shared.markets.trends``). A token is remembered once asked, even when
upstream had nothing for it; a failed call releases its tokens for the next run. Never on the
request path, never raises.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from shared.core import deadline
from shared.core.errors import AppError, UpstreamBadResponse, UpstreamError
from shared.prices import store
from shared.prices.quotes import read_history
from shared.prices.rejections import Rejections

if TYPE_CHECKING:
    from shared.db.database import Cursor, Database
    from shared.upstream.polymarket import ClobApi

log = logging.getLogger("polymarket_api.backfill")

PATH = "/batch-prices-history"
BATCH = 20  # upstream's cap per call (contract §3.18)
MAX_TOKENS_PER_RUN = 400  # 20 calls per refresh
SPAN_S = 7 * 86_400  # the 7-day sparkline's window; upstream caps a window at 15 days
FIDELITY_MIN = 60  # hourly: finer than both sparklines' steps past the first day
RUN_DEADLINE_S = 120.0
# A claim whose run died before it ended (no points recorded) is given out again after this.
CLAIM_EXPIRY = timedelta(hours=1)


@dataclass
class BatchRead:
    """One batch answer, validated: per asked token its points (absent: upstream had none)."""

    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    tokens_skipped: int = 0
    points_skipped: int = 0
    reason: str = ""


def read_batch(raw: Any, asked: Sequence[str], now: float | None = None) -> BatchRead:
    """``{"history": {token: [{"t", "p"}]}}`` for the ``asked`` tokens. A token whose value is
    not a list of points is skipped, a bad point is skipped (as ``read_history`` does), each
    counted; tokens not asked are ignored. A body that is not such a map raises
    UpstreamBadResponse."""
    if not isinstance(raw, dict) or not isinstance(raw.get("history"), dict):
        raise UpstreamBadResponse("clob", "bad batch-prices-history: history is not a map")
    history = raw["history"]
    out = BatchRead()
    for token in asked:
        value = history.get(token)
        if value is None:
            continue
        try:
            read = read_history({"history": value}, now)
        except UpstreamBadResponse as error:
            out.tokens_skipped += 1
            out.reason = out.reason or error.detail
            continue
        out.points[token] = read.points
        if read.rejected:
            out.points_skipped += read.rejected
            out.reason = out.reason or read.rejection
    return out


# --- SQL ---------------------------------------------------------------------------------------

_CLAIM_SQL = """
INSERT INTO price_backfill (token_id, asked_at, points)
SELECT o.token_id, now(), NULL
  FROM markets m JOIN outcome_tokens o USING (condition_id)
 WHERE m.in_active_set AND NOT m.closed AND o.outcome_index = 0 AND o.token_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM price_backfill b
                    WHERE b.token_id = o.token_id AND (b.points IS NOT NULL OR b.asked_at > now() - %(expiry)s))
   AND NOT EXISTS (SELECT 1 FROM price_samples s
                    WHERE s.token_id = o.token_id AND s.source = 'upstream_history')
 ORDER BY m.volume DESC NULLS LAST, o.token_id
 LIMIT %(limit)s
ON CONFLICT (token_id) DO UPDATE SET asked_at = now()
 WHERE price_backfill.points IS NULL AND price_backfill.asked_at <= now() - %(expiry)s
RETURNING token_id
"""


def claim(cur: Cursor, limit: int) -> list[str]:
    """Claim up to ``limit`` tokens to ask about (committed with the caller's transaction)."""
    cur.execute(_CLAIM_SQL, {"limit": limit, "expiry": CLAIM_EXPIRY})
    return [row["token_id"] for row in cur.fetchall()]


def release(cur: Cursor, tokens: Sequence[str]) -> None:
    """Forget claims whose call failed: the next run asks again."""
    cur.execute("DELETE FROM price_backfill WHERE token_id = ANY(%s) AND points IS NULL", (list(tokens),))


def record(cur: Cursor, tokens: Sequence[str], samples: Sequence[store.Sample]) -> int:
    """Store the samples and mark every asked token done (with how many points it got)."""
    added = store.insert_samples(cur, samples)
    counts = dict.fromkeys(tokens, 0)
    for sample in samples:
        counts[sample.token_id] = counts.get(sample.token_id, 0) + 1
    cur.execute(
        """
        UPDATE price_backfill b SET points = c.points
          FROM unnest(%s::text[], %s::int[]) AS c(token_id, points)
         WHERE b.token_id = c.token_id
        """,
        (list(counts), list(counts.values())),
    )
    return added


def stored_points(cur: Cursor, tokens: Sequence[str], start: datetime, end: datetime
                  ) -> dict[str, list[tuple[int, float]]]:
    """Per token, its stored upstream history points in [start, end], ascending (epoch, price)."""
    if not tokens:
        return {}
    cur.execute(
        """
        SELECT token_id, floor(extract(epoch FROM ts))::bigint AS t, COALESCE(midpoint, price) AS p
          FROM price_samples
         WHERE token_id = ANY(%s) AND source = 'upstream_history' AND ts >= %s AND ts <= %s
           AND price BETWEEN 0 AND 1 AND (midpoint IS NULL OR midpoint BETWEEN 0 AND 1)
         ORDER BY token_id, ts
        """,
        (list(tokens), start, end),
    )
    out: dict[str, list[tuple[int, float]]] = {}
    for row in cur.fetchall():
        out.setdefault(row["token_id"], []).append((int(row["t"]), float(row["p"])))
    return out


# --- the job -----------------------------------------------------------------------------------


class Backfill:
    """The background backfill and its counts (deep health). ``database`` and ``clob`` are
    providers: neither is built before the first run."""

    def __init__(self, database: Callable[[], Database], clob: Callable[[], ClobApi],
                 rejections: Rejections | None = None, max_tokens: int = MAX_TOKENS_PER_RUN) -> None:
        self._database = database
        self._clob = clob
        self.rejections = rejections or Rejections()
        self.max_tokens = max_tokens
        self._lock = threading.Lock()  # one run at a time in this instance
        self.totals = {"runs": 0, "tokens_asked": 0, "calls": 0, "calls_failed": 0, "points_stored": 0,
                       "tokens_skipped": 0, "points_skipped": 0}
        self.last_run_at: str | None = None
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        return {**self.totals, "last_run_at": self.last_run_at, "last_error": self.last_error,
                "max_tokens_per_run": self.max_tokens, "batch": BATCH}

    def run(self) -> dict[str, int] | None:
        """One bounded pass; never raises. None when another run is going on in this instance."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            with deadline.within(RUN_DEADLINE_S):
                return self._run()
        except Exception as error:  # a database failure or a bug: recorded, never the timer's end
            self.last_error = error.code if isinstance(error, AppError) else type(error).__name__
            log.warning("price history backfill stopped: %s", self.last_error)
            return None
        finally:
            self.totals["runs"] += 1
            self.last_run_at = datetime.now(UTC).isoformat()
            self._lock.release()

    def _run(self) -> dict[str, int]:
        db = self._database()
        tokens = db.run(lambda cur: claim(cur, self.max_tokens))
        done = {"tokens": 0, "calls": 0, "points": 0}
        error: UpstreamError | None = None
        for i in range(0, len(tokens), BATCH):
            chunk = tokens[i:i + BATCH]
            if error is None:
                try:
                    self._one(db, chunk, done)
                    continue
                except UpstreamError as failure:
                    error = failure
            # The failed call's tokens and those after it: the next run asks for them.
            db.run(partial(release, tokens=chunk))
        if error is None and tokens:
            self.last_error = None
        log.info("price history backfill: %d tokens in %d calls, %d points", done["tokens"], done["calls"],
                 done["points"])
        return done

    def _one(self, db: Database, chunk: list[str], done: dict[str, int]) -> None:
        end = int(time.time())
        body = {"markets": chunk, "start_ts": end - SPAN_S, "end_ts": end, "fidelity": FIDELITY_MIN}
        self.totals["calls"] += 1
        done["calls"] += 1
        try:
            raw = self._clob().direct.post(PATH, body)
            read = read_batch(raw, chunk, end)
        except UpstreamError as error:
            self.totals["calls_failed"] += 1
            self.last_error = error.summary()
            if isinstance(error, UpstreamBadResponse):
                self.rejections.add("history_bodies", 1, None, error.detail)
            log.warning("price history backfill call failed: %s", self.last_error)
            raise
        samples: list[store.Sample] = []
        refused = 0
        now = datetime.now(UTC)
        for token, points in read.points.items():
            for t, p in points:
                sample = store.Sample(token, datetime.fromtimestamp(t, UTC), p, midpoint=p,
                                      source=store.SOURCE_HISTORY)
                if not math.isfinite(p) or sample.problem(now) is not None:
                    refused += 1
                    continue
                samples.append(sample)
        if read.tokens_skipped:
            self.rejections.add("history_bodies", read.tokens_skipped, None, read.reason)
        if read.points_skipped or refused:
            self.rejections.add("history_points", read.points_skipped + refused, None,
                                read.reason or "point outside the sane window")
        added = db.run(lambda cur: record(cur, chunk, samples))
        self.totals["tokens_asked"] += len(chunk)
        self.totals["tokens_skipped"] += read.tokens_skipped
        self.totals["points_skipped"] += read.points_skipped + refused
        self.totals["points_stored"] += added
        done["tokens"] += len(chunk)
        done["points"] += added
