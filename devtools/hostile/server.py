"""The hostile servers: the stand-in's answers, bent by the switches that match each request."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Self
from urllib.parse import parse_qs, urlsplit

from devtools.standin import PolymarketStandIn

log = logging.getLogger("devtools.hostile")

HOSTS = ("clob", "gamma")


@dataclass
class Exchange:
    """One request and the answer about to be sent; switches change the answer in place.

    ``send`` replaces the normal write (a trickle, a reset): it gets the raw socket file.
    """

    host: str
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    send: Callable[[Exchange, BinaryIO], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def json(self) -> Any:
        return json.loads(self.body)

    def set_json(self, value: Any) -> None:
        # ensure_ascii=False with surrogatepass: switches may plant lone surrogates on purpose.
        self.body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")

    def set_header(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]

    def head(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} X", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class _Active:
    id: int
    name: str
    host: str | None
    path: str | None
    times: int | None
    params: dict[str, Any]
    fired: int = 0

    def matches(self, host: str, path: str) -> bool:
        return (self.host is None or self.host == host) and (self.path is None or path.startswith(self.path))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hostile: HostileUpstream, name: str) -> None:
        self.hostile = hostile
        self.name = name
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        hostile = self.server.hostile
        standin = hostile.standin
        standin.log.record(self.server.name, method, split.path, split.query)
        answer = standin.views[self.server.name](method, split.path, query, raw)
        exchange = Exchange(self.server.name, method, split.path, query, answer.status, answer.body,
                            list(answer.headers), answer.content_type, stop=hostile.stopping)
        hostile.apply(exchange)
        try:
            if exchange.send is not None:
                self.close_connection = True
                exchange.send(exchange, self.wfile)
            else:
                self.wfile.write(exchange.head() + exchange.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class HostileUpstream:
    """Two loopback servers (CLOB, Gamma) over a stand-in's data, with switches."""

    def __init__(self, standin: PolymarketStandIn) -> None:
        self.standin = standin
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: list[_Active] = []
        self._ids = itertools.count(1)
        self._servers: dict[str, _Server] = {}

    def start(self) -> Self:
        for name in HOSTS:
            server = _Server(self, name)
            self._servers[name] = server
            threading.Thread(target=server.serve_forever, name=f"hostile-{name}", daemon=True).start()
        return self

    def url(self, host: str) -> str:
        return f"http://127.0.0.1:{self._servers[host].server_address[1]}"

    @property
    def clob_url(self) -> str:
        return self.url("clob")

    @property
    def gamma_url(self) -> str:
        return self.url("gamma")

    def on(self, name: str, /, *, host: str | None = None, path: str | None = None, times: int | None = None,
           **params: Any) -> int:
        """Turn switch ``name`` on (``params`` are its own); returns its id."""
        from .switches import SWITCHES

        if name not in SWITCHES:
            raise ValueError(f"unknown switch {name!r}; one of {', '.join(sorted(SWITCHES))}")
        if host is not None and host not in HOSTS:
            raise ValueError(f"host must be one of {HOSTS} or None")
        with self._lock:
            active = _Active(next(self._ids), name, host, path, times, params)
            self._active.append(active)
        return active.id

    def clear(self) -> None:
        with self._lock:
            self._active.clear()

    def fired(self, switch_id: int) -> int:
        with self._lock:
            return next((a.fired for a in self._active if a.id == switch_id), 0)

    def apply(self, exchange: Exchange) -> None:
        from .switches import SWITCHES

        with self._lock:
            matching = []
            for active in self._active:
                if active.matches(exchange.host, exchange.path) and (
                        active.times is None or active.fired < active.times):
                    active.fired += 1
                    matching.append(active)
        for active in matching:
            SWITCHES[active.name](exchange, active.params)

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()

