"""A compact, versioned encoding of a ``Snapshot``, stored so a new instance loads it in one read.

zlib'd JSON (never pickle: the database is not trusted with code): the list JSON of every market
as rows of values in a fixed key order, plus what the snapshot derives from the stored rows (its
version, last change, the rows it left out). Searchable text, tags and sort keys are derived again
on load by the same code as for rows, so both paths give the same answers.

A payload is tagged with the application's version and the key order it was written with; one
from other code, or one that does not decode, is a ``CompactError`` and the caller loads rows.
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

EVENT_KEYS = ("id", "slug", "title")
OUTCOME_KEYS = ("outcome", "token_id", "price")


class CompactError(ValueError):
    """A stored payload this code cannot use (other code wrote it, or it is corrupt)."""


# One market with every field set: its JSON (``market_json``) is stored with each payload, so a
# payload from code that renders markets otherwise (a field added, a format changed) is refused
# even under the same application version.
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


def _probe() -> Any:
    return json.loads(json.dumps(market_json(_PROBE_ROW)))


def _market_keys(items: list[Item]) -> list[str]:
    return list(items[0].json) if items else []


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as a payload for ``decode``; raises CompactError past MAX_COMPRESSED_BYTES."""
    keys = _market_keys(snapshot.items)
    event_at, outcomes_at = keys.index("event") if keys else -1, keys.index("outcomes") if keys else -1
    markets: list[list[Any]] = []
    for item in snapshot.items:
        body = item.json
        row = [body[key] for key in keys]
        if row[event_at] is not None:
            row[event_at] = [row[event_at][key] for key in EVENT_KEYS]
        row[outcomes_at] = [[o[key] for key in OUTCOME_KEYS] for o in row[outcomes_at]]
        row.append(item.sort_values["end_date"])
        markets.append(row)
    document = {
        "format": FORMAT,
        "app": __version__,
        "version": snapshot.version,
        "last_change": snapshot.last_change.isoformat() if snapshot.last_change else None,
        "skipped": snapshot.skipped_ids,
        "probe": _probe(),
        "market_keys": keys,
        "event_keys": EVENT_KEYS,
        "outcome_keys": OUTCOME_KEYS,
        "markets": markets,
    }
    payload = zlib.compress(json.dumps(document, separators=(",", ":"), allow_nan=False).encode(),
                            COMPRESSION_LEVEL)
    if len(payload) > MAX_COMPRESSED_BYTES:
        raise CompactError(f"{len(payload):,} bytes compressed, over the {MAX_COMPRESSED_BYTES:,} cap")
    return payload


def _inflate(payload: bytes) -> Any:
    if len(payload) > MAX_COMPRESSED_BYTES:
        raise CompactError("payload over the size cap")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, MAX_JSON_BYTES)
    except zlib.error:
        raise CompactError("not zlib data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise CompactError("truncated, or inflates past the size cap")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise CompactError("not JSON") from None


def decode(payload: bytes, state: dict[str, Any] | None, sorts: Mapping[str, str]) -> Snapshot:
    """The snapshot ``encode`` stored, with freshness from the current ``state``; raises
    CompactError for anything this code did not write."""
    document = _inflate(payload)
    if not isinstance(document, dict):
        raise CompactError("not a snapshot document")
    if document.get("format") != FORMAT or document.get("app") != __version__:
        raise CompactError("written by other code")
    try:
        keys = document["market_keys"]
        if document["event_keys"] != list(EVENT_KEYS) or document["outcome_keys"] != list(OUTCOME_KEYS):
            raise CompactError("written with other keys")
        version, skipped = document["version"], document["skipped"]
        last_change = datetime.fromisoformat(document["last_change"]) if document["last_change"] else None
        if not isinstance(version, str) or not isinstance(skipped, list) or not isinstance(keys, list):
            raise CompactError("not a snapshot document")
        if document["probe"] != _probe():
            raise CompactError("written by code that renders markets otherwise")
        items: list[Item] = []
        width = len(keys)
        for row in document["markets"]:
            if len(row) != width + 1:
                raise CompactError("a market of another shape")
            body = dict(zip(keys, row, strict=False))  # the extra last value is the end timestamp
            if body["event"] is not None:
                body["event"] = dict(zip(EVENT_KEYS, body["event"], strict=True))
            body["outcomes"] = [dict(zip(OUTCOME_KEYS, o, strict=True)) for o in body["outcomes"]]
            items.append(item_from_json(body, row[width], sorts))
    except CompactError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise CompactError(f"not a snapshot document ({type(error).__name__})") from None
    return Snapshot(items, skipped, version=version, last_change=last_change, state=state)
