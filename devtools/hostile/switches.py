"""One function per misbehaviour: ``SWITCHES[name](exchange, params)`` bends an answer in place.

Generic switches (more are added beside them, one per misbehaviour a test needs):

* ``body``        -- replace the body: ``body`` (str or bytes), optional ``status``, ``content_type``.
* ``json``        -- replace the body with ``value`` as JSON, optional ``status``.
* ``header``      -- set header ``name`` to ``value`` (e.g. an absurd ``Retry-After``), optional ``status``.
* ``row_field``   -- Gamma rows: set ``field`` to ``value`` in the rows at ``rows`` (indexes; default
  every row) of a ``/markets`` or ``/events`` list or a ``/markets/keyset`` or ``/events/keyset`` page
  (event rows there); ``markets`` (indexes, or true for all): in those markets inside each chosen event
  row instead.
* ``deep_nesting`` -- a body of ``depth`` nested arrays (default 80,000): ``[[[...]]]``.
* ``gzip``        -- send the body gzip-compressed (``Content-Encoding: gzip``); with ``bomb_mb``,
  the body becomes that many MB of spaces inside valid-looking JSON, compressed (a gzip bomb).
* ``trickle``     -- send the answer ``bytes_per_s`` bytes a second (default 1), headers included
  unless ``body_only``.
* ``huge``        -- a 200 of ``mb`` MB (default 50) of spaces inside valid-looking JSON, written
  64 KB at a time, with a Content-Length or, with ``chunked``, none (its size is known only once
  read); ``meter``, a dict, counts in ``meter["bytes"]`` the body bytes written so far.
* ``book_field``  -- CLOB books (``/book``, each book of a ``/books`` answer): set ``field`` to ``value``
  (``delete``: remove it); with ``side`` (``bids``/``asks``), in the level at ``level`` (index, default -1:
  the best, which upstream lists last), or the whole level when ``field`` is None. ``tokens``: only the
  books of these asset ids; ``raw``: ``value`` is JSON text spliced in as is (``1e400``, ``NaN``).
* ``history_point`` -- ``/prices-history``: set ``field`` (``t``/``p``) of the points at ``points``
  (indexes, default [-1], the newest) to ``value``, or the whole point when ``field`` is None; ``append``:
  a list of points added at the end; ``raw`` as for ``book_field``.
* ``batch_history`` -- ``POST /batch-prices-history``: the token at ``token`` (index in the answer's map,
  default 0) gets ``value`` as its whole history, or, with ``field`` (``t``/``p``), that field of its
  point at ``point`` (default -1) set to ``value``; ``raw`` as for ``book_field``.
* ``keyset_loop`` -- Gamma ``/markets/keyset`` and ``/events/keyset``: ``next_cursor`` becomes a fresh
  random cursor on every page (also the last), one that leads back to the first page: the same rows forever.
* ``later_pages`` -- apply switch ``then`` (with the other params) only to requests with an
  ``after_cursor``: Gamma keyset pages after the first (a refresh that stalls halfway).
* ``closed_lookups`` -- apply switch ``then`` (with the other params) only to requests asking for
  ``closed=true``: Gamma lookups of closed markets, not the crawl of open ones.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import secrets
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


def _rows(data: Any) -> Any:
    # A list answer, or a keyset page's rows (events pages carry "events", market pages "markets").
    if isinstance(data, dict):
        return data.get("events") if "events" in data else data.get("markets")
    return data


def market_rows(exchange: Exchange) -> list[dict[str, Any]] | None:
    """The Gamma rows of this answer (a list, or a keyset page's ``markets``/``events``), or None."""
    if exchange.host != "gamma" or exchange.status != 200:
        return None
    rows = _rows(exchange.json())
    return rows if isinstance(rows, list) else None


def edit_rows(exchange: Exchange, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    data = exchange.json()
    rows = _rows(data)
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
    nested = params.get("markets")

    def edit(rows: list[dict[str, Any]]) -> None:
        for index, row in enumerate(rows):
            if wanted is not None and index not in wanted:
                continue
            if nested is None:
                row[params["field"]] = params["value"]
            elif isinstance(row, dict) and isinstance(row.get("markets"), list):
                for k, market in enumerate(row["markets"]):
                    if nested is True or k in nested:
                        market[params["field"]] = params["value"]

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


@switch("huge")
def _huge(exchange: Exchange, params: dict[str, Any]) -> None:
    size = int(float(params.get("mb", 50)) * 2**20)
    chunked = bool(params.get("chunked", False))
    meter: dict[str, int] = params.get("meter", {})
    piece = b" " * (1 << 16)
    # Spaces inside a JSON string: one piece object, written size // 64 KB times.
    pieces = [b'{"market":"x","asset_id":"1","bids":[],"asks":[],"pad":"', *[piece] * (size // len(piece)), b'"}']
    exchange.status = 200

    def send(ex: Exchange, wfile: BinaryIO) -> None:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, pieces))}"
        head = [f"HTTP/1.1 {ex.status} X", f"Content-Type: {ex.content_type}", length,
                *(f"{k}: {v}" for k, v in ex.headers if k.lower() != "content-length")]
        wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        meter.setdefault("bytes", 0)
        for chunk in pieces:
            if ex.stop.is_set():
                return
            wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            meter["bytes"] += len(chunk)
        if chunked:
            wfile.write(b"0\r\n\r\n")

    exchange.send = send


# --- CLOB books and history (book_field, history_point) ----------------------------------------

_RAW_MARK = "\u0000hostile-raw-{}\u0000"


def _set_json_raw(exchange: Exchange, data: Any, raws: list[str]) -> None:
    """``set_json``, then each raw marker replaced by its JSON text (a literal json.dumps refuses)."""
    exchange.set_json(data)
    for index, text in enumerate(raws):
        marker = f'"\\u0000hostile-raw-{index}\\u0000"'.encode()  # how set_json writes the mark
        exchange.body = exchange.body.replace(marker, text.encode())


def _value(params: dict[str, Any], raws: list[str]) -> Any:
    if not params.get("raw"):
        return params.get("value")
    raws.append(str(params["value"]))
    return _RAW_MARK.format(len(raws) - 1)


def _edit(target: dict[str, Any], field: Any, params: dict[str, Any], raws: list[str]) -> None:
    if params.get("delete"):
        target.pop(field, None)
    else:
        target[field] = _value(params, raws)


@switch("book_field")
def _book_field(exchange: Exchange, params: dict[str, Any]) -> None:
    if exchange.host != "clob" or exchange.status != 200 or exchange.path not in ("/book", "/books"):
        return
    data = exchange.json()
    books = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    wanted = params.get("tokens")
    raws: list[str] = []
    for book in books:
        if not isinstance(book, dict) or (wanted is not None and book.get("asset_id") not in wanted):
            continue
        side = params.get("side")
        if side is None:
            _edit(book, params["field"], params, raws)
            continue
        levels = book.get(side)
        index = int(params.get("level", -1))
        if not isinstance(levels, list) or not -len(levels) <= index < len(levels):
            continue
        if params.get("field") is None:
            levels[index] = _value(params, raws)
        elif isinstance(levels[index], dict):
            _edit(levels[index], params["field"], params, raws)
    _set_json_raw(exchange, data, raws)


@switch("history_point")
def _history_point(exchange: Exchange, params: dict[str, Any]) -> None:
    if exchange.host != "clob" or exchange.status != 200 or exchange.path != "/prices-history":
        return
    data = exchange.json()
    points = data.get("history") if isinstance(data, dict) else None
    if not isinstance(points, list):
        return
    raws: list[str] = []
    for index in params.get("points", [-1]):
        if not -len(points) <= index < len(points):
            continue
        if params.get("field") is None:
            points[index] = _value(params, raws)
        elif isinstance(points[index], dict):
            _edit(points[index], params["field"], params, raws)
    points.extend(params.get("append", []))
    _set_json_raw(exchange, data, raws)


@switch("batch_history")
def _batch_history(exchange: Exchange, params: dict[str, Any]) -> None:
    if exchange.host != "clob" or exchange.status != 200 or exchange.path != "/batch-prices-history":
        return
    data = exchange.json()
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, dict) or not history:
        return
    tokens = list(history)
    index = int(params.get("token", 0))
    if not -len(tokens) <= index < len(tokens):
        return
    token, raws = tokens[index], []
    if params.get("field") is None:
        history[token] = _value(params, raws)
    else:
        points = history[token]
        point = int(params.get("point", -1))
        if isinstance(points, list) and -len(points) <= point < len(points) and isinstance(points[point], dict):
            _edit(points[point], params["field"], params, raws)
    _set_json_raw(exchange, data, raws)


@switch("keyset_loop")
def _keyset_loop(exchange: Exchange, params: dict[str, Any]) -> None:
    if exchange.host != "gamma" or exchange.path not in ("/markets/keyset", "/events/keyset") \
            or exchange.status != 200:
        return
    data = exchange.json()
    if not isinstance(data, dict):
        return
    # The stand-in's cursor format (devtools.standin.gamma): a key before every market's sort
    # key, so the next page is the first again; the nonce makes each cursor new.
    raw = json.dumps({"v": 1, "k": [float("-inf")], "nonce": secrets.token_hex(8)}).encode()
    data["next_cursor"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    exchange.set_json(data)


@switch("later_pages")
def _later_pages(exchange: Exchange, params: dict[str, Any]) -> None:
    if "after_cursor" in exchange.query:
        SWITCHES[params["then"]](exchange, {k: v for k, v in params.items() if k != "then"})


@switch("closed_lookups")
def _closed_lookups(exchange: Exchange, params: dict[str, Any]) -> None:
    if "true" in exchange.query.get("closed", []):
        SWITCHES[params["then"]](exchange, {k: v for k, v in params.items() if k != "then"})
