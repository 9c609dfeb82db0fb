"""Health checks: a free liveness answer, and a deep check of every dependency."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import __version__
from shared.container import get_container
from shared.core.errors import AppError, UpstreamError

# Checks run in parallel, so a deep check costs the slowest dependency, not the sum.
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="health")


@dataclass(frozen=True)
class CheckResult:
    status: str  # "ok" | "error"
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "latency_ms": round(self.latency_ms, 1)}
        if self.error:
            out["error"] = self.error
        return out


def _error_class(error: BaseException) -> str:
    # A stable class name, never exception text (which can carry hosts or DSNs).
    if isinstance(error, UpstreamError):
        return error.kind
    if isinstance(error, AppError):
        return error.code
    return type(error).__name__


def _timed(check: Callable[[], None]) -> CheckResult:
    started = time.perf_counter()
    try:
        check()
    except Exception as error:  # every failure is reported as a status
        return CheckResult("error", (time.perf_counter() - started) * 1000, _error_class(error))
    return CheckResult("ok", (time.perf_counter() - started) * 1000)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def basic() -> dict[str, Any]:
    """Liveness: no I/O at all."""
    return {"status": "ok", "version": __version__, "time": _now()}


def deep() -> tuple[dict[str, Any], bool]:
    """Check the database and both upstreams; returns (report, can_serve).

    The app can serve while the database answers: with Polymarket down it serves stored
    data marked stale. Without the database it cannot, so that is a 503.
    """
    parts = get_container()
    timeout = parts.settings.polymarket.health_timeout_s
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: parts.database.ping(),
        "polymarket_clob": lambda: parts.clob.ping(),
        "polymarket_gamma": lambda: parts.gamma.ping(),
    }
    futures = {name: _pool.submit(_timed, check) for name, check in checks.items()}
    results: dict[str, CheckResult] = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=timeout + 1)
        except FutureTimeout:
            results[name] = CheckResult("error", (timeout + 1) * 1000, "timeout")
    can_serve = results["database"].status == "ok"
    all_ok = all(result.status == "ok" for result in results.values())
    pool = parts.peek("database")
    from shared.upstream.polymarket import CLOB, GAMMA, UpstreamStats  # built by the checks above anyway

    clients = {CLOB: parts.peek("clob"), GAMMA: parts.peek("gamma")}  # as built, never built by asking
    report: dict[str, Any] = {
        **basic(),
        "status": "ok" if all_ok else ("degraded" if can_serve else "unavailable"),
        "checks": {name: result.as_dict() for name, result in results.items()},
        "upstream_stats": {name: (client.stats if client else UpstreamStats()).snapshot()
                           for name, client in clients.items()},
        "circuit_breakers": {name: client.breaker.snapshot() for name, client in sorted(clients.items()) if client},
        "datasets": {"markets": parts.markets.status(), "events": parts.events.status(),
                     "prices": parts.prices.status(), "backfill": parts.backfill.status()},
        "database_pool": pool.pool_stats() if pool else None,
    }
    return report, can_serve
