"""Small types shared by the CLOB and Gamma views and the HTTP server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Query = dict[str, list[str]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def json_response(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    # Compact separators, as both Polymarket APIs send.
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, list(headers or []))


class ApiError(Exception):
    """Raised inside a view to answer with ``response`` instead."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def not_found_page() -> Response:
    # Unknown routes on both hosts answer like a bare Go router.
    return Response(404, b"404 page not found", content_type="text/plain; charset=utf-8")
