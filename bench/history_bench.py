"""Price history benchmark: the storage of 90 days of captures for 50,000 markets, the time each
refresh spends writing captures, the compaction job, and reads of 50 tokens at once.

    .venv/bin/python -m bench.history_bench [--markets 50000] [--days 90] [--distinct 1000]
                                            [--refreshes 12] [--reads 30]

On a throw-away embedded PostgreSQL:

1. ``--distinct`` market histories are simulated capture by capture (every 5 minutes for
   ``--days`` days; most markets change on 10-30 % of refreshes, one in twenty on every one),
   kept as the policy keeps them (only changes; 5-minute points for the last 7 days, hourly
   before: ``shared.history.downsample``) and packed by the job's own encoder; then copied, by
   SQL, to all ``--markets`` series. A copy costs the same bytes on disk as a fresh history
   with the same statistics (PostgreSQL neither dedupes nor compresses the packed points);
2. ``--refreshes`` catalogue refreshes of all markets (the last hour, the same change rates),
   each through ``record_refresh`` page by page in one transaction, as the catalogue refresh
   calls it: seconds per refresh;
3. the compaction job: packing that hour of captures, then a day rolling up to hourly points;
4. bytes on disk (tables, indexes, TOAST), in all and per market-day;
5. ``series`` for 50 random tokens: 24 h at 5 minutes and at 1 hour, 7 days at 1 hour (p50,
   p99 ms; random tokens over a 1 GB store, so the p99 is mostly cold pages).

Prints a table; asserts nothing (figures, not a test).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import ROOT, percentile

if TYPE_CHECKING:
    from shared.db.database import Cursor, Database
    from shared.history.points import Native
    from shared.history.store import CaptureCounts
    from shared.markets.rows import MarketRecord

PAGE = 100  # the catalogue refresh's page size
STEP_S = 300


@dataclass
class Sim:
    """One market's simulated book: price and spread in ticks, volume in USDC, change rate."""

    price: int
    spread: int
    volume: int
    rate: float


def change_rate(rng: random.Random) -> float:
    """Per market: most change on 10-30 % of refreshes, a heavy-tailed few on every one."""
    return 1.0 if rng.random() < 0.05 else rng.uniform(0.10, 0.30)


