"""Cold-start benchmark: what a new instance pays before its first /api/markets answer.

    .venv/bin/python -m bench.coldstart_bench [--markets 50000] [--runs 3]

On a throw-away embedded PostgreSQL filled from the Polymarket stand-in (one full refresh in this
process, which also stores the compact catalogue snapshot), each figure is taken in fresh Python
subprocesses (the median of ``--runs``):

1. ``import azure.functions`` and ``import function_app`` (and their ratio);
2. a new instance's first /api/markets answer after ``import function_app``, calling the
   function's handler in-process: from the stored compact snapshot, and from the markets rows
   (the snapshot deleted first; that path answers, then stores a new one in the background);
3. the peak RSS of each of those processes (``VmHWM``: ``ru_maxrss`` survives ``exec``, so a
   child of this 500 MB process would report this process's peak), with the background write.

Prints the figures beside those from before the compact snapshot; fails only if an answer is not 200.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench.common import ROOT, bench_stack

# Before the compact snapshot (8c27d95); its peak RSS re-measured as VmHWM (ru_maxrss said 454).
BEFORE = {"import_function_app_s": 0.87, "first_answer_s": 2.3, "peak_rss_mb": 438.0}

IMPORT = """
import time
started = time.perf_counter()
import {module}
print(time.perf_counter() - started)
"""

FIRST_ANSWER = """
import json, time
started = time.perf_counter()
import function_app
imported = time.perf_counter()
import azure.functions as func
from shared.markets.service import get_markets_service
handler = {f.get_function_name(): f for f in function_app.app.get_functions()}["list_markets"].get_user_function()
request = func.HttpRequest("GET", "http://localhost/api/markets", body=b"", params={"limit": "50"})
response = handler(request)
answered = time.perf_counter()
assert response.status_code == 200, response.get_body()[:500]
def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
at_answer = peak()
assert get_markets_service().wait_compact(300)  # the rows path's background write, in the peak
print(json.dumps({
    "import_s": imported - started, "first_answer_s": answered - imported,
    "total": json.loads(response.get_body())["total"],
    "peak_rss_mb": peak() / 1024, "answer_rss_mb": at_answer / 1024,
    "compact": get_markets_service().compact_counts,
}))
"""


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh subprocesses per figure")
    args = parser.parse_args()
    with bench_stack("coldstart", args.markets, 0.0) as stack:
        os.environ.update(stack.env)
        from shared.db.database import get_database
        from shared.markets.service import get_markets_service

        result = get_markets_service().refresh(min_age_s=0)
        assert get_markets_service().wait_compact(300)  # stored in the background
        size = get_database().query("SELECT length(payload) AS n FROM market_snapshot")[0]["n"]
        env = {**stack.env, "LOG_LEVEL": "warning"}

        azure_s = median([float(run(IMPORT.format(module="azure.functions"), env)) for _ in range(args.runs)])
        app_s = median([float(run(IMPORT.format(module="function_app"), env)) for _ in range(args.runs)])
        paths: dict[str, list[dict[str, Any]]] = {"snapshot": [], "rows": []}
        for _ in range(args.runs):
            paths["snapshot"].append(json.loads(run(FIRST_ANSWER, env)))
            get_database().execute("DELETE FROM market_snapshot")
            paths["rows"].append(json.loads(run(FIRST_ANSWER, env)))  # stores the snapshot again

    print(f"\ncold-start benchmark: {result.markets:,} stored markets, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; median of {args.runs} fresh processes each")
    print(f"compact snapshot stored: {size / 1e6:.1f} MB\n")
    print(f"{'figure':<62} {'now':>9} {'before':>9}")
    print(f"{'import azure.functions':<62} {azure_s:>8.2f}s {'':>9}")
    print(f"{'import function_app':<62} {app_s:>8.2f}s {BEFORE['import_function_app_s']:>8.2f}s")
    print(f"{'  ratio to import azure.functions':<62} {app_s / azure_s:>8.1f}x {'':>9}")
    for name, label in (("snapshot", "from the compact snapshot"), ("rows", "from the rows (stores a snapshot after)")):
        runs = paths[name]
        first = median([float(r["first_answer_s"]) for r in runs])
        rss = median([float(r["peak_rss_mb"]) for r in runs])
        answer_rss = median([float(r["answer_rss_mb"]) for r in runs])
        counts = runs[-1]["compact"]
        print(f"{'first /api/markets after import, ' + label:<62} {first:>8.2f}s {BEFORE['first_answer_s']:>8.2f}s")
        print(f"{'  peak RSS of that process, at its answer':<62} {answer_rss:>7.0f}MB {'':>9}")
        print(f"{'  peak RSS of that process, with any background write':<62} {rss:>7.0f}MB "
              f"{BEFORE['peak_rss_mb']:>7.0f}MB   {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
