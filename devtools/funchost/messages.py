"""The request and response the host passes around, its own JSON errors, and how a function's
return value becomes a response (as the worker's http output converter does)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import azure.functions as func

# Hop-by-hop headers are the server's business, and the body length is recomputed here.
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
# What the app puts on every answer in demo mode (shared.api.responses); the host's own answers match it.
SIMULATED_HEADER = ("X-Data-Simulated", "true")


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str  # decoded, without the query string
    url: str = ""
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True)
class HostResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> HostResponse:
        return replace(self, headers=(*self.headers, *extra))


def error_response(status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = (), *,
                   simulated: bool = False) -> HostResponse:
    """The host's own JSON error; in demo mode labelled like the app's answers."""
    document: dict[str, Any] = {"error": {"code": code, "message": message}}
    labels: tuple[tuple[str, str], ...] = ()
    if simulated:
        document["simulated"] = True
        labels = (SIMULATED_HEADER,)
    body = json.dumps(document).encode()
    return HostResponse(status, (("Content-Type", "application/json"), *headers, *labels), body)


def to_host_response(result: Any) -> HostResponse:
    """Convert a function's return value the way the worker's http output converter does."""
    if result is None:
        return HostResponse(204)
    if isinstance(result, str):
        return HostResponse(200, (("Content-Type", "text/plain; charset=utf-8"),), result.encode())
    if isinstance(result, bytes | bytearray):
        return HostResponse(200, (("Content-Type", "application/octet-stream"),), bytes(result))
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")
    headers = [(str(k), str(v)) for k, v in result.headers.items()
               if str(k).lower() not in DROPPED_RESPONSE_HEADERS]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = result.mimetype
        content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        headers.append(("Content-Type", content_type))
    return HostResponse(int(result.status_code), tuple(headers), result.get_body() or b"")