def simulate(seed: int, start_s: int, steps: int) -> tuple[list[Native], float]:
    """One market's stored 5-minute points (only the changes) over ``steps`` refreshes."""
    from shared.history.points import Native

    rng = random.Random(seed)
    p = change_rate(rng)
    price = rng.randint(200, 9_800) // 10 * 10
    spread = rng.choice((10, 20, 100, 200))
    volume = rng.randint(1_000, 5_000_000)
    out = []
    for i in range(steps):
        if i and rng.random() >= p:
            continue
        price = min(9_990, max(10, price + rng.choice((-1, 1)) * rng.choice((5, 10, 10, 50, 100))))
        volume += rng.randint(0, 20_000)
        bid, ask = max(0, price - spread // 2), min(10_000, price + spread // 2)
        out.append(Native(start_s + i * STEP_S, price, price, price, price, bid, ask, price + rng.choice((-5, 0, 5)),
                          volume, 1))
    return out, p


def synth_chunks(series_ids: range, days: int, today: int) -> tuple[list[tuple[int, int, int, list[Native]]], int]:
    """The chunks of these markets' histories as the policy keeps them on ``today``."""
    from shared.history.downsample import FIVE_MINUTE_DAYS
    from shared.history.points import chunk_start_day, downsample

    first_day = today - days
    chunks: list[tuple[int, int, int, list[Native]]] = []
    points = 0
    for series_id in series_ids:
        natives, _ = simulate(series_id, first_day * 86_400, days * 288)
        recent = [n for n in natives if n.ts // 86_400 >= today - FIVE_MINUTE_DAYS]
        older = [n for n in natives if n.ts // 86_400 < today - FIVE_MINUTE_DAYS]
        by_chunk: dict[tuple[int, int], list[Native]] = {}
        for period, packed in ((3_600, downsample(older, 3_600)), (300, recent)):
            for point in packed:
                by_chunk.setdefault((period, chunk_start_day(point.ts, period)), []).append(point)
        for (period, day), group in by_chunk.items():
            chunks.append((series_id, day, period, group))
            points += len(group)
    return chunks, points


def write_refresh(cur: Cursor, records: list[MarketRecord], at: datetime) -> list[CaptureCounts]:
    """A refresh's captures as the catalogue refresh writes them: page by page, one transaction."""
    from shared.history.store import record_refresh

    return [record_refresh(cur, records[i:i + PAGE], at) for i in range(0, len(records), PAGE)]


def sizes(db: Database) -> dict[str, int]:
    rows = db.query(
        "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
        "WHERE c.relname IN ('history_series', 'history_raw', 'history_chunks')"
    )
    return {r["name"]: int(r["bytes"]) for r in rows}


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--distinct", type=int, default=1_000, help="market histories simulated (then copied)")
    parser.add_argument("--refreshes", type=int, default=12, help="full refreshes written and timed")
    parser.add_argument("--reads", type=int, default=30, help="reads of 50 tokens per measured row")
    args = parser.parse_args()
    distinct = min(args.distinct, args.markets)
    sys.path.insert(0, str(ROOT))
    from devtools.embedded_db import start_embedded

    work = Path(tempfile.mkdtemp(prefix="history-bench-"))
    database = start_embedded(work / "pg")
    try:
        os.environ.update(database.env())
        return run(args.markets, args.days, distinct, args.refreshes, args.reads)
    finally:
        database.stop()
        shutil.rmtree(work, ignore_errors=True)  # a gigabyte at the default size


def run(markets: int, days: int, distinct: int, refreshes: int, reads: int) -> int:
    from shared.db.database import get_database
    from shared.history import downsample as job
    from shared.history.downsample import write_chunks
    from shared.history.series import series
    from shared.markets.rows import MarketRecord, Outcome

    db = get_database()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if now.hour == 0:
        now += timedelta(hours=1)  # the refreshed hour stays within one day
    today = int(now.timestamp()) // 86_400
    rows: list[tuple[str, str]] = []

    def record(n: int, price: int, spread: int, volume: int) -> MarketRecord:
        bid, ask = Decimal(max(0, price - spread // 2)) / 10_000, Decimal(min(10_000, price + spread // 2)) / 10_000
        return MarketRecord(
            condition_id=f"0x{n:064x}", gamma_id=str(n), slug=None, question="?", description=None, category=None,
            tags=(), event_id=None, event_slug=None, event_title=None, end_date=None, closed=False,
            accepting_orders=True, enable_order_book=True, neg_risk=False, volume=Decimal(volume),
            volume_24h=None, liquidity=None, best_bid=bid, best_ask=ask, last_trade_price=Decimal(price) / 10_000,
            spread=ask - bid, one_day_price_change=None, tick_size=Decimal("0.01"),
            outcomes=(Outcome(0, "Yes", str(2 * n + 10), None), Outcome(1, "No", str(2 * n + 11), None)),
        )

    # 1. the series (the first refresh that sees each market), then the synthetic past.
    rng = random.Random(1)
    state = [Sim(rng.randint(200, 9_800) // 10 * 10, rng.choice((10, 20, 100, 200)), rng.randint(1_000, 10**7),
                 change_rate(rng)) for _ in range(markets)]
    current = [record(n + 1, s.price, s.spread, s.volume) for n, s in enumerate(state)]
    first_at = now - timedelta(days=days)
    started = time.perf_counter()
    db.run(partial(write_refresh, records=current, at=first_at), timeout_s=600)
    rows.append(("first refresh (creates 50k series)" if markets == 50_000 else "first refresh (creates series)",
                 f"{time.perf_counter() - started:.2f} s"))
    db.run(lambda cur: cur.execute("TRUNCATE history_raw"))
    started = time.perf_counter()
    points = 0
    for low in range(1, distinct + 1, 100):  # a hundred at a time: memory stays flat
        chunks, count = synth_chunks(range(low, min(low + 100, distinct + 1)), days, today)
        db.run(partial(write_chunks, chunks=chunks), timeout_s=600)
        points += count
    rows.append((f"simulate and pack {distinct} histories x {days} d", f"{time.perf_counter() - started:.1f} s, "
                 f"{points:,} stored points ({points / distinct / days:.0f} per market-day)"))
    started = time.perf_counter()
    copies = -(-markets // distinct) - 1
    if copies:
        db.run(lambda cur: cur.execute(
            "INSERT INTO history_chunks (series_id, period_s, start_day, points) "
            "SELECT c.series_id + k * %(d)s, c.period_s, c.start_day, c.points "
            "FROM history_chunks c CROSS JOIN generate_series(1, %(k)s) AS k "
            "WHERE c.series_id + k * %(d)s <= %(m)s", {"d": distinct, "k": copies, "m": markets}), timeout_s=1800)
    rows.append((f"copy them to {markets:,} series", f"{time.perf_counter() - started:.1f} s"))

    # 2. the last hour's refreshes, timed.
    seconds = []
    written = []
    for refresh in range(refreshes):
        at = now - timedelta(minutes=5 * (refreshes - refresh))
        for i, s in enumerate(state):
            if rng.random() < s.rate:
                s.price = min(9_990, max(10, s.price + rng.choice((-1, 1)) * rng.choice((5, 10, 50, 100))))
                s.volume += rng.randint(0, 20_000)
                current[i] = record(i + 1, s.price, s.spread, s.volume)
        started = time.perf_counter()
        counts = db.run(partial(write_refresh, records=current, at=at), timeout_s=600)
        seconds.append(time.perf_counter() - started)
        written.append(sum(c.written for c in counts))
    rows.append((f"refresh capture write ({markets:,} markets, {refreshes} refreshes)",
                 f"p50 {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s, "
                 f"{statistics.mean(written):,.0f} rows each ({statistics.mean(written) / markets:.0%})"))
    raw_peak = sizes(db)["history_raw"]

    # 3. the job: the hour's captures packed, then a day rolled up.
    result = job.compact(get_database, 90, now=now + timedelta(minutes=20), budget_s=1_800)
    rows.append(("compaction: pack the hour's captures", f"{result.seconds:.1f} s, {result.packed_rows:,} rows, "
                 f"{result.batches} batches"))
    result = job.compact(get_database, 90, now=now + timedelta(days=1), budget_s=1_800)
    rows.append(("compaction: a day of 5-min points to hourly", f"{result.seconds:.1f} s, "
                 f"{result.rolled_hourly:,} chunks"))

    # 4. bytes on disk.
    conn_sizes = sizes(db)
    total = sum(conn_sizes.values())
    for name, size in sorted(conn_sizes.items()):
        rows.append((f"bytes: {name} (with indexes, TOAST)", mb(size)))
    rows.append(("bytes: raw captures at their peak (an hour)", mb(raw_peak)))
    rows.append((f"bytes on disk, {markets:,} markets x {days} d", f"{mb(total)} ({total / 1e9:.2f} GB)"))
    rows.append(("bytes per market-day", f"{total / markets / days:,.0f} B"))
    chunk_rows = db.query("SELECT period_s, count(*) AS n, avg(octet_length(points)) AS b FROM history_chunks "
                          "GROUP BY period_s ORDER BY period_s")
    for r in chunk_rows:
        rows.append((f"chunks of {r['period_s']} s points", f"{r['n']:,} rows, {float(r['b']):,.0f} B packed each"))

    # 5. reads: 50 tokens at once.
    end = now - timedelta(minutes=5)
    for label, span, resolution in (("24 h at 5 min", timedelta(hours=24), "5m"),
                                    ("24 h at 1 h", timedelta(hours=24), "1h"),
                                    ("7 d at 1 h", timedelta(days=7), "1h")):
        latencies = []
        for _ in range(reads):
            tokens = [str(2 * rng.randint(1, markets) + 10 + rng.randint(0, 1)) for _ in range(50)]
            started = time.perf_counter()
            got = db.run(partial(series, token_ids=tokens, start=end - span, end=end, resolution=resolution))
            latencies.append((time.perf_counter() - started) * 1000)
        points_each = statistics.mean(len(v) for v in got.values())
        rows.append((f"series, 50 tokens, {label}", f"p50 {statistics.median(latencies):.0f} ms, "
                     f"p99 {percentile(latencies, 0.99):.0f} ms, {points_each:.0f} points each"))
    width = max(len(k) for k, _ in rows)
    print(f"history bench: {markets:,} markets, {days} days, {distinct:,} distinct histories")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
