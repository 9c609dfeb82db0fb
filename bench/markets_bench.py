"""Markets benchmark: full catalogue refresh, then /api/markets latency over HTTP.

    .venv/bin/python -m bench.markets_bench [--markets 50000] [--latency-ms 50] [--requests 300]

Against the Polymarket stand-in (a subprocess, so its memory is not counted) with added
latency on every upstream call, on a throw-away embedded PostgreSQL:

1. a full refresh of the catalogue in this process (seconds, markets/s, peak memory);
2. the local host in a subprocess, serving from that store; sequential requests over HTTP,
   p50/p99 for a cached page, a search, and a cold query, beside /api/health in the same run;
   then a cached 500-market page (about 500 KB of JSON) asked for gzip-compressed (as browsers
   and httpx ask) and uncompressed, with the bytes each puts on the wire;
3. the events list (its first request builds the events catalogue), one event, the resolver
   (the same slug, and a different stored slug each time), the tags and a market list by event;
4. the read side of the captured history: 24 hours of captures are synthesised first (before the
   refresh, which captures the present; every 30
   minutes, every market's price nudged; ``--history-hours``), then a cached page of 50 with
   sparklines (24h, 7d) beside the same page without, a page with sparklines that is new each time
   (its one batched read), the first movers request (every market's change, computed once per
   snapshot) and a cached movers page; candles (cached, and another token each time: its captures
   read and its first /prices-history call).

Prints a table; asserts nothing (figures, not a test).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable

import httpx

from bench.common import bench_stack, percentile

WORDS = [
    "bitcoin", "election", "trump", "price", "win", "champions", "fed", "rate", "ethereum", "senate",
    "nba", "approval", "above", "below", "december", "january", "league", "cup", "president", "solana",
    "governor", "inflation", "temperature", "oscars", "super", "bowl", "world", "ukraine", "china", "ai",
]
SORTS = ["volume", "volume_24h", "liquidity", "end_date", "price_change"]








def measure(client: httpx.Client, make_url: Callable[[int], str], n: int,
            headers: dict[str, str] | None = None) -> tuple[float, float, int]:
    latencies, errors = [], 0
    for i in range(n):
        url = make_url(i)
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        errors += response.status_code != 200
    return statistics.median(latencies), percentile(latencies, 0.99), errors


def synthesise_history(hours: int) -> float:
    """Captures every 30 minutes over the last ``hours`` for every open market (through
    shared.history.store, explicit times), each price nudged from the one before; seconds taken."""
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from shared.container import get_container
    from shared.db.database import get_database
    from shared.history.store import record_refresh
    from shared.markets.crawl import Crawl, catalogue_pages

    started = time.perf_counter()
    records = [r for page in catalogue_pages(get_container().gamma, Crawl()) for r in page
               if not r.closed and r.best_bid is not None and r.best_ask is not None]
    rng = random.Random(7)
    now = datetime.now(UTC)
    steps = hours * 2
    for step in range(steps, 0, -1):
        at = now - timedelta(minutes=30 * step)
        moved = []
        for r in records:
            assert r.best_bid is not None and r.best_ask is not None
            nudge = Decimal(rng.randint(-3, 3)) / 100
            bid = min(Decimal("0.97"), max(Decimal("0.01"), r.best_bid + nudge))
            moved.append(replace(r, best_bid=bid, best_ask=min(Decimal("0.99"), bid + (r.best_ask - r.best_bid))))
        for chunk in range(0, len(moved), 5_000):
            get_database().run(lambda cur, part=moved[chunk:chunk + 5_000], when=at: record_refresh(cur, part, when))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--requests", type=int, default=300, help="requests per measured row")
    parser.add_argument("--history-hours", type=int, default=24, help="hours of captures synthesised before")
    args = parser.parse_args()
    with bench_stack("markets", args.markets, args.latency_ms) as stack:
        os.environ.update(stack.env)  # the refresh runs in this process

        from shared.markets.service import get_markets_service

        # Before the refresh: a capture older than a series' newest is not taken.
        history_s = synthesise_history(args.history_hours)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        result = get_markets_service().refresh(min_age_s=0)
        refresh_s = time.perf_counter() - started
        # The compact snapshot is stored in the background: the host below loads it, as before.
        write_started = time.perf_counter()
        assert get_markets_service().wait_compact(300)
        write_s = time.perf_counter() - write_started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        base = f"{stack.start_app()}/api"
        rng = random.Random(1)
        with httpx.Client(timeout=60) as client:
            started = time.perf_counter()
            first = client.get(f"{base}/markets?limit=50")
            first_ms = (time.perf_counter() - started) * 1000
            assert first.status_code == 200, first.text
            rows = [
                ("/api/health", measure(client, lambda i: f"{base}/health", args.requests)),
                ("cached page (same query)", measure(client, lambda i: f"{base}/markets?limit=50", args.requests)),
                ("search (new word each time)", measure(
                    client, lambda i: f"{base}/markets?limit=50&q={WORDS[i % len(WORDS)]}"
                    f"{'' if i < len(WORDS) else ' ' + rng.choice(WORDS)}",
                    args.requests)),
                ("cold query (new q+sort each time)", measure(
                    client, lambda i: f"{base}/markets?limit=50&q={chr(97 + i % 26)}{chr(97 + (i // 26) % 26)}"
                    f"&sort={rng.choice(SORTS)}&order={rng.choice(['asc', 'desc'])}", args.requests)),
            ]
            sample = client.get(f"{base}/markets?limit=500").json()["markets"]
            event = sample[0]["event"]
            slugs = [m["slug"] for m in sample if m["slug"]]
            started = time.perf_counter()
            events_first = client.get(f"{base}/events?limit=20")
            events_first_ms = (time.perf_counter() - started) * 1000
            assert events_first.status_code == 200, events_first.text
            rows += [
                ("events, cached page", measure(client, lambda i: f"{base}/events?limit=20", args.requests)),
                ("events, search (new word each time)", measure(
                    client, lambda i: f"{base}/events?limit=20&q={WORDS[i % len(WORDS)]}", args.requests)),
                ("one event (cached)", measure(client, lambda i: f"{base}/events/{event['id']}", args.requests)),
                ("resolve, same slug (cached)", measure(
                    client, lambda i: f"{base}/resolve?q={slugs[0]}", args.requests)),
                # A link, not a bare slug: a bare slug another event also has is ambiguous (a 404).
                ("resolve, another stored market link each time", measure(
                    client, lambda i: f"{base}/resolve?q=https://polymarket.com/market/{slugs[i % len(slugs)]}",
                    args.requests)),
                ("tags (cached)", measure(client, lambda i: f"{base}/tags", args.requests)),
                ("markets of one event", measure(
                    client, lambda i: f"{base}/markets?event={event['slug']}", args.requests)),
            ]
            # The first movers request starts the computation and answers 503 (Retry-After) past
            # its deadline: asked again until it answers, as a client would.
            started = time.perf_counter()
            movers_503s = 0
            while (movers_first := client.get(f"{base}/markets?limit=50&sort=abs_change_1h")).status_code == 503:
                movers_503s += 1
                time.sleep(0.2)
            movers_first_ms = (time.perf_counter() - started) * 1000
            assert movers_first.status_code == 200, movers_first.text
            rows += [
                ("page of 50, sparkline=24h (cached)", measure(
                    client, lambda i: f"{base}/markets?limit=50&sparkline=24h", args.requests)),
                ("page of 50, sparkline=7d (cached)", measure(
                    client, lambda i: f"{base}/markets?limit=50&sparkline=7d", args.requests)),
                ("page of 50, sparkline=24h, new page", measure(
                    client, lambda i: f"{base}/markets?limit=50&sparkline=24h&sort={SORTS[i % len(SORTS)]}"
                    f"&order={['asc', 'desc'][i // len(SORTS) % 2]}&q={chr(97 + i // 10 % 26)}", args.requests)),
                ("movers page (abs_change_1h, cached)", measure(
                    client, lambda i: f"{base}/markets?limit=50&sort=abs_change_1h", args.requests)),
            ]
            tokens = [m["outcomes"][0]["token_id"] for m in client.get(f"{base}/markets?limit=500").json()["markets"]
                      if m["outcomes"] and m["outcomes"][0]["token_id"]]
            client.get(f"{base}/price/{tokens[0]}/candles?resolution=15m")
            rows += [
                ("candles 15m, 3 days (same request)", measure(
                    client, lambda i: f"{base}/price/{tokens[0]}/candles?resolution=15m", args.requests)),
                ("candles 5m, another token each time", measure(
                    client, lambda i: f"{base}/price/{tokens[1 + i % (len(tokens) - 1)]}/candles?resolution=5m",
                    args.requests)),
            ]
            big = f"{base}/markets?limit=500"
            wire = {}
            for name, encoding in (("cached 500-market page, gzip", "gzip"),
                                   ("cached 500-market page, identity", "identity")):
                with client.stream("GET", big, headers={"Accept-Encoding": encoding}) as raw:
                    wire[name] = (len(b"".join(raw.iter_raw())), raw.headers.get("Content-Encoding", "identity"))
                rows.append((name, measure(client, lambda i: big, args.requests, {"Accept-Encoding": encoding})))
        total = first.json()["total"]

    print(f"\nmarkets benchmark: {args.markets:,} open markets, +{args.latency_ms:g} ms per upstream call, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"\nfull refresh   {result.markets:,} markets in {refresh_s:.1f} s "
          f"({result.markets / refresh_s:,.0f} markets/s; fetch+upsert {result.seconds:.1f} s, "
          f"snapshot load {refresh_s - result.seconds:.1f} s; then its compact copy stored in the background "
          f"in {write_s:.1f} s); peak RSS {rss_after:.0f} MB "
          f"(+{rss_after - rss_before:.0f} MB)")
    print(f"first request  {first_ms:.0f} ms (new instance loads the snapshot from PostgreSQL; total={total:,})")
    print(f"first events   {events_first_ms:.0f} ms (builds the events catalogue; "
          f"{events_first.json().get('total', 0):,} events)")
    print(f"history        {args.history_hours} h of captures synthesised in {history_s:.1f} s; first movers "
          f"answer after {movers_first_ms:.0f} ms ({movers_503s} 503s before it; every market's 1h change, once per "
          "snapshot)\n")
    print(f"{'request (' + str(args.requests) + ' each, sequential)':<40} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    health_p50 = rows[0][1][0]
    for name, (p50, p99, errors) in rows:
        ratio = "" if name == "/api/health" else f"   {p50 / health_p50:.2f}x health p50"
        print(f"{name:<40} {p50:>8.2f} {p99:>8.2f} {errors:>7}{ratio}")
    for name, (size, encoding) in wire.items():
        print(f"{name}: {size:,} bytes on the wire ({encoding})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
