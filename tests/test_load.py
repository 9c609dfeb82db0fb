"""A bounded load run: concurrent clients on a mix of endpoints, with upstream latency.

Asserts what must hold under load (no errors, at most one upstream read per token per TTL on
average); the figures are printed in the session summary, never asserted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import start_local_host, wait_http
from bench.load_bench import ids_from, run_load
from tests.conftest import REPORT_LINES, Upstream

CLIENTS = 100
SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_host(database_env: dict[str, str], upstream_env: Upstream, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "UPSTREAM_RETRY_BACKOFF_S": "0"}
    process = start_local_host(env, port, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/health", timeout=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_load_mix_has_no_errors(local_host: str, upstream_env: Upstream) -> None:
    condition_ids, token_ids = ids_from(local_host)
    upstream_env.fail("latency", ms=30)  # every Polymarket call from here on
    report = run_load(
        local_host, clients=CLIENTS, seconds=SECONDS, condition_ids=condition_ids, token_ids=token_ids,
        upstream_count=upstream_env.standin.count,
    )
    REPORT_LINES.extend(["", *report.lines()])
    assert report.samples, "no request completed"
    assert report.errors == [], report.errors[:5]
    # Quotes are cached per token for 5 s: upstream reads stay far below client requests.
    assert report.upstream_requests < len(report.samples)
