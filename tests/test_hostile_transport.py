"""Bounded reads against a hostile Polymarket, through the HTTP API (issue 11, breaks 1, 4, 8, 9).

A deeply nested body, an absurd ``Retry-After``, a trickle, a gzip bomb, a body too large to
read: each must end in stale data or a documented error, soon, with the process alive and its
memory flat. What can crash or balloon a process runs the app in a subprocess (the local host
over real HTTP), which is also where its memory is measured; the rest serve it in-process.
Bounds are generous (the request deadline plus 2 s, 200 MB of growth); the figures measured are
printed in the session summary.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import REPORT_LINES, ROOT, reset_app, reset_services
from tests.test_faults import assert_documented_error

SLACK_S = 2.0
DEADLINE_S = 5.0  # REQUEST_DEADLINE_S's default
RSS_GROWTH_BOUND_MB = 200.0
# Settings under which each fault shows as itself, at once: no backoff, no open circuit, short TTLs.
APP_ENV = {
    "UPSTREAM_RETRY_BACKOFF_S": "0",
    "UPSTREAM_BREAKER_FAILURES": "1000",
    "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
    "PRICE_REFRESH_MIN_INTERVAL_S": "0",
    "PRICE_CACHE_TTL_S": "1",
    "BOOK_CACHE_TTL_S": "1",
    "PRICE_HISTORY_CACHE_TTL_S": "1",
}

# The app on the local host in a process of its own: a crash there fails a test, not the run.
WORKER = """
import sys
from pathlib import Path

import function_app
from devtools.local_server import LocalHost

host = LocalHost(function_app.app, port=0, host_json=Path("host.json")).start()
print(host.url, flush=True)
sys.stdin.read()  # until the test closes stdin
host.stop()
"""


class Worker:
    """The subprocess host; ``peak_growth_mb`` measures its RSS high-water mark around a call."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        assert line.startswith("http://"), f"the worker did not start: {self.describe()}"
        self.url = line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        tail = self.log_path.read_text(errors="replace")[-1500:]
        return f"worker {state}; its stderr ends with:\n{tail}"

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def peak_growth_mb(self, call: Callable[[], Any]) -> tuple[Any, float]:
        """``call()``'s result, and how far the worker's peak RSS rose above its RSS before it."""
        before = self.rss_mb()
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # reset VmHWM (the peak) to now
        result = call()
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        return result, peak_kb / 1024 - before

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@dataclass
class App:
    http: httpx.Client
    hostile: Any
    worker: Worker | None = None

    def get(self, path: str, **params: str) -> httpx.Response:
        try:
            return self.http.get(path, params=params)
        except httpx.TransportError as error:
            details = self.worker.describe() if self.worker else ""
            raise AssertionError(f"{path}: no answer ({type(error).__name__}); {details}") from None

    def timed(self, path: str, **params: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.get(path, **params)
        return response, time.perf_counter() - started

    def ok(self, path: str, **params: str) -> dict[str, Any]:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def tokens(self, n: int) -> list[str]:
        """Tokens with a book, asked of the hostile upstream directly (before any switch is on)."""
        rows = httpx.get(f"{self.hostile.gamma_url}/markets/keyset",
                         params={"closed": "false", "limit": "100"}).json()["markets"]
        found = []
        for row in rows:
            token = json.loads(row.get("clobTokenIds") or "[]")[:1]
            if token and httpx.get(f"{self.hostile.clob_url}/book", params={"token_id": token[0]}).status_code == 200:
                found.append(token[0])
            if len(found) == n:
                return found
        raise AssertionError(f"fewer than {n} tokens with a book")

    def upstream_stats(self, host: str) -> dict[str, Any]:
        return self.get("/api/health", deep="true").json()["upstream_stats"][host]

    def assert_alive(self) -> None:
        if self.worker:
            assert self.worker.alive(), self.worker.describe()
        assert self.ok("/api/health")["status"] == "ok"


@pytest.fixture
def serve(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch,
          tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``serve(isolated=False, **env)``: the app over real HTTP against the hostile upstream,
    in-process on the local host, or (``isolated=True``) in a worker process of its own."""
    import function_app
    from devtools.local_server import LocalHost

    hosts: list[Any] = []
    workers: list[Worker] = []
    clients: list[httpx.Client] = []

    def start(isolated: bool = False, **env: str) -> App:
        settings = {**APP_ENV, **env}
        worker = None
        if isolated:
            worker = Worker({**os.environ, **settings}, tmp_path / f"worker{len(workers)}.log")
            workers.append(worker)
            url = worker.url
        else:
            for key, value in settings.items():
                monkeypatch.setenv(key, value)
            reset_services()
            reset_app()
            host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
            hosts.append(host)
            url = host.url
        http = httpx.Client(base_url=url, timeout=60, trust_env=False)
        clients.append(http)
        return App(http, hostile_env, worker)

    yield start
    for http in clients:
        http.close()
    for host in hosts:
        host.stop()
    for worker in workers:
        worker.stop()
    reset_services()


def figure(text: str) -> None:
    REPORT_LINES.append(f"hostile transport: {text}")


def assert_error_or_stale(response: httpx.Response) -> None:
    """A documented 5xx (never a 500), or stored data labelled stale."""
    if response.status_code == 200:
        assert response.json()["freshness"]["source"] == "stale", response.text
    else:
        assert_documented_error(response)


# --- break 1: the recursion limit and deeply nested JSON ---------------------------------------


@pytest.mark.parametrize("first_import", ["function_app", "shared.prices"])
def test_the_recursion_limit_is_put_back_after_py_clob_client_is_imported(first_import: str) -> None:
    # py_ecc (imported by py-clob-client-v2) raises the limit to 100,000 for the whole process
    # when imported; shared.prices imports py-clob-client-v2 before shared.polymarket_client does.
    code = (
        "import sys\n"
        "before = sys.getrecursionlimit()\n"
        f"import {first_import}\n"
        "import function_app\n"
        "from shared.polymarket_client import get_clob, get_gamma\n"
        "after_import = sys.getrecursionlimit()\n"
        "get_clob(), get_gamma()\n"
        "print(before, after_import, sys.getrecursionlimit(), 'py_ecc' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET_", "POSTGRES_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after_import, after_clients, py_ecc_loaded = done.stdout.split()
    assert py_ecc_loaded == "True"  # the import the guard is about did happen
    assert int(before) == int(after_import) == int(after_clients) <= 10_000
