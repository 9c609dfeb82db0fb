"""``make demo``: the app against the SIMULATED Polymarket stand-in, for offline use (dev-only).

Starts the stand-in in this process, an embedded PostgreSQL kept apart from ``make run``'s
(simulated markets must never mix with real ones), and the local host. Every API response
then carries ``"simulated": true`` and ``X-Data-Simulated: true``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from devtools import local_server
from devtools.embedded_db import start_embedded
from devtools.standin import PolymarketStandIn

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("devtools.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--markets", type=int, default=5000, help="open markets to simulate")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every simulated Polymarket call")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    standin = PolymarketStandIn(markets=args.markets, seed=args.seed, latency_ms=args.latency_ms).start()
    database = None
    try:
        os.environ["POLYMARKET_HOST"] = standin.clob_url
        os.environ["POLYMARKET_GAMMA_HOST"] = standin.gamma_url
        os.environ["POLYMARKET_SIMULATED"] = "true"
        if not os.environ.get("POSTGRES_HOST", "").strip():
            # A fresh database each run: simulated data never outlives its demo.
            (ROOT / ".devdata").mkdir(exist_ok=True)
            data_dir = Path(tempfile.mkdtemp(prefix="demo-", dir=ROOT / ".devdata"))
            database = start_embedded(data_dir / "pg")
            os.environ.update(database.env())
            log.info("demo database: a throw-away embedded PostgreSQL in %s", data_dir)
        log.warning(
            "SIMULATED Polymarket (%d markets) at %s and %s: every response is labelled simulated",
            args.markets, standin.clob_url, standin.gamma_url,
        )
        return local_server.main(["--port", str(args.port), "--root", str(ROOT)])
    finally:
        standin.stop()
        if database is not None:
            database.stop()
            shutil.rmtree(database.data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
