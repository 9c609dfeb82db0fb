"""One function per misbehaviour: ``SWITCHES[name](exchange, params)`` bends an answer in place.

Generic switches (more are added beside them, one per misbehaviour a test needs):

* ``body``        -- replace the body: ``body`` (str or bytes), optional ``status``, ``content_type``.
* ``json``        -- replace the body with ``value`` as JSON, optional ``status``.
* ``header``      -- set header ``name`` to ``value`` (e.g. an absurd ``Retry-After``), optional ``status``.
* ``row_field``   -- Gamma market rows: set ``field`` to ``value`` in the rows at ``rows`` (indexes;
  default every row) of a ``/markets`` list or ``/markets/keyset`` page.
* ``deep_nesting`` -- a body of ``depth`` nested arrays (default 80,000): ``[[[...]]]``.
* ``gzip``        -- send the body gzip-compressed (``Content-Encoding: gzip``); with ``bomb_mb``,
  the body becomes that many MB of spaces inside valid-looking JSON, compressed (a gzip bomb).
* ``trickle``     -- send the answer ``bytes_per_s`` bytes a second (default 1), headers included
  unless ``body_only``.
* ``later_pages`` -- apply switch ``then`` (with the other params) only to requests with an
  ``after_cursor``: Gamma keyset pages after the first (a refresh that stalls halfway).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from .server import Exchange

Switch = Callable[[Exchange, dict[str, Any]], None]
SWITCHES: dict[str, Switch] = {}


def switch(name: str) -> Callable[[Switch], Switch]:
    def register(fn: Switch) -> Switch:
        SWITCHES[name] = fn
        return fn

    return register


def market_rows(exchange: Exchange) -> list[dict[str, Any]] | None:
    """The Gamma market rows of this answer (a list, or a keyset page's ``markets``), or None."""
    if exchange.host != "gamma" or exchange.status != 200:
        return None
    data = exchange.json()
    rows = data.get("markets") if isinstance(data, dict) else data
    return rows if isinstance(rows, list) else None


def edit_rows(exchange: Exchange, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    data = exchange.json()
    rows = data.get("markets") if isinstance(data, dict) else data
    if isinstance(rows, list):
        edit(rows)
        exchange.set_json(data)


@switch("body")
def _body(exchange: Exchange, params: dict[str, Any]) -> None:
    body = params["body"]
    exchange.body = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    exchange.status = int(params.get("status", exchange.status))
    exchange.content_type = params.get("content_type", exchange.content_type)


@switch("json")
def _json(exchange: Exchange, params: dict[str, Any]) -> None:
    exchange.set_json(params["value"])
    exchange.status = int(params.get("status", exchange.status))


@switch("header")
def _header(exchange: Exchange, params: dict[str, Any]) -> None:
    exchange.set_header(str(params["name"]), str(params["value"]))
    exchange.status = int(params.get("status", exchange.status))


@switch("row_field")
def _row_field(exchange: Exchange, params: dict[str, Any]) -> None:
    if market_rows(exchange) is None:
        return
    wanted = params.get("rows")

    def edit(rows: list[dict[str, Any]]) -> None:
        for index, row in enumerate(rows):
            if wanted is None or index in wanted:
                row[params["field"]] = params["value"]

    edit_rows(exchange, edit)


@switch("deep_nesting")
def _deep_nesting(exchange: Exchange, params: dict[str, Any]) -> None:
    depth = int(params.get("depth", 80_000))
    exchange.body = b"[" * depth + b"]" * depth
    exchange.status = 200


@switch("gzip")
def _gzip(exchange: Exchange, params: dict[str, Any]) -> None:
    if "bomb_mb" in params:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
            out.write(b'{"market":"x","asset_id":"1","bids":[],"asks":[],"pad":"')
            chunk = b" " * (1 << 20)
            for _ in range(int(params["bomb_mb"])):
                out.write(chunk)
            out.write(b'"}')
        exchange.body = buffer.getvalue()
        exchange.status = 200
    else:
        exchange.body = gzip.compress(exchange.body)
    exchange.set_header("Content-Encoding", "gzip")


@switch("trickle")
def _trickle(exchange: Exchange, params: dict[str, Any]) -> None:
    gap = 1.0 / float(params.get("bytes_per_s", 1))
    body_only = bool(params.get("body_only", False))

    def send(ex: Exchange, wfile: BinaryIO) -> None:
        head = ex.head()
        if body_only:
            wfile.write(head)
            wfile.flush()
        for byte in (b"" if body_only else head) + ex.body:
            if ex.stop.wait(gap):
                return
            wfile.write(bytes([byte]))
            wfile.flush()

    exchange.send = send



@switch("later_pages")
def _later_pages(exchange: Exchange, params: dict[str, Any]) -> None:
    if "after_cursor" in exchange.query:
        SWITCHES[params["then"]](exchange, {k: v for k, v in params.items() if k != "then"})
