"""The downsampling policy and the job that applies it.

* Captures (one row per market whose values changed, ``history_raw``) are packed into 5-minute
  chunks (one row per market and day) once they are ``RAW_KEEP_S`` old;
* 5-minute points older than ``FIVE_MINUTE_DAYS`` days become hourly points (chunks of 8 days);
* hourly points older than PRICE_HISTORY_RETENTION_DAYS become daily points (chunks of 256
  days), kept for as long as the market is stored: a resolved market's history outlives it.

Each coarser point keeps the first open, the highest high, the lowest low and the last close of
the points it replaces (and the last bid, ask, trade and volume), so a candle or a mover over a
long range sees the extremes the finer points had.

The job works through the markets in batches, one transaction each, under a transaction-scoped
advisory lock (a second instance finds it taken and stops), within a time budget (the next run
carries on). Each batch moves points and deletes what it moved in one transaction, so a run
that stops halfway, or runs again, neither loses nor doubles a point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg2.extras

from shared.db.database import Cursor, Database
from shared.history.points import DAY_S, SPAN_DAYS, Native, chunk_start_day, decode, downsample, encode
from shared.history.series import latest_natives

# Arbitrary constant: the advisory lock a compaction batch takes.
COMPACT_LOCK_KEY = 7_336_104_214
RAW_KEEP_S = 15 * 60  # the newest captures stay rows: a refresh's writes never meet the job's
FIVE_MINUTE_DAYS = 7
COMPACT_BATCH = 2_000  # markets per transaction
COMPACT_BUDGET_S = 240.0  # the Functions timeout is 5 min; the next run carries on


@dataclass
class CompactResult:
    status: str = "complete"  # "complete" | "partial" (budget spent) | "busy" (another instance)
    packed_rows: int = 0  # raw captures packed
    rolled_hourly: int = 0  # 5-minute chunks rolled up into hourly ones
    rolled_daily: int = 0  # hourly chunks rolled up into daily ones
    batches: int = 0
    unreadable: int = 0  # chunks that did not decode (kept, not rewritten)
    seconds: float = 0.0
    cutoffs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compact(database: Callable[[], Database], retention_days: int, *, now: datetime | None = None,
            batch: int = COMPACT_BATCH, budget_s: float = COMPACT_BUDGET_S) -> CompactResult:
    """Apply the policy to every market, ``batch`` markets per transaction, within ``budget_s``."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    raw_before = now - timedelta(seconds=RAW_KEEP_S)
    today = int(now.timestamp()) // DAY_S
    hourly_before = today - FIVE_MINUTE_DAYS  # days before this one: 5-minute chunks roll up
    daily_before = today - retention_days
    result = CompactResult(cutoffs={"raw_before": raw_before.isoformat(),
                                    "five_minute_from_day": str(hourly_before),
                                    "hourly_from_day": str(daily_before)})
    db = database()
    top = db.run(_max_series)
    for low in range(1, top + 1, batch):
        if result.batches and time.monotonic() - started > budget_s:
            result.status = "partial"
            break
        high = low + batch
        done = db.run(partial(_batch, low=low, high=high, raw_before=raw_before, hourly_before=hourly_before,
                              daily_before=daily_before))
        if done is None:
            result.status = "busy"
            break
        packed, hourly, daily, unreadable = done
        result.packed_rows += packed
        result.rolled_hourly += hourly
        result.rolled_daily += daily
        result.unreadable += unreadable
        result.batches += 1
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _max_series(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(series_id), 0) AS top FROM history_series")
    row = cur.fetchone()
    assert row is not None, "an aggregate without GROUP BY returns one row"
    return int(row["top"])


def _batch(cur: Cursor, low: int, high: int, raw_before: datetime, hourly_before: int,
           daily_before: int) -> tuple[int, int, int, int] | None:
    cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (COMPACT_LOCK_KEY,))
    row = cur.fetchone()
    if row is None or not row["locked"]:
        return None
    packed = pack_raw(cur, low, high, raw_before)
    hourly, bad_hourly = roll_up(cur, low, high, 300, 3_600, hourly_before)
    daily, bad_daily = roll_up(cur, low, high, 3_600, 86_400, daily_before)
    return packed, hourly, daily, bad_hourly + bad_daily


