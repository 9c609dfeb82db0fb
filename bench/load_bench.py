"""Load: concurrent clients on a mix of endpoints through the local host, with upstream latency.

    .venv/bin/python -m bench.load_bench [--clients 100] [--seconds 30] [--latency-ms 50] [--markets 5000]

Starts a throw-away embedded PostgreSQL, the Polymarket stand-in (a subprocess, with added
latency on every call) and the local host (a subprocess), loads the catalogue, then runs
``clients`` threads for ``seconds``, each sending one request after another from a fixed mix
(markets list, search, one market, one price, a batch of prices, a book). Prints p50/p99 per
endpoint, errors, and upstream requests per 1,000 client requests. ``tests/test_load.py`` runs
the same ``run_load`` for a shorter time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench.common import bench_stack, percentile

WORDS = ["will", "bitcoin", "election", "price", "win", "above", "december", "cup", "rate", "senate"]


@dataclass
class Sample:
    endpoint: str
    status: int
    ms: float


@dataclass
class LoadReport:
    clients: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    upstream_requests: int = 0

    @property
    def errors(self) -> list[Sample]:
        # 4xx/5xx are errors here: the mix only sends valid requests for existing ids.
        return [s for s in self.samples if s.status >= 400 or s.status == 0]

    def lines(self) -> list[str]:
        out = [
            (f"load: {self.clients} clients for {self.seconds:.0f} s: {len(self.samples):,} requests "
            f"({len(self.samples) / self.seconds:,.0f}/s), {len(self.errors)} errors, "
            f"{1000 * self.upstream_requests / max(1, len(self.samples)):.1f} upstream requests "
            f"per 1,000 client requests ({self.upstream_requests:,} in all)"),
            f"{'endpoint':<22} {'requests':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}",
        ]
        for name in sorted({s.endpoint for s in self.samples}):
            times = sorted(s.ms for s in self.samples if s.endpoint == name)
            errors = sum(1 for s in self.errors if s.endpoint == name)
            p99 = percentile(times, 0.99)
            out.append(f"{name:<22} {len(times):>9,} {statistics.median(times):>9.1f} {p99:>9.1f} {errors:>7}")
        return out


def mix(condition_ids: list[str], token_ids: list[str]) -> list[tuple[str, int, Callable[[random.Random], str]]]:
    """(name, weight, path maker): roughly what a dashboard does."""
    return [
        ("markets page", 25, lambda r: f"/api/markets?limit=50&sort={r.choice(['volume', 'volume_24h', 'liquidity'])}"),
        ("markets search", 10, lambda r: f"/api/markets?limit=20&q={r.choice(WORDS)}"),
        ("market", 10, lambda r: f"/api/markets/{r.choice(condition_ids)}"),
        ("price", 35, lambda r: f"/api/price/{r.choice(token_ids)}?history=false"),
        ("prices batch", 10, lambda r: "/api/prices?token_ids=" + ",".join(r.sample(token_ids, 20))),
        ("book", 10, lambda r: f"/api/book/{r.choice(token_ids)}?depth=10"),
    ]


def run_load(base_url: str, *, clients: int, seconds: float, condition_ids: list[str], token_ids: list[str],
             upstream_count: Callable[[], int], seed: int = 1) -> LoadReport:
    report = LoadReport(clients, seconds)
    choices = mix(condition_ids, token_ids)
    weights = [weight for _, weight, _ in choices]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    before = upstream_count()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        local: list[Sample] = []
        with httpx.Client(base_url=base_url, timeout=60) as http:
            start.wait()
            while time.monotonic() < deadline:
                name, _, make = rng.choices(choices, weights)[0]
                began = time.perf_counter()
                try:
                    status = http.get(make(rng)).status_code
                except httpx.HTTPError:
                    status = 0
                local.append(Sample(name, status, (time.perf_counter() - began) * 1000))
        with lock:
            report.samples.extend(local)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.upstream_requests = upstream_count() - before
    return report


# --- stand-alone run --------------------------------------------------------------------------






def ids_from(base: str) -> tuple[list[str], list[str]]:
    markets = httpx.get(f"{base}/api/markets", params={"limit": 500}, timeout=120).json()["markets"]
    condition_ids = [m["condition_id"] for m in markets]
    token_ids = [o["token_id"] for m in markets for o in m["outcomes"] if o["token_id"]]
    return condition_ids, token_ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--markets", type=int, default=5000)
    args = parser.parse_args()
    with bench_stack("load", args.markets, args.latency_ms) as stack:
        base = stack.start_app()
        condition_ids, token_ids = ids_from(base)

        def upstream_count() -> int:  # both hosts' requests, from either port
            return int(httpx.get(f"{stack.control}/counts", timeout=10).json()["total"])

        report = run_load(base, clients=args.clients, seconds=args.seconds, condition_ids=condition_ids,
                          token_ids=token_ids, upstream_count=upstream_count)
    print(f"\n{args.markets:,} markets, +{args.latency_ms:g} ms per upstream call, {os.cpu_count()} CPUs")
    print("\n".join(report.lines()))
    return 0 if not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
