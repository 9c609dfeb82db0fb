"""``python -m devtools.standin``: run the SIMULATED Polymarket stand-in in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
import time

from .server import PolymarketStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.standin",
                                     description="Simulated Polymarket CLOB + Gamma APIs for tests and offline demos.")
    parser.add_argument("--markets", type=int, default=5000, help="open markets (default 5000)")
    parser.add_argument("--closed-fraction", type=float, default=0.1, help="share of closed markets (default 0.1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--clob-port", type=int, default=8801)
    parser.add_argument("--gamma-port", type=int, default=8802)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every Polymarket request")
    parser.add_argument("--step", type=float, default=1.0, help="price time step in seconds (default 1)")
    parser.add_argument("--books-unknown", choices=("omit", "404"), default="omit",
                        help="POST /books with a token that has no book: leave it out (default) or 404 the batch")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pm = PolymarketStandIn(args.markets, args.closed_fraction, args.seed, host=args.host, clob_port=args.clob_port,
                           gamma_port=args.gamma_port, step=args.step, latency_ms=args.latency_ms,
                           books_unknown=args.books_unknown)
    pm.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print("=" * 72)
    print("  SIMULATED Polymarket stand-in -- NOT the real Polymarket, made-up markets")
    print("=" * 72)
    print(f"  markets : {len(pm.catalogue)} ({len(pm.catalogue.closed_markets())} closed), seed {args.seed}, "
          f"built in {time.perf_counter() - started:.1f}s")
    print(f"  CLOB    : {pm.clob_url}")
    print(f"  Gamma   : {pm.gamma_url}")
    print(f"  control : {pm.clob_url}/_standin  (same on the Gamma port)")
    if args.latency_ms:
        print(f"  latency : +{args.latency_ms:g} ms per request")
    print("  Ctrl-C to stop", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        pm.stop()
        print("stand-in stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
