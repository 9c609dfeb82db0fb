"""What the benchmark scripts share: the throw-away stack (database, stand-in, local host),
ports, waiting for a server, percentiles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers with anything below 500."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_local_host(env: dict[str, str], port: int, root: Path) -> subprocess.Popen[bytes]:
    """The local host in a subprocess (its CPU and memory are not the benchmark's)."""
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.funchost", "--port", str(port), "--no-timers", "--root", str(root)],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@dataclass
class BenchStack:
    """A throw-away embedded PostgreSQL and the Polymarket stand-in (a subprocess, with added
    latency), plus the environment that points the app at both."""

    work: Path
    database: Any
    clob_port: int
    gamma_port: int
    app_port: int
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.clob_port}/_standin"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def start_app(self) -> str:
        self.processes.append(start_local_host(self.env, self.app_port, self.work))
        wait_http(f"{self.base}/api/health")
        return self.base


@contextmanager
def bench_stack(name: str, markets: int, latency_ms: float) -> Iterator[BenchStack]:
    sys.path.insert(0, str(ROOT))
    from devtools.embedded_db import start_embedded

    work = Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
    database = start_embedded(work / "pg")
    clob_port, gamma_port, app_port = free_port(), free_port(), free_port()
    env = {
        # The app's own settings come from here only, never from the shell running the bench.
        **{k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "POLYMARKET_", "PRICE_"))},
        **database.env(),
        "POLYMARKET_HOST": f"http://127.0.0.1:{clob_port}",
        "POLYMARKET_GAMMA_HOST": f"http://127.0.0.1:{gamma_port}",
        "LOG_LEVEL": "warning",
    }
    stack = BenchStack(work, database, clob_port, gamma_port, app_port, env)
    stack.processes.append(subprocess.Popen(
        [sys.executable, "-m", "devtools.standin", "--markets", str(markets), "--latency-ms", str(latency_ms),
         "--clob-port", str(clob_port), "--gamma-port", str(gamma_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ))
    try:
        wait_http(stack.control)
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.terminate()
            process.wait(timeout=30)
        database.stop()
