"""``make demo``: the app against the SIMULATED Polymarket stand-in, for offline use (dev-only).

Starts the Polymarket stand-in and (unless AZURE_OPENAI_ENDPOINT is set) the Azure OpenAI
stand-in in this process, a throw-away embedded PostgreSQL (simulated markets must never mix
with ``make run``'s real ones), and the local host. Every API response (304s, the host's own
404/405 errors and preflights included) then carries ``X-Data-Simulated: true``, and every JSON
body ``"simulated": true``. CORS is the local host's: the usual local frontend origins unless
``--cors`` or ``CORS_ALLOWED_ORIGINS`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from devtools.embedded_db import start_embedded
from devtools.funchost import LOCAL_CORS_ORIGINS
from devtools.funchost.__main__ import main as serve
from devtools.openai_standin import OpenAIStandIn
from devtools.standin import PolymarketStandIn

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("devtools.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--markets", type=int, default=5000, help="open markets to simulate")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every simulated Polymarket call")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cors", default=None,
                        help="allowed origins, comma-separated, '*' or 'none' (default: CORS_ALLOWED_ORIGINS, "
                             "else " + ", ".join(LOCAL_CORS_ORIGINS) + ")")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    standin = PolymarketStandIn(markets=args.markets, seed=args.seed, latency_ms=args.latency_ms).start()
    # Sentiment too, unless a real Azure OpenAI is configured: canned verdicts, not a model.
    openai = None if os.environ.get("AZURE_OPENAI_ENDPOINT", "").strip() else OpenAIStandIn().start()
    database = None
    try:
        os.environ["POLYMARKET_HOST"] = standin.clob_url
        os.environ["POLYMARKET_GAMMA_HOST"] = standin.gamma_url
        os.environ["POLYMARKET_SIMULATED"] = "true"
        if openai is not None:
            os.environ["AZURE_OPENAI_ENDPOINT"] = openai.endpoint
            os.environ["AZURE_OPENAI_API_KEY"] = openai.api_key
            os.environ["GPT5_DEPLOYMENT_NAME"] = openai.deployment
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
        host_args = ["--port", str(args.port), "--root", str(ROOT)]
        if args.cors:
            host_args += ["--cors", args.cors]
        return serve(host_args)
    finally:
        standin.stop()
        if openai is not None:
            openai.stop()
        if database is not None:
            database.stop()
            shutil.rmtree(database.data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
