"""Fault injection and request accounting.

A fault matches requests by host (``"clob"``, ``"gamma"`` or None for both) and an optional path
prefix. ``after=N`` lets the first N matching requests through untouched; ``times=N`` makes it fire
N times and then disappear (None: until cleared). Kinds:

* ``latency``    -- add ``ms`` milliseconds, then answer normally. Combines with any other fault.
* ``status``     -- answer ``status`` (default 500) with the host's error body (or ``body``).
* ``rate_limit`` -- 429, ``Retry-After: <retry_after>`` (default 1 s), ``{"error": "Too Many Requests"}``.
* ``reset``      -- close the connection with an RST (SO_LINGER 0) without sending anything.
* ``garbage``    -- 200 with a Cloudflare-like HTML page instead of JSON.
* ``hang``       -- sleep ``seconds`` (default 30) before answering normally, so client timeouts fire
  (``stop()`` wakes sleepers at once).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("latency", "status", "rate_limit", "reset", "garbage", "hang")
HOSTS = ("clob", "gamma")


@dataclass(slots=True)
class Fault:
    id: int
    kind: str
    host: str | None = None
    path: str | None = None  # path prefix, e.g. "/markets" (also matches "/markets/keyset")
    times: int | None = None
    after: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    seen: int = 0  # matching requests so far
    fired: int = 0

    def matches(self, host: str, path: str) -> bool:
        return (self.host is None or self.host == host) and (self.path is None or path.startswith(self.path))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "host": self.host, "path": self.path, "times": self.times,
                "after": self.after, "params": self.params, "seen": self.seen, "fired": self.fired}


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request: extra latency, plus at most one terminal fault."""

    latency_s: float = 0.0
    fault: Fault | None = None


def validate(kind: str, host: str | None, params: dict[str, Any]) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    if host is not None and host not in HOSTS:
        raise ValueError(f"host must be one of {HOSTS} or None")
    if kind == "status" and not 400 <= int(params.get("status", 500)) <= 599:
        raise ValueError("status must be a 4xx or 5xx code")


class FaultRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, kind: str, *, host: str | None = None, path: str | None = None, times: int | None = None,
            after: int = 0, **params: Any) -> int:
        validate(kind, host, params)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for unlimited)")
        if after < 0:
            raise ValueError("after must be >= 0")
        with self._lock:
            fault = Fault(next(self._ids), kind, host, path, times, after, dict(params))
            self._faults.append(fault)
            return fault.id

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def decide(self, host: str, path: str) -> Decision:
        """Count this request against every matching fault and pick what fires."""
        latency = 0.0
        terminal: Fault | None = None
        with self._lock:
            spent: list[Fault] = []
            for fault in self._faults:
                if not fault.matches(host, path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                if fault.kind == "latency":
                    latency += float(fault.params.get("ms", 100)) / 1000
                elif terminal is None:
                    terminal = fault
                else:
                    continue  # one terminal fault per request; later ones keep their budget
                fault.fired += 1
                if fault.times is not None and fault.fired >= fault.times:
                    spent.append(fault)
            if spent:
                self._faults = [f for f in self._faults if f not in spent]
        return Decision(latency, terminal)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    host: str
    method: str
    path: str
    query: str
    time: float


class RequestLog:
    """Counts per (host, method, path) and the most recent requests (bounded)."""

    def __init__(self, max_records: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._records: deque[RequestRecord] = deque(maxlen=max_records)

    def record(self, host: str, method: str, path: str, query: str) -> None:
        with self._lock:
            self._counts[(host, method, path)] += 1
            self._records.append(RequestRecord(host, method, path, query, time.time()))

    def count(self, host: str | None = None, path: str | None = None, method: str | None = None) -> int:
        """Requests matching all given filters; a ``path`` ending in ``*`` matches as a prefix."""
        prefix = path[:-1] if path is not None and path.endswith("*") else None
        with self._lock:
            return sum(
                n for (h, m, p), n in self._counts.items()
                if (host is None or h == host) and (method is None or m == method.upper())
                and (path is None or (p.startswith(prefix) if prefix is not None else p == path))
            )

    def counts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"host": h, "method": m, "path": p, "count": n}
                    for (h, m, p), n in sorted(self._counts.items())]

    def records(self, limit: int | None = None) -> list[RequestRecord]:
        with self._lock:
            items = list(self._records)
        return items[-limit:] if limit else items

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._records.clear()


# Cloudflare's block page, trimmed: what a client sees when an edge answers instead of the API.
GARBAGE_HTML = """<!DOCTYPE html>
<html lang="en-US"><head><title>Attention Required! | Cloudflare</title>
<meta charset="UTF-8" /><meta name="robots" content="noindex, nofollow" /></head>
<body><div id="cf-wrapper"><div id="cf-error-details" class="cf-error-details-wrapper">
<h1 data-translate="block_headline">Sorry, you have been blocked</h1>
<h2 class="cf-subheadline">You are unable to access polymarket.com</h2>
<p>This website is using a security service to protect itself from online attacks.</p>
<span class="cf-footer-item">Cloudflare Ray ID: <strong>8f1d2c3b4a5e6f70</strong></span>
</div></div></body></html>
"""
