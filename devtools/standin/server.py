"""The two HTTP servers (CLOB and Gamma) and ``PolymarketStandIn``, the object tests hold."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from . import control
from .catalogue import Catalogue, Market
from .clob import BOOKS_UNKNOWN, ClobViews
from .common import Response, json_response
from .faults import GARBAGE_HTML, Fault, FaultRegistry, RequestLog, RequestRecord
from .gamma import GammaViews
from .market_data import MarketData

log = logging.getLogger("devtools.standin")

# Error bodies a real 5xx carries on each host (§3.19, §4.5).
_STATUS_BODIES: dict[str, dict[int, Any]] = {
    "clob": {500: {"error": "Internal server error"}, 425: {"error": "service not ready"},
             503: {"error": "service unavailable"}},
    "gamma": {500: {"type": "internal error", "error": "cannot get the information"},
              503: {"type": "service unavailable", "error": "service unavailable"}},
}


def fault_response(host: str, fault: Fault) -> Response:
    if fault.kind == "rate_limit":
        retry_after = fault.params.get("retry_after", 1)
        return json_response({"error": "Too Many Requests"}, 429, [("Retry-After", str(retry_after))])
    if fault.kind == "garbage":
        return Response(200, GARBAGE_HTML.encode(), content_type="text/html; charset=UTF-8")
    status = int(fault.params.get("status", 500))
    body = fault.params.get("body")
    if body is None:
        default = {"error": "Internal server error"} if host == "clob" else \
            {"type": "internal error", "error": "cannot get the information"}
        body = _STATUS_BODIES[host].get(status, default)
    return json_response(body, status)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: benchmarks open ~200 connections at once

    def __init__(self, address: tuple[str, int], standin: PolymarketStandIn, name: str) -> None:
        self.standin = standin
        self.name = name  # "clob" or "gamma"
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One daemon thread per connection, remembered so stop() can close and join them.
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name=f"standin-{self.name}", daemon=True)
        with self._conn_lock:
            self._connections[request] = thread
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (timeouts, resets) are routine here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            log.exception("stand-in %s: error while serving %s", self.name, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def close_connections(self, timeout: float = 2.0) -> None:
        with self._conn_lock:
            items = list(self._connections.items())
        for sock, _thread in items:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading the next request
        deadline = time.monotonic() + timeout
        for _sock, thread in items:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "standin"
    sys_version = ""
    timeout = 300  # drop idle keep-alive connections eventually
    # Headers and body leave in one write (flushed after each request) with Nagle off: written
    # separately, keep-alive clients wait ~40 ms per request on delayed ACKs.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log keeps what tests need

    def do_GET(self) -> None:  # http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(json_response({"error": "Invalid payload"}, 400))
            return
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        path, raw_query = split.path, split.query
        query = parse_qs(raw_query, keep_blank_values=True)
        pm = self.server.standin
        host = self.server.name
        if path == control.PREFIX or path.startswith(control.PREFIX + "/"):
            self._send(control.handle(pm, method, path, query, body))
            return
        pm.log.record(host, method, path, raw_query)
        decision = pm.faults_registry.decide(host, path)
        delay = decision.latency_s + pm.latency_ms / 1000
        if delay > 0:
            pm.sleep(delay)
        fault = decision.fault
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind == "hang":
            pm.sleep(float(fault.params.get("seconds", 30)))
            fault = None
        if fault is not None:
            response = fault_response(host, fault)
        else:
            try:
                response = pm.views[host](method, path, query, body)
            except Exception:  # a stand-in bug: answer like the host's 500 and keep serving
                log.exception("stand-in %s failed on %s %s", host, method, self.path)
                response = fault_response(host, Fault(0, "status"))
        self._send(response)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out during a hang fault)
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into an RST: the client sees a reset, not EOF.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class PolymarketStandIn:
    """A simulated Polymarket (CLOB + Gamma) on two loopback ports. See the package docstring."""

    def __init__(self, markets: int = 2000, closed_fraction: float = 0.1, seed: int = 7, *,
                 host: str = "127.0.0.1", clob_port: int = 0, gamma_port: int = 0, step: float = 1.0,
                 latency_ms: float = 0.0, clock: Callable[[], float] | None = None,
                 anchor: float | None = None, books_unknown: str = "omit") -> None:
        self.host = host
        self._ports = (clob_port, gamma_port)
        self.latency_ms = latency_ms
        self._base_clock = clock or time.time
        self._offset = 0.0
        self.catalogue = Catalogue(markets, closed_fraction, seed, anchor)
        self.market_data = MarketData(self.catalogue, self.now, step)
        self.clob = ClobViews(self.catalogue, self.market_data)
        self.set_books_unknown(books_unknown)
        self.gamma = GammaViews(self.catalogue, self.market_data)
        self.views: dict[str, Callable[[str, str, dict[str, list[str]], bytes], Response]] = {
            "clob": self.clob.handle, "gamma": self.gamma.handle}
        self.faults_registry = FaultRegistry()
        self.log = RequestLog()
        self._stopping = threading.Event()
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._servers:
            return self
        self._stopping.clear()
        try:
            for name, port in zip(("clob", "gamma"), self._ports, strict=True):
                self._servers[name] = _Server((self.host, port), self, name)
        except OSError:
            self.stop()
            raise
        for name, server in self._servers.items():
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"standin-{name}-accept", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in latency/hang faults
        serving = bool(self._threads)  # shutdown() would wait forever for a loop that never ran
        for server in self._servers.values():
            if serving:
                server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _url(self, name: str) -> str:
        if name not in self._servers:
            raise RuntimeError("stand-in not started")
        host, port = self._servers[name].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def clob_url(self) -> str:
        return self._url("clob")

    @property
    def gamma_url(self) -> str:
        return self._url("gamma")

    def info(self) -> dict[str, Any]:
        return {
            "simulated": True, "clob_url": self.clob_url, "gamma_url": self.gamma_url,
            "markets": len(self.catalogue), "open": sum(not m.closed for m in self.catalogue),
            "seed": self.catalogue.seed, "step": self.market_data.step, "now": self.now(),
        }

    # --- clock --------------------------------------------------------------------------------

    def now(self) -> float:
        return self._base_clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Shift the simulated clock (prices, books, /time, history) forward."""
        self._offset += seconds

    def sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # --- counts and faults --------------------------------------------------------------------

    def count(self, host: str | None = None, path: str | None = None, method: str | None = None) -> int:
        return self.log.count(host, path, method)

    def counts(self) -> list[dict[str, Any]]:
        return self.log.counts()

    def requests(self, limit: int | None = None) -> list[RequestRecord]:
        return self.log.records(limit)

    def reset_counts(self) -> None:
        self.log.reset()

    def inject(self, kind: str, *, host: str | None = None, path: str | None = None, times: int | None = None,
               after: int = 0, **params: Any) -> int:
        """Add a fault (see ``faults``); returns its id for ``remove_fault``."""
        return self.faults_registry.add(kind, host=host, path=path, times=times, after=after, **params)

    def remove_fault(self, fault_id: int) -> bool:
        return self.faults_registry.remove(fault_id)

    def faults(self) -> list[dict[str, Any]]:
        return self.faults_registry.list()

    def clear_faults(self) -> None:
        self.faults_registry.clear()

    # --- catalogue and prices -----------------------------------------------------------------

    def market(self, key: str | int) -> Market:
        """By condition id, token id, Gamma id or slug (KeyError if unknown)."""
        return self.catalogue.market(key)

    def close_market(self, key: str | int, winner: int | None = None, *, settled: bool = True) -> Market:
        """Close a market now: ``closed=true``, no book. Settled (the default), ``winner`` (token index,
        default the favourite) is priced 1 and UMA shows ``["proposed", "resolved"]``; ``settled=False``
        closes it unsettled: last prices kept, no winner, UMA ``["proposed"]``. Closing an unsettled
        market again settles it and keeps its close time."""
        m = self.market(key)
        if not settled:
            if winner is not None:
                raise ValueError("an unsettled close has no winner")
            self.catalogue.close(m, None, self.now())
            return m
        if winner is None:
            winner = 0 if self.market_data.midpoint(m, 0, m.closed_at) >= 0.5 else 1
        if winner not in (0, 1) or isinstance(winner, bool):
            raise ValueError("winner must be 0 or 1")
        self.catalogue.close(m, winner, self.now())
        return m

    def reopen_market(self, key: str | int) -> Market:
        m = self.market(key)
        self.catalogue.reopen(m)
        return m

    def add_markets(self, count: int = 1, *, closed: bool = False) -> list[Market]:
        """New open markets created now (appended to the catalogue, so also to the last CLOB page);
        ``closed=True``: markets that closed and settled long ago (their events too), new to any
        client that crawled before, like an old link a user brings."""
        return self.catalogue.add_markets(count, self.now(), closed=closed)

    def _token(self, token_id: str) -> tuple[Market, int]:
        m, token = self.catalogue.by_token_id[token_id]
        return m, token.index

    def set_price(self, token_id: str, price: float, *, hold: bool = True) -> None:
        """Set a token's midpoint from now on (best bid/ask one tick either side; its sibling mirrors).
        ``hold=True`` keeps the book still until ``release_price``; ``hold=False`` restarts the walk there."""
        m, index = self._token(token_id)
        self.market_data.set_price(m, index, price, hold=hold)

    def release_price(self, token_id: str) -> None:
        self.market_data.release_price(self._token(token_id)[0])

    def forget_history(self, before: float, token_id: str | None = None) -> None:
        """Make /prices-history drop points before ``before`` (unix s), for one token or all."""
        if token_id is not None:
            self._token(token_id)
        self.market_data.forget_history(before, token_id)

    def set_books_unknown(self, mode: str) -> None:
        """What ``POST /books`` does with a token that has no book (unknown or closed), one of the
        two readings of the contract: ``"omit"`` leaves it out of the answer, ``"404"`` fails the
        whole batch with the 404 ``/book`` gives for it."""
        if mode not in BOOKS_UNKNOWN:
            raise ValueError(f"books_unknown must be one of {', '.join(BOOKS_UNKNOWN)}")
        self.clob.books_unknown = mode

    def make_one_sided(self, token_id: str) -> None:
        """From now on the token's market has never traded and has one side: ``tokens[0]`` only
        bids, ``tokens[1]`` (its mirror) only asks, and ``last_trade_price`` is ``""`` in their
        books (what upstream sends before a first trade is unconfirmed). Only ``/book`` and
        ``/books`` show this; the other price routes keep the two-sided prices."""
        self.market_data.make_one_sided(self._token(token_id)[0])

    def book(self, token_id: str) -> dict[str, Any]:
        """The current ``/book`` object of an open market's token, without HTTP."""
        m, index = self._token(token_id)
        return self.market_data.book(m, index)
