"""Serving on a real socket: ``LocalHost`` (werkzeug's threaded WSGI server), its timers, and
the start-up listing of functions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request

from devtools.funchost.cors import CorsPolicy
from devtools.funchost.dispatch import HttpDispatcher
from devtools.funchost.functions import collect_functions
from devtools.funchost.invocation import Invoker
from devtools.funchost.messages import DROPPED_RESPONSE_HEADERS, IncomingRequest
from devtools.funchost.settings import read_route_prefix
from devtools.funchost.timers import TimerRunner

log = logging.getLogger(__name__)


class _QuietRequestHandler(WSGIRequestHandler):
    # LocalHost logs one line per request itself (with timing); werkzeug's would duplicate it.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class LocalHost:
    """Serve an app's functions on a real socket; ``port=0`` picks a free port (see ``.url``).

    ``with LocalHost(app) as host: httpx.get(host.url + "/api/health")``
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        host_json: Path | Mapping[str, Any] | None = None,
        route_prefix: str | None = None,
        cors: CorsPolicy | str | None = None,
        run_timers: bool = False,
        root: Path | None = None,
        simulated: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.route_prefix = route_prefix.strip("/") if route_prefix is not None else read_route_prefix(host_json)
        self.index = collect_functions(app, self.route_prefix)
        self.cors = CorsPolicy.parse(cors) if isinstance(cors, str) else cors
        self.invoker = Invoker(root)
        self.dispatcher = HttpDispatcher(self.index.http, cors=self.cors, invoker=self.invoker, simulated=simulated)
        self.timers = TimerRunner(self.index.timers, self.invoker) if run_timers else None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._timers_started = False

    @property
    def url(self) -> str:
        """Base URL, without the route prefix, e.g. ``http://127.0.0.1:7071``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, start_timers: bool = True) -> Self:
        if self._server is not None:
            return self
        self._server = make_server(self.host, self.port, self.wsgi_app, threaded=True,
                                   request_handler=_QuietRequestHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-host-http", daemon=True)
        self._thread.start()
        if start_timers:
            self.start_timers()
        return self

    def start_timers(self) -> None:
        """Start the timer triggers (when ``run_timers``); ``start()`` does this unless told not to."""
        if self.timers and not self._timers_started:
            self._timers_started = True
            self.timers.start()

    def stop(self) -> None:
        if self.timers:
            self.timers.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.invoker.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def describe(self) -> list[str]:
        """One line per function, as Core Tools lists them at start-up."""
        lines = [f"{fn.name}: [{fn.method_list}] {self.url}/{fn.template.text}" for fn in self.index.http]
        for timer in self.index.timers:
            state = "" if self.timers else ", not running (--no-timers)"
            lines.append(f"{timer.name}: timerTrigger ({timer.schedule}{state})")
        lines += [f"{entry}: not supported by the local host" for entry in self.index.unsupported]
        return lines

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        try:
            incoming = IncomingRequest(
                method=request.method.upper(),
                path=request.path,
                url=request.url,
                query=tuple(request.args.items(multi=True)),
                headers=tuple(request.headers.items()),
                body=request.get_data(cache=False),
            )
            response = self.dispatcher.dispatch(incoming)
        except Exception:
            log.exception("local host failed on %s %s", request.method, request.path)
            response = self.dispatcher.host_error(500, "internal", "internal error")
        headers = [(k, v) for k, v in response.headers if k.lower() not in DROPPED_RESPONSE_HEADERS]
        no_body = response.status in (204, 304) or 100 <= response.status < 200
        if not no_body:
            # A HEAD answer keeps the length GET would have (the dispatcher put it in the headers).
            length = response.header("Content-Length") if request.method == "HEAD" else None
            headers.append(("Content-Length", length or str(len(response.body))))
        if request.method == "HEAD":
            no_body = True
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        start_response(f"{response.status} {phrase}", headers)
        log.info("%s %s %d %.1fms", request.method, request.path, response.status,
                 (time.perf_counter() - started) * 1000)
        return [] if no_body else [response.body]
