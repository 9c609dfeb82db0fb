"""A compact, versioned encoding of a ``Snapshot``, stored so a new instance loads it in one read.

Never pickle (the database is not trusted with code). The payload is a zlib stream (the "head")
followed by zlib blocks of market JSON. The head is a JSON header line (format, application
version, probe, what the snapshot derived from the rows: version, last change, rows left out,
and the layout) then fixed binary columns: the markets sorted by condition id (so a swapped or
repeated id is seen), their position in the snapshot, search text, facets, active flags, one
float column per sort (NaN for none) and the default sort order (so the first page needs no
sort). Each market's list JSON (less its ``{"condition_id":...`` prefix, rebuilt from the id so
a body can never be another market's) stays compressed in its block of ``BLOCK`` markets, in
default-sort order, until the market is first served: a new instance inflates the few blocks
its first pages show. A CRC over the blocks is checked at load, so a block that passed it
inflates.

A payload is tagged with the format, the application's version and a probe (what this code makes
of one fixed market); one from other code, or one that does not decode, is a ``CompactError`` and
the caller loads the rows.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import zlib
from array import array
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared import __version__
from shared.markets.snapshot import Item, Snapshot, item_from_json, market_json

FORMAT = 3  # 3: facets (tags, event, status) in place of tags
# 50,000 markets are ~20 MB compressed (~60 MB of JSON); these caps leave room for five times
# that and bound what a hostile or corrupt row can make a new instance inflate.
MAX_COMPRESSED_BYTES = 128 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024 * 1024
COMPRESSION_LEVEL = 1  # the fastest: the payload is written after every refresh
BLOCK = 128  # markets per compressed block: ~128 KB to inflate for a first served market
DEFAULT_ORDER = ("volume", True, True)  # MarketQuery's defaults: sort, descending, active_only
_BIG_ENDIAN = sys.byteorder == "big"  # columns are stored little-endian


class CompactError(ValueError):
    """A stored payload this code cannot use (other code wrote it, or it is corrupt)."""


# One market with every field set: what this code makes of it is stored with each payload, so a
# payload from code that renders or indexes markets otherwise (a field added, a format changed)
# is refused even under the same application version.
_PROBE_ROW: dict[str, Any] = {
    "condition_id": "0x" + "ab" * 32, "gamma_id": "1", "slug": "probe", "question": "Probe?", "category": "Tech",
    "tags": ["a"], "tag_labels": ["A"], "event_id": "2", "event_slug": "e", "event_title": "E",
    "group_item_title": "G", "neg_risk_other": False, "image": "i", "icon": "c",
    "closed_time": datetime(2029, 1, 2, 3, 4, 5, tzinfo=UTC), "uma_statuses": ["proposed"],
    "end_date": datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC), "closed": False, "accepting_orders": True,
    "in_active_set": True, "volume": Decimal("1.5"), "volume_24h": 2, "liquidity": Decimal("0.1"),
    "best_bid": Decimal("0.25"), "best_ask": Decimal("0.75"), "last_trade_price": None, "spread": Decimal("0.5"),
    "one_day_price_change": Decimal("-0.125"),
    "outcomes": [{"index": 0, "outcome": "Yes", "token_id": "1", "price": Decimal("0.3")}],
    "updated_at": datetime(2029, 12, 31, 23, 59, 59, tzinfo=UTC),
}


def _probe(sorts: Mapping[str, str]) -> Any:
    item = item_from_json(market_json(_PROBE_ROW), _PROBE_ROW["end_date"].timestamp(), sorts)
    return json.loads(json.dumps([item.json, item.text, sorted(item.facets), item.active, item.sort_values]))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _prefix(condition_id: str) -> bytes:
    # What every market's list JSON starts with (market_json puts the id first).
    return b'{"condition_id":' + _dumps(condition_id).encode()


def _column(values: array[Any]) -> bytes:
    if _BIG_ENDIAN:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _strings(values: list[str]) -> tuple[bytes, bytes]:
    """(lengths in code points, UTF-8 text): slicing one decoded string is cheaper than 50,000
    small decodes. ``surrogatepass``: JSON strings may hold lone surrogates."""
    return _column(array("I", map(len, values))), "".join(values).encode("utf-8", "surrogatepass")


def encode(snapshot: Snapshot, sorts: Mapping[str, str]) -> bytes:
    """The snapshot as a payload for ``decode``; raises CompactError past MAX_COMPRESSED_BYTES."""
    return b"".join(encode_parts(snapshot, sorts))


def encode_parts(snapshot: Snapshot, sorts: Mapping[str, str]) -> list[bytes]:
    """``encode``'s payload in the pieces it is made of (``write_payload`` streams them, never
    holding them joined as well)."""
    items = snapshot.items
    # Stored by condition id; ``positions`` gives each one's place in ``snapshot.items``.
    positions = sorted(range(len(items)), key=lambda p: items[p].condition_id)
    stored = [items[p] for p in positions]
    index = {id(item): k for k, item in enumerate(stored)}
    default = [index[id(item)] for item in snapshot._ordered(*DEFAULT_ORDER).items]
    in_default = set(default)
    body_order = default + [k for k in range(len(stored)) if k not in in_default]
    body_lengths = array("I")
    blocks: list[bytes] = []
    blocks_crc = 0
    for b in range(0, len(body_order), BLOCK):  # a block at a time: never all the JSON at once
        rests: list[bytes] = []
        for k in body_order[b : b + BLOCK]:
            item = stored[k]
            body = _dumps(item.json).encode()
            prefix = _prefix(item.condition_id)
            if not body.startswith(prefix):
                raise CompactError("a market's JSON does not start with its condition id")
            rests.append(body[len(prefix):])
        body_lengths.extend(map(len, rests))
        blocks.append(zlib.compress(b"".join(rests), COMPRESSION_LEVEL))
        blocks_crc = zlib.crc32(blocks[-1], blocks_crc)
    columns: dict[str, bytes] = {}
    columns["id_lengths"], columns["ids"] = _strings([i.condition_id for i in stored])
    columns["text_lengths"], columns["texts"] = _strings([i.text for i in stored])
    # Markets share their facet set with their event's others: each set is stored (and built at load) once.
    facet_sets: dict[tuple[str, ...], int] = {}
    facet_set_of = [facet_sets.setdefault(tuple(sorted(i.facets)), len(facet_sets)) for i in stored]
    columns["facet_set_of"] = _column(array("I", facet_set_of))
    columns["facet_counts"] = _column(array("I", map(len, facet_sets)))
    columns["facet_lengths"], columns["facets"] = _strings(list(itertools.chain.from_iterable(facet_sets)))
    columns["active"] = bytes(i.active for i in stored)
    columns["positions"] = _column(array("I", positions))
    columns["default_order"] = _column(array("I", default))
    columns["body_lengths"] = _column(body_lengths)
    for name in sorts:
        columns[f"sort:{name}"] = _column(array("d", (
            math.nan if (v := i.sort_values[name]) is None else v for i in stored)))
    header = {
        "format": FORMAT,
        "app": __version__,
        "probe": _probe(sorts),
        "version": snapshot.version,
        "last_change": snapshot.last_change.isoformat() if snapshot.last_change else None,
        "skipped": snapshot.skipped_ids,
        "markets": len(stored),
        "columns": {name: len(value) for name, value in columns.items()},
        "blocks": [len(block) for block in blocks],
        "blocks_crc": blocks_crc,
    }
    # Compressed a column at a time, each freed once in: this runs beside a serving catalogue.
    compressor = zlib.compressobj(COMPRESSION_LEVEL)
    pieces = [compressor.compress(_dumps(header).encode())]
    for name in list(columns):
        pieces.append(compressor.compress(b"\n"))
        pieces.append(compressor.compress(columns.pop(name)))
    pieces.append(compressor.flush())
    head = b"".join(pieces)
    del pieces
    size = len(head) + sum(map(len, blocks))
    if size > MAX_COMPRESSED_BYTES:
        raise CompactError(f"{size:,} bytes compressed, over the {MAX_COMPRESSED_BYTES:,} cap")
    return [head, *blocks]


class _Block:
    """Up to BLOCK markets' JSON, compressed until one of them is first served."""

    __slots__ = ("_compressed", "_lengths", "_lock", "_rests")

    def __init__(self, compressed: memoryview, lengths: list[int]) -> None:
        self._compressed: memoryview | None = compressed
        self._lengths = lengths
        self._rests: list[bytes] | None = None
        self._lock = threading.Lock()

    def body_text(self, slot: int, condition_id: str) -> bytes:
        with self._lock:
            if self._rests is None:
                assert self._compressed is not None
                # Checked at load (the CRC over every block, the inflated sizes' cap).
                raw = zlib.decompress(self._compressed)
                offsets = [0, *itertools.accumulate(self._lengths)]
                if len(raw) != offsets[-1]:  # only a bug in encode() could: the CRC held
                    raise RuntimeError("a compact snapshot block of another size")
                self._compressed = None
                self._rests = [raw[a:b] for a, b in itertools.pairwise(offsets)]
            rest = self._rests[slot]
            self._rests[slot] = b""  # the item keeps its parsed body from now on
        return _prefix(condition_id) + rest


