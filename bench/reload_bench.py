"""Reload benchmark: the process's memory over 100 catalogue reloads.

    .venv/bin/python -m bench.reload_bench [--markets 5000] [--reloads 100] [--mode refresh|reload]

Against the Polymarket stand-in (a subprocess, so its memory is not counted) on a throw-away
embedded PostgreSQL, in this process: one full refresh, then ``--reloads`` more, each forced the
way ``refresh=true`` forces one with MARKETS_REFRESH_MIN_INTERVAL_S=0 (``refresh``: a crawl of
Gamma, the upsert, then the snapshot reload), or the snapshot reload alone (``reload``). Prints
RSS after every 10, and the time each took. Issue 11 saw RSS climb with every reload
(``gc.freeze()`` made the garbage pending at each load permanent); flat RSS is the fix.

Asserts nothing (figures, not a test).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from bench.common import bench_stack


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=5_000)
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--mode", choices=("refresh", "reload"), default="refresh")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every upstream call")
    args = parser.parse_args()
    with bench_stack("reload", args.markets, args.latency_ms) as stack:
        os.environ.update(stack.env)  # the service runs in this process: its memory is what we measure
        os.environ["MARKETS_REFRESH_MIN_INTERVAL_S"] = "0"

        from shared.markets.service import get_markets_service

        service = get_markets_service()
        first = service.refresh(min_age_s=0)
        print(f"\nreload benchmark: {first.markets:,} markets, mode {args.mode}, {os.cpu_count()} CPUs, "
              f"Python {sys.version.split()[0]}")
        print(f"after the first load: RSS {rss_mb():.0f} MB, {gc.get_freeze_count():,} objects frozen\n")
        print(f"{'reloads':>8} {'RSS MB':>8} {'frozen objects':>15} {'ms per reload':>14}")
        started = time.perf_counter()
        for done in range(1, args.reloads + 1):
            if args.mode == "refresh":
                result = service.refresh(min_age_s=0)
                assert result.status == "refreshed", result
            else:
                service._reload()
            if done % 10 == 0:
                per_reload = (time.perf_counter() - started) / 10 * 1000
                print(f"{done:>8} {rss_mb():>8.0f} {gc.get_freeze_count():>15,} {per_reload:>14.0f}")
                started = time.perf_counter()
        status = service.status()
        print(f"\nserved: {status['markets']:,} markets; last_error: {status['last_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
