"""A compact, versioned encoding of a ``Snapshot``, stored so a new instance loads it in one read.

zlib'd JSON (never pickle: the database is not trusted with code). A header line holds what
search and sorting read, as parallel arrays (condition ids, search text, tags, active flags, one
array per sort), and what the snapshot derived from the stored rows (its version, last change,
the rows it left out); then one line per market with its list JSON, in the same order, kept as
text until the market is first served (``Item.json``): a new instance parses only what it shows.

A payload is tagged with the format, the application's version and a probe (what this code makes
of one fixed market); one from other code, or one that does not decode, is a ``CompactError`` and
the caller loads the rows.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared import __version__
from shared.markets.snapshot import Item, Snapshot, item_from_json, market_json

FORMAT = 1
# 50,000 markets are ~9 MB compressed (~40 MB of JSON); these caps leave room for ten times
# that and bound what a hostile or corrupt row can make a new instance inflate.
MAX_COMPRESSED_BYTES = 128 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024 * 1024
COMPRESSION_LEVEL = 1  # the fastest: the payload is written after every refresh



class CompactError(ValueError):
    """A stored payload this code cannot use (other code wrote it, or it is corrupt)."""


# One market with every field set: what this code makes of it is stored with each payload, so a
# payload from code that renders or indexes markets otherwise (a field added, a format changed)
# is refused even under the same application version.
_PROBE_ROW: dict[str, Any] = {
    "condition_id": "0x" + "ab" * 32, "gamma_id": "1", "slug": "probe", "question": "Probe?", "category": "Tech",
    "tags": ["a"], "event_id": "2", "event_slug": "e", "event_title": "E",
    "end_date": datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC), "closed": False, "accepting_orders": True,
    "in_active_set": True, "volume": Decimal("1.5"), "volume_24h": 2, "liquidity": Decimal("0.1"),
    "best_bid": Decimal("0.25"), "best_ask": Decimal("0.75"), "last_trade_price": None, "spread": Decimal("0.5"),
    "one_day_price_change": Decimal("-0.125"),
    "outcomes": [{"index": 0, "outcome": "Yes", "token_id": "1", "price": Decimal("0.3")}],
    "updated_at": datetime(2029, 12, 31, 23, 59, 59, tzinfo=UTC),
}


def _probe(sorts: Mapping[str, str]) -> Any:
    item = item_from_json(market_json(_PROBE_ROW), _PROBE_ROW["end_date"].timestamp(), sorts)
    return json.loads(json.dumps([item.json, item.text, sorted(item.tags), item.active, item.sort_values]))


def _dumps(value: Any) -> str:
    # ASCII, so a market's line never holds a raw newline (JSON escapes those in strings).
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode(snapshot: Snapshot, sorts: Mapping[str, str]) -> bytes:
    """The snapshot as a payload for ``decode``; raises CompactError past MAX_COMPRESSED_BYTES."""
    items = snapshot.items
    header = {
        "format": FORMAT,
        "app": __version__,
        "probe": _probe(sorts),
        "version": snapshot.version,
        "last_change": snapshot.last_change.isoformat() if snapshot.last_change else None,
        "skipped": snapshot.skipped_ids,
        "ids": [item.condition_id for item in items],
        "texts": [item.text for item in items],
        "tags": [sorted(item.tags) for item in items],
        "active": [item.active for item in items],
        "sorts": {name: [item.sort_values[name] for item in items] for name in sorts},
    }
    lines = [_dumps(header), *(_dumps(item.json) for item in items)]
    payload = zlib.compress("\n".join(lines).encode("ascii"), COMPRESSION_LEVEL)
    if len(payload) > MAX_COMPRESSED_BYTES:
        raise CompactError(f"{len(payload):,} bytes compressed, over the {MAX_COMPRESSED_BYTES:,} cap")
    return payload


def _inflate(payload: bytes | memoryview) -> bytes:
    if len(payload) > MAX_COMPRESSED_BYTES:
        raise CompactError("payload over the size cap")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, MAX_JSON_BYTES)
    except zlib.error:  # also what a changed byte is: the stream carries a checksum
        raise CompactError("not zlib data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise CompactError("truncated, or inflates past the size cap")
    return raw


def decode(payload: bytes | memoryview, state: dict[str, Any] | None, sorts: Mapping[str, str]) -> Snapshot:
    """The snapshot ``encode`` stored, with freshness from the current ``state``; raises
    CompactError for anything this code did not write."""
    # Lines stay bytes (json.loads reads those): no copy of the whole payload as text.
    lines = _inflate(payload).split(b"\n")
    try:
        header = json.loads(lines[0])
    except (ValueError, RecursionError):
        raise CompactError("not JSON") from None
    if not isinstance(header, dict):
        raise CompactError("not a snapshot document")
    if header.get("format") != FORMAT or header.get("app") != __version__:
        raise CompactError("written by other code")
    if header.get("probe") != _probe(sorts):
        raise CompactError("written by code that renders markets otherwise")
    try:
        ids, texts, tags, active, columns = (
            header["ids"], header["texts"], header["tags"], header["active"], header["sorts"])
        names = list(sorts)
        values = [columns[name] for name in names]
        bodies = lines[1:] if ids else []
        del lines
        if len({len(ids), len(texts), len(tags), len(active), len(bodies), *(len(v) for v in values)}) != 1:
            raise CompactError("arrays of different lengths")
        version, skipped = header["version"], header["skipped"]
        if not isinstance(version, str) or not isinstance(skipped, list):
            raise CompactError("not a snapshot document")
        last_change = datetime.fromisoformat(header["last_change"]) if header["last_change"] else None
        items: list[Item] = []
        for condition_id, body, text, tag_list, is_active, *sort_values in zip(
                ids, bodies, texts, tags, active, *values, strict=True):
            # Each line must be its market's: a cheap check that the arrays and lines agree.
            if not body.startswith(b'{"condition_id":"%s"' % condition_id.encode()):
                raise CompactError("a market line out of place")
            items.append(Item(condition_id, None, text, frozenset(tag_list), is_active,
                              dict(zip(names, sort_values, strict=True)), body))
    except CompactError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CompactError(f"not a snapshot document ({type(error).__name__})") from None
    return Snapshot(items, skipped, version=version, last_change=last_change, state=state)
