"""One HTTP request, without sockets: routing it to a function (404, 405, HEAD), invoking it,
and CORS."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import azure.functions as func

from devtools.funchost.cors import CorsPolicy
from devtools.funchost.functions import HttpFunction, collect_functions
from devtools.funchost.invocation import Invoker, OutputBinding
from devtools.funchost.messages import (
    SIMULATED_HEADER,
    HostResponse,
    IncomingRequest,
    error_response,
    to_host_response,
)
from devtools.funchost.routes import split_path
from devtools.funchost.settings import DEFAULT_ROUTE_PREFIX

log = logging.getLogger(__name__)

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def _joined(pairs: Iterable[tuple[str, str]], separator: str) -> dict[str, str]:
    # The host hands repeated query parameters / headers to the worker as one joined value.
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]}{separator}{value}" if key in joined else value
    return joined


class HttpDispatcher:
    """Routing, invocation and CORS for one request, with no sockets involved."""

    def __init__(
        self, functions: Sequence[HttpFunction], *, cors: CorsPolicy | None = None,
        invoker: Invoker | None = None, simulated: bool = False,
    ) -> None:
        self.functions = tuple(functions)
        self.cors = cors
        self.invoker = invoker or Invoker()
        # Demo mode: the host's own answers (errors, preflights) are labelled as the app's are.
        self.simulated = simulated
        self._ambiguities_reported: set[tuple[str, str]] = set()

    def host_error(self, status: int, code: str, message: str,
                   headers: Iterable[tuple[str, str]] = ()) -> HostResponse:
        return error_response(status, code, message, headers, simulated=self.simulated)

    def dispatch(self, request: IncomingRequest) -> HostResponse:
        origin = request.header("Origin")
        requested_method = request.header("Access-Control-Request-Method")
        if self.cors and request.method == "OPTIONS" and origin and requested_method:
            response = self.cors.preflight(origin, requested_method, request.header("Access-Control-Request-Headers"))
            return response.with_headers([SIMULATED_HEADER]) if self.simulated else response
        response = self._route(request)
        if self.cors:
            response = self.cors.apply(response, origin)
        return response

    def _route(self, request: IncomingRequest) -> HostResponse:
        method = request.method.upper()
        segments = split_path(request.path)
        matches = [(fn, values) for fn in self.functions if (values := fn.template.match(segments)) is not None]
        if not matches:
            return self.host_error(404, "not_found", f"no function is registered for {request.path}")
        candidates = [m for m in matches if m[0].accepts(method)]
        if not candidates and method == "HEAD":
            candidates = [m for m in matches if m[0].accepts("GET")]
        if not candidates:
            allowed = sorted({m for fn, _ in matches for m in (fn.methods or ALL_METHODS)})
            return self.host_error(
                405, "method_not_allowed", f"{method} is not allowed for {request.path}",
                (("Allow", ", ".join(allowed)),),
            )
        # Most specific template wins (literal over parameter); ties go to registration order.
        candidates.sort(key=lambda m: m[0].template.precedence)
        function, route_params = candidates[0]
        if len(candidates) > 1 and candidates[1][0].template.precedence == function.template.precedence:
            self._report_ambiguity(function, candidates[1][0])
        response = self.invoke(function, request, route_params)
        if method == "HEAD":
            # Same headers as GET (Content-Length included), no body.
            length = str(len(response.body))
            headers = (*(h for h in response.headers if h[0].lower() != "content-length"), ("Content-Length", length))
            response = replace(response, headers=headers, body=b"")
        return response

    def _report_ambiguity(self, first: HttpFunction, second: HttpFunction) -> None:
        key = (first.name, second.name)
        if key not in self._ambiguities_reported:
            self._ambiguities_reported.add(key)
            log.warning("routes of %s and %s are ambiguous; using %s (Azure would fail the request)",
                        first.name, second.name, first.name)

    def invoke(self, function: HttpFunction, request: IncomingRequest, route_params: Mapping[str, str]) -> HostResponse:
        headers = _joined(request.headers, ", ")
        req = func.HttpRequest(
            request.method.upper(), request.url or request.path, headers=headers,
            params=_joined(request.query, ","), route_params=dict(route_params), body=request.body,
        )
        kwargs: dict[str, Any] = {function.binding_name: req}
        out = OutputBinding() if function.output_name else None
        if function.output_name:
            kwargs[function.output_name] = out
        context = self.invoker.context(function.name, req.headers)
        if function.wants_context:
            kwargs["context"] = context
        try:
            result = self.invoker.call(function.user_function, kwargs)
            if result is None and out is not None:
                result = out.get()
            return to_host_response(result)
        except Exception:
            # Logged with its traceback; the client only learns that something failed, as in Azure.
            log.exception("function %s failed (invocation %s)", function.name, context.invocation_id)
            return self.host_error(500, "internal", "internal error")


def invoke_http(
    app_or_functions: Any, method: str, path: str, *, query: str | Mapping[str, str] = "",
    headers: Mapping[str, str] | None = None, body: bytes = b"", route_prefix: str = DEFAULT_ROUTE_PREFIX,
    cors: CorsPolicy | None = None,
) -> HostResponse:
    """Route and invoke one request against an app without a server (handy in tests)."""
    from urllib.parse import parse_qsl, urlencode

    functions = app_or_functions
    if not (isinstance(functions, Sequence) and all(isinstance(f, HttpFunction) for f in functions)):
        functions = collect_functions(app_or_functions, route_prefix).http
    pairs = tuple(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else tuple(query.items())
    url = f"http://localhost{path}" + (f"?{urlencode(pairs)}" if pairs else "")
    request = IncomingRequest(method.upper(), path, url, pairs, tuple((headers or {}).items()), body)
    dispatcher = HttpDispatcher(functions, cors=cors)
    try:
        return dispatcher.dispatch(request)
    finally:
        dispatcher.invoker.close()
