"""Prices benchmark: a frontend simulation polling quotes through the local host.

    .venv/bin/python -m bench.prices_bench [--clients 100] [--tokens-per-client 20] [--duration 30]
                                           [--pool 400] [--mode single|batch] [--latency-ms 50]

Against the Polymarket stand-in (a subprocess) with added latency on every upstream call, the
app in the local host (another subprocess), on a throw-away embedded PostgreSQL:

* ``--clients`` simulated frontends each watch ``--tokens-per-client`` tokens drawn from a pool
  of ``--pool`` tokens (frontends watch overlapping popular markets) and poll them once a
  second for ``--duration`` seconds: ``single`` mode asks ``/api/price/{id}?history=false`` per
  token over one keep-alive connection per client; ``batch`` mode asks ``/api/prices`` once per
  second for all of them;
* beside them, in the same run, two probes poll ``/api/health`` ten times a second each.

Reports upstream requests (stand-in counts) against the bound of one per token per TTL window
and against what a per-request pass-through would make, p50/p99 latency of cached quotes,
quotes that had to be fetched, and ``/api/health``, and every error. Prints a table; asserts
nothing (figures, not a test). The HTTP client is a minimal asyncio HTTP/1.1 one, so the load
generator costs little of the CPU the app needs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

import httpx

from bench.common import bench_stack, percentile

UPSTREAM_PATHS = ("/book", "/books", "/prices-history", "/midpoint", "/price", "/spread", "/last-trade-price")








# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            try:
                self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
                continue  # the server closed an idle keep-alive connection: reconnect once
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Results:
    health: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    fetched: list[float] = field(default_factory=list)
    stale: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    quotes: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def frontend(port: int, tokens: list[str], mode: str, until: float, start_in: float, out: Results) -> None:
    conn = Connection(port)
    await asyncio.sleep(start_in)  # frontends do not all start on the same millisecond
    tick = time.monotonic()
    try:
        while time.monotonic() < until:
            paths = ([f"/api/price/{t}?history=false" for t in tokens] if mode == "single"
                     else [f"/api/prices?token_ids={','.join(tokens)}"])
            for path in paths:
                started = time.perf_counter()
                try:
                    status, body = await conn.get(path)
                except (OSError, asyncio.IncompleteReadError) as error:
                    out.error(type(error).__name__)
                    await conn.close()
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    out.error(f"HTTP {status}")
                    continue
                doc = json.loads(body)
                items = [doc] if mode == "single" else doc["quotes"]
                sources = [item.get("freshness", {}).get("source") for item in items]
                out.quotes += len(items)
                out.errors.update({})
                if any(item.get("status", "ok") != "ok" for item in items):
                    out.error("quote status not ok")
                bucket = out.stale if "stale" in sources else out.fetched if "live" in sources else out.cached
                bucket.append(elapsed)
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    finally:
        await conn.close()


async def health_probe(port: int, until: float, out: Results) -> None:
    conn = Connection(port)
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status, _ = await conn.get("/api/health")
            except (OSError, asyncio.IncompleteReadError) as error:
                out.error(f"health {type(error).__name__}")
                await conn.close()
                continue
            out.health.append((time.perf_counter() - started) * 1000)
            if status != 200:
                out.error(f"health HTTP {status}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def run_load(port: int, token_sets: list[list[str]], mode: str, duration: float) -> Results:
    out = Results()
    until = time.monotonic() + duration
    rng = random.Random(2)
    tasks = [frontend(port, tokens, mode, until, rng.uniform(0, 1.0), out) for tokens in token_sets]
    tasks += [health_probe(port, until, out) for _ in range(2)]
    await asyncio.gather(*tasks)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--tokens-per-client", type=int, default=20)
    parser.add_argument("--pool", type=int, default=400, help="distinct tokens the clients draw from")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of polling")
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to every upstream request")
    args = parser.parse_args()
    if args.tokens_per_client > args.pool:
        parser.error("--tokens-per-client must not exceed --pool")
    markets = max(200, args.pool)  # two tokens each, and some closed ones
    with bench_stack("prices", markets, args.latency_ms) as stack:
        control, app_port = stack.control, stack.app_port
        catalogue = httpx.get(f"{control}/catalogue", params={"closed": "false", "limit": markets}).json()
        pool = [t["token_id"] for m in catalogue["markets"] for t in m["tokens"]][: args.pool]
        rng = random.Random(1)
        token_sets = [rng.sample(pool, args.tokens_per_client) for _ in range(args.clients)]
        watched = {t for tokens in token_sets for t in tokens}

        stack.start_app()
        httpx.post(f"{control}/reset-counts")
        started = time.monotonic()
        results = asyncio.run(run_load(app_port, token_sets, args.mode, args.duration))
        elapsed = time.monotonic() - started
        counts = {p: httpx.get(f"{control}/counts", params={"host": "clob", "path": p}).json()["count"]
                  for p in UPSTREAM_PATHS}
        total_upstream = httpx.get(f"{control}/counts", params={"host": "clob"}).json()["count"]
        log = httpx.get(f"{control}/requests", params={"limit": 100_000}).json()["requests"]

    ttl = 5
    # Per token: how close together were two upstream reads of its book? (/books bodies are not logged.)
    reads: dict[str, list[float]] = {}
    for record in log:
        if record["host"] == "clob" and record["path"] == "/book":
            token = dict(part.partition("=")[::2] for part in record["query"].split("&")).get("token_id", "")
            reads.setdefault(token, []).append(record["time"])
    gaps = [b - a for times in reads.values() for a, b in itertools.pairwise(sorted(times))]
    too_close = sum(gap < ttl for gap in gaps)
    requests = len(results.cached) + len(results.fetched) + len(results.stale) + sum(
        n for k, n in results.errors.items() if not k.startswith("health") and k != "quote status not ok")
    quote_reads = counts["/book"] + counts["/books"]
    # Clients finish the tick they are in, so the run lasts a little longer than --duration.
    windows = math.ceil(elapsed / ttl)
    bound = len(watched) * windows
    passthrough = results.quotes  # one /book per quote; 5x that with separate mid/bid/ask/spread/last calls
    health_p50 = statistics.median(results.health) if results.health else float("nan")
    cached_p50 = statistics.median(results.cached) if results.cached else float("nan")
    what = "GET /api/price/{id}?history=false per token" if args.mode == "single" else "GET /api/prices (one batch)"

    print(f"\nprices benchmark: {args.clients} clients x {args.tokens_per_client} tokens, polled once a second "
          f"for {args.duration:g} s ({what}); {len(watched)} distinct tokens; +{args.latency_ms:g} ms per upstream "
          f"call; PRICE_CACHE_TTL_S={ttl}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print(f"{'':<34} {'count':>9}")
    print(f"{'HTTP requests (quotes)':<34} {requests:>9,}   ({requests / elapsed:,.0f}/s, {results.quotes:,} quotes)")
    print(f"{'errors':<34} {sum(results.errors.values()):>9,}   {results.errors or ''}")
    print(f"{'upstream quote reads':<34} {quote_reads:>9,}   (/book {counts['/book']:,}, /books {counts['/books']:,}; "
          f"/midpoint, /price, /spread, /last-trade-price: "
          f"{sum(counts[p] for p in UPSTREAM_PATHS[3:]):,})")
    print(f"{'upstream requests, all CLOB':<34} {total_upstream:>9,}   (/prices-history {counts['/prices-history']:,})")
    print(f"{'bound: 1 per token per TTL window':<34} {bound:>9,}   ({len(watched)} tokens x "
          f"ceil({elapsed:.1f} s / {ttl} s))")
    if gaps:
        print(f"{'/book reads of one token < TTL apart':<34} {too_close:>9,}   (closest two: {min(gaps):.2f} s)")
    print(f"{'per-request pass-through':<34} {passthrough:>9,}   (one /book per quote; {5 * passthrough:,} with "
          f"separate midpoint/bid/ask/spread/last-trade calls)")
    print(f"\n{'latency (ms)':<34} {'n':>9} {'p50':>8} {'p99':>8}")
    rows = [("/api/health (same run)", results.health), ("quote served from cache", results.cached),
            ("quote fetched from upstream", results.fetched), ("quote served stale", results.stale)]
    for name, samples in rows:
        if samples:
            print(f"{name:<34} {len(samples):>9,} {statistics.median(samples):>8.2f} {percentile(samples, 0.99):>8.2f}")
    print(f"\ncached quote p50 / health p50 = {cached_p50 / health_p50:.2f}x; "
          f"upstream quote reads / bound = {quote_reads / bound:.2f}; "
          f"upstream quote reads / pass-through = {quote_reads / max(1, passthrough):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