def _inflate(payload: bytes | memoryview) -> tuple[bytes, int]:
    """The head, and where the blocks begin in ``payload``."""
    if len(payload) > MAX_COMPRESSED_BYTES:
        raise CompactError("payload over the size cap")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, MAX_JSON_BYTES)
    except zlib.error:  # also what a changed byte is: the stream carries a checksum
        raise CompactError("not zlib data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise CompactError("truncated, or inflates past the size cap")
    return raw, len(payload) - len(inflater.unused_data)


def _read_column(raw: memoryview, typecode: str) -> array[Any]:
    values = array(typecode)
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def _read_strings(lengths: memoryview, text: memoryview) -> list[str]:
    joined = str(text, "utf-8", "surrogatepass")
    offsets = [0, *itertools.accumulate(_read_column(lengths, "I"))]
    if offsets[-1] != len(joined):
        raise CompactError("a text column of another length")
    return [joined[a:b] for a, b in itertools.pairwise(offsets)]


def unpack(payload: bytes | memoryview) -> tuple[dict[str, Any], dict[str, memoryview], memoryview]:
    """(header, binary columns by name, the blocks) of a payload; CompactError if it is none."""
    head, blocks_at = _inflate(payload)
    end = head.find(b"\n")
    try:
        header = json.loads(head[: end if end >= 0 else len(head)])
    except (ValueError, RecursionError):
        raise CompactError("not JSON") from None
    if not isinstance(header, dict):
        raise CompactError("not a snapshot document")
    if header.get("format") != FORMAT or header.get("app") != __version__:
        raise CompactError("written by other code")
    view = memoryview(head)
    columns: dict[str, memoryview] = {}
    at = end + 1
    try:
        for name, size in header["columns"].items():
            if not isinstance(size, int) or size < 0 or at + size > len(head):
                raise CompactError("columns past the head")
            columns[name] = view[at : at + size]
            at += size + 1
    except (KeyError, TypeError, AttributeError):
        raise CompactError("not a snapshot document") from None
    if at != len(head) + 1:
        raise CompactError("columns of other sizes")
    return header, columns, memoryview(payload)[blocks_at:]


def pack(header: dict[str, Any], columns: Mapping[str, bytes | memoryview], blocks: bytes | memoryview) -> bytes:
    """The payload ``unpack`` gave these parts of (for tools and tests; ``encode`` writes them)."""
    header = {**header, "columns": {name: len(value) for name, value in columns.items()}}
    raw = b"\n".join([_dumps(header).encode(), *map(bytes, columns.values())])
    return zlib.compress(raw, COMPRESSION_LEVEL) + bytes(blocks)


def decode(payload: bytes | memoryview, state: dict[str, Any] | None, sorts: Mapping[str, str]) -> Snapshot:
    """The snapshot ``encode`` stored, with freshness from the current ``state``; raises
    CompactError for anything this code did not write."""
    header, columns, blocks = unpack(payload)
    if header.get("probe") != _probe(sorts):
        raise CompactError("written by code that renders markets otherwise")
    # zlib.crc32 lets go of the GIL: the blocks are checked while the columns are read.
    crc: list[int] = []
    checking = threading.Thread(target=lambda: crc.append(zlib.crc32(blocks)), name="compact-crc")
    checking.start()
    try:
        return _decode(header, columns, blocks, crc, checking, state, sorts)
    finally:
        checking.join()


def _decode(header: dict[str, Any], columns: dict[str, memoryview], blocks: memoryview, crc: list[int],
            checking: threading.Thread, state: dict[str, Any] | None, sorts: Mapping[str, str]) -> Snapshot:
    try:
        n = header["markets"]
        ids = _read_strings(columns["id_lengths"], columns["ids"])
        if len(ids) != n or any(a >= b for a, b in itertools.pairwise(ids)):
            raise CompactError("condition ids out of order, or repeated")
        texts = _read_strings(columns["text_lengths"], columns["texts"])
        all_facets = _read_strings(columns["facet_lengths"], columns["facets"])
        facet_offsets = [0, *itertools.accumulate(_read_column(columns["facet_counts"], "I"))]
        if facet_offsets[-1] != len(all_facets):
            raise CompactError("facets of another count")
        facet_sets = [frozenset(all_facets[a:b]) for a, b in itertools.pairwise(facet_offsets)]
        facets = [facet_sets[t] for t in _read_column(columns["facet_set_of"], "I")]
        active = bytes(columns["active"])
        positions = _read_column(columns["positions"], "I").tolist()
        default = _read_column(columns["default_order"], "I").tolist()
        body_lengths = _read_column(columns["body_lengths"], "I").tolist()
        names = list(sorts)
        values = [[None if v != v else v for v in _read_column(columns[f"sort:{name}"], "d")] for name in names]
        if len({n, len(texts), len(facets), len(active), len(positions), len(body_lengths),
                *(len(v) for v in values)}) != 1:
            raise CompactError("columns of different lengths")
        if sorted(positions) != list(range(n)) or not set(active) <= {0, 1}:
            raise CompactError("not a snapshot document")
        version, skipped = header["version"], header["skipped"]
        if not isinstance(version, str) or not isinstance(skipped, list):
            raise CompactError("not a snapshot document")
        last_change = datetime.fromisoformat(header["last_change"]) if header["last_change"] else None
        # Bodies are stored in default-sort order, then the markets outside it in id order.
        in_default = set(default)
        if len(in_default) != len(default) or not all(0 <= k < n for k in default):
            raise CompactError("not a snapshot document")
        body_order = default + [k for k in range(n) if k not in in_default]
        sizes = header["blocks"]
        checking.join()
        if (len(sizes) != -(-n // BLOCK) or sum(sizes) != len(blocks) or sum(body_lengths) > MAX_JSON_BYTES
                or crc != [header["blocks_crc"]]):
            raise CompactError("blocks of other sizes, or changed")
        slot_of: list[tuple[_Block, int]] = [None] * n  # type: ignore[list-item]  # every slot set below
        at = 0
        for b, size in enumerate(sizes):
            members = body_order[b * BLOCK : (b + 1) * BLOCK]
            block = _Block(blocks[at : at + size], body_lengths[b * BLOCK : (b + 1) * BLOCK])
            at += size
            for slot, k in enumerate(members):
                slot_of[k] = (block, slot)
        # map(): no Python frame per market but Item's own.
        sort_values = list(map(dict, map(zip, itertools.repeat(names), zip(*values, strict=True))))
        blocks_of, slots = zip(*slot_of, strict=True) if n else ((), ())
        stored = list(map(Item, ids, itertools.repeat(None), texts, facets, map(bool, active), sort_values,
                          blocks_of, slots))
        items: list[Item] = [None] * n  # type: ignore[list-item]  # a permutation: every place set
        for item, position in zip(stored, positions, strict=True):
            items[position] = item
        snapshot = Snapshot(items, skipped, version=version, last_change=last_change, state=state)
        # The default order's sort keys (snapshot._sort_key), from the columns the items hold.
        sort, descending, active_only = DEFAULT_ORDER
        column, sign = values[names.index(sort)], -1.0 if descending else 1.0
        keys = [(True, 0.0, ids[k]) if (v := column[k]) is None else (False, sign * v, ids[k]) for k in default]
        snapshot.adopt_order(sort, descending, active_only, [stored[k] for k in default], keys)
    except CompactError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, UnicodeDecodeError) as error:
        raise CompactError(f"not a snapshot document ({type(error).__name__})") from None
    return snapshot
