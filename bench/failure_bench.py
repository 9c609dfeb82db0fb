"""Time to answer while Polymarket fails: stale-if-error at once, a deadline per request.

    .venv/bin/python -m bench.failure_bench [--markets 2000] [--tokens 10]

Against the Polymarket stand-in (a subprocess) on a throw-away embedded PostgreSQL, with the
production retry settings (3 attempts, 1 s backoff, Retry-After honoured up to 10 s) and the
default REQUEST_DEADLINE_S (5 s) and STALE_IF_ERROR_WAIT_S (1 s). For each failure:

* unreachable (a closed port: connection refused), hanging (no answer for 60 s), 5xx (503),
  429 with ``Retry-After: 30``;
* **with stored data**: a fresh app process warms ``--tokens`` tokens (price, batch, book) and
  the catalogue, then Polymarket starts failing and every TTL passes; each request below needs
  Polymarket and must answer from what is stored. (Unreachable: a second app process on the
  same database, pointed at closed ports: the stored data is PostgreSQL's.) The first
  request per token is measured: later ones are the cached stale answer.
* **without stored data**: tokens never seen, and the catalogue's first load on an empty
  database: a 503 with Retry-After, within the deadline.

Prints one row per (failure, endpoint, stored?): requests, p50 and max time to answer, and the
statuses seen. Targets: <= 50 ms (p50) with stored data, <= the deadline without. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg2

from bench.common import BenchStack, bench_stack, free_port, percentile, start_local_host, wait_http

FAULTS = {
    "hanging": {"kind": "hang", "host": None, "seconds": 60},
    "5xx": {"kind": "status", "host": None, "status": 503},
    "429 Retry-After: 30": {"kind": "rate_limit", "host": None, "retry_after": 30},
    "unreachable": None,  # closed ports
}
APP_ENV = {
    "PRICE_CACHE_TTL_S": "1",
    "BOOK_CACHE_TTL_S": "1",
    "PRICE_HISTORY_CACHE_TTL_S": "1",
    "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
    "PRICE_REFRESH_MIN_INTERVAL_S": "0",
    "UPSTREAM_BREAKER_FAILURES": "1000",  # each failure as itself, not as an open circuit
}


@contextmanager
def app(stack: BenchStack, **env: str) -> Iterator[httpx.Client]:
    port = free_port()
    process = start_local_host({**stack.env, **APP_ENV, **env}, port, stack.work)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, trust_env=False) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


def timed(client: httpx.Client, path: str, **params: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    return (time.perf_counter() - started) * 1000, response.status_code


def row(fault: str, endpoint: str, stored: str, results: list[tuple[float, int]]) -> None:
    times = [t for t, _ in results]
    statuses = ", ".join(f"{code} x{n}" for code, n in sorted(Counter(s for _, s in results).items()))
    print(f"{fault:<20} {endpoint:<22} {stored:<8} {len(results):>4} {percentile(times, 0.5):>10.1f}"
          f" {max(times):>10.1f}   {statuses}", flush=True)


def tokens_of(client: httpx.Client, n: int, skip: int) -> list[str]:
    markets = client.get("/api/markets", params={"limit": "500"}).json()["markets"]
    ids = [m["outcomes"][0]["token_id"] for m in markets if m["outcomes"] and m["outcomes"][0]["token_id"]]
    return ids[skip: skip + n]


def inject(stack: BenchStack, fault: dict[str, object]) -> None:
    httpx.post(f"{stack.control}/faults", json=fault, timeout=10).raise_for_status()


def clear(stack: BenchStack) -> None:
    httpx.delete(f"{stack.control}/faults", timeout=10).raise_for_status()


def empty_database(stack: BenchStack, name: str) -> str:
    env = stack.database.env()
    conn = psycopg2.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user="postgres",
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name


def with_stored(stack: BenchStack, name: str, fault: dict[str, object] | None, n: int) -> None:
    with app(stack) as warm:
        tokens = tokens_of(warm, n, skip=0)
        for token in tokens:
            warm.get(f"/api/price/{token}")
            warm.get(f"/api/book/{token}")
        for i in range(0, n, 2):
            warm.get("/api/prices", params={"token_ids": ",".join(tokens[i:i + 2])})
        if fault is not None:
            inject(stack, fault)
            time.sleep(1.2)  # past every TTL
            measure_stored(warm, name, tokens)
            clear(stack)
    if fault is None:  # another instance, Polymarket unreachable: what is stored is PostgreSQL's
        with app(stack, POLYMARKET_HOST=closed_port_url(), POLYMARKET_GAMMA_HOST=closed_port_url()) as cold:
            measure_stored(cold, name, tokens)


def measure_stored(client: httpx.Client, name: str, tokens: list[str]) -> None:
    row(name, "/api/price/{token}", "stored", [timed(client, f"/api/price/{t}") for t in tokens])
    row(name, "/api/book/{token}", "stored", [timed(client, f"/api/book/{t}") for t in tokens])
    pairs = [",".join(tokens[i:i + 2]) for i in range(0, len(tokens), 2)]
    time.sleep(1.2)  # the price answers above are cached for a TTL: let them expire again
    row(name, "/api/prices", "stored", [timed(client, "/api/prices", token_ids=p) for p in pairs])
    row(name, "/api/markets?refresh", "stored", [timed(client, "/api/markets", refresh="true") for _ in range(3)])


def without_stored(stack: BenchStack, name: str, fault: dict[str, object] | None, n: int,
                   round_no: int) -> None:
    hosts = {} if fault is not None else {"POLYMARKET_HOST": closed_port_url(),
                                          "POLYMARKET_GAMMA_HOST": closed_port_url()}
    with app(stack) as lister:
        cold = tokens_of(lister, n, skip=100 + round_no * n)  # never requested before
    if fault is not None:
        inject(stack, fault)
    try:
        with app(stack, **hosts) as client:
            row(name, "/api/price/{token}", "none", [timed(client, f"/api/price/{t}") for t in cold[: n // 2]])
            row(name, "/api/prices", "none", [timed(client, "/api/prices", token_ids=t) for t in cold[n // 2:]])
        database = empty_database(stack, f"empty_{round_no}")
        with app(stack, POSTGRES_DATABASE=database, **hosts) as client:
            row(name, "/api/markets", "none", [timed(client, "/api/markets") for _ in range(3)])
    finally:
        if fault is not None:
            clear(stack)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=10, help="tokens per measured row")
    args = parser.parse_args()
    with bench_stack("failure", args.markets, latency_ms=0) as stack:
        with app(stack) as first:  # the first refresh fills the database
            first.get("/api/markets")
        print(f"{'failure':<20} {'endpoint':<22} {'stored':<8} {'n':>4} {'p50 ms':>10} {'max ms':>10}   statuses")
        for round_no, (name, fault) in enumerate(FAULTS.items()):
            with_stored(stack, name, fault, args.tokens)
            without_stored(stack, name, fault, args.tokens, round_no)
    return 0


if __name__ == "__main__":
    sys.exit(main())