def pack_raw(cur: Cursor, low: int, high: int, before: datetime) -> int:
    """Move the captures older than ``before`` of series [low, high) into 5-minute chunks."""
    cur.execute(
        """
        DELETE FROM history_raw WHERE series_id >= %s AND series_id < %s AND ts < %s
        RETURNING series_id, extract(epoch FROM ts)::bigint AS ts, price, bid, ask, last, volume
        """,
        (low, high, before),
    )
    rows = cur.fetchall()
    fresh: dict[int, list[Native]] = {}
    for r in rows:
        p, ts = r["price"], int(r["ts"])
        fresh.setdefault(r["series_id"], []).append(  # at its 5 minutes' start: one capture opens them
            Native(ts - ts % 300, p, p, p, p, r["bid"], r["ask"], r["last"], int(r["volume"]), 1))
    _merge_into(cur, {s: downsample(p, 300) for s, p in fresh.items()}, 300)
    return len(rows)


def roll_up(cur: Cursor, low: int, high: int, source: int, target: int, before_day: int) -> tuple[int, int]:
    """Replace the ``source``-period chunks of series [low, high) that end by ``before_day`` with
    ``target``-period points. Returns (chunks rolled up, chunks that did not decode)."""
    cur.execute(
        """
        SELECT series_id, start_day, points FROM history_chunks
         WHERE series_id >= %s AND series_id < %s AND period_s = %s AND start_day + %s <= %s
        """,
        (low, high, source, SPAN_DAYS[source], before_day),
    )
    rows = cur.fetchall()
    moving: dict[int, list[Native]] = {}
    done: list[tuple[int, int]] = []
    unreadable = 0
    for r in rows:
        try:
            points = decode(r["points"], r["start_day"])
        except ValueError:
            unreadable += 1
            continue
        moving.setdefault(r["series_id"], []).extend(points)
        done.append((r["series_id"], r["start_day"]))
    if done:
        psycopg2.extras.execute_values(
            cur,
            "DELETE FROM history_chunks c USING (VALUES %s) AS d (series_id, start_day) "
            f"WHERE c.series_id = d.series_id AND c.start_day = d.start_day AND c.period_s = {int(source)}",
            done, page_size=len(done),
        )
    # What each series stood at before its first moved point: the open of a period it enters late.
    before = latest_natives(cur, {s: min(p.ts for p in points) - 1 for s, points in moving.items()})
    _merge_into(cur, {s: downsample(p, target, before[s][1] if s in before else None) for s, p in moving.items()},
                target)
    return len(done), unreadable


def _merge_into(cur: Cursor, fresh: dict[int, list[Native]], period_s: int) -> None:
    """Add points to the ``period_s`` chunks of their series, merging with what is stored."""
    by_chunk: dict[tuple[int, int], list[Native]] = {}
    for series_id, points in fresh.items():
        for point in points:
            by_chunk.setdefault((series_id, chunk_start_day(point.ts, period_s)), []).append(point)
    if not by_chunk:
        return
    cur.execute(
        "SELECT c.series_id, c.start_day, c.points FROM history_chunks c "
        "JOIN unnest(%s::int[], %s::int[]) AS k (series_id, start_day) "
        "ON c.series_id = k.series_id AND c.start_day = k.start_day WHERE c.period_s = %s",
        ([k[0] for k in by_chunk], [k[1] for k in by_chunk], period_s),
    )
    for r in cur.fetchall():
        try:
            stored = decode(r["points"], r["start_day"])
        except ValueError:
            stored = []  # unreadable: the new points replace it rather than be lost with it
        by_chunk[(r["series_id"], r["start_day"])].extend(stored)
    write_chunks(cur, ((s, d, period_s, downsample(p, period_s)) for (s, d), p in by_chunk.items()))


def write_chunks(cur: Cursor, chunks: Iterable[tuple[int, int, int, list[Native]]]) -> int:
    """Upsert (series_id, start_day, period_s, points) chunks; returns how many."""
    rows = [(s, period, day, psycopg2.Binary(encode(points, day))) for s, day, period, points in chunks if points]
    if rows:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO history_chunks (series_id, period_s, start_day, points) VALUES %s "
            "ON CONFLICT (series_id, period_s, start_day) DO UPDATE SET points = EXCLUDED.points",
            rows, page_size=500,
        )
    return len(rows)

