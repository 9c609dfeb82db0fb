"""Sorted, cursor-paged catalogues (markets, events), written once: the sort key that puts
missing values last in either order, the opaque cursor bound to its query, and how ``order``
defaults."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from shared.core.errors import BadRequest

SortKey = tuple[bool, float, str]  # (value missing, value signed for the order, id: a total order)


def sort_key(value: float | None, ident: str, descending: bool) -> SortKey:
    if value is None:
        return (True, 0.0, ident)  # missing values last in either order
    return (False, -value if descending else value, ident)


def slug(text: str) -> str:
    """A tag or category label as the slug a filter compares (``US Politics`` -> ``us-politics``)."""
    return "-".join(text.lower().split())


def normalise_order(data: Any) -> Any:
    """A query's raw parameters with ``order`` case-insensitive and, when absent, ``asc`` for
    ``sort=end_date`` (soonest first), else left to the model's default (``desc``)."""
    if not isinstance(data, dict):
        return data
    order = data.get("order")
    if isinstance(order, str):
        return {**data, "order": order.strip().lower()}
    if order is None and data.get("sort") == "end_date":
        return {**data, "order": "asc"}
    return data


def encode_cursor(fingerprint: str, key: SortKey) -> str:
    raw = json.dumps({"f": fingerprint, "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(fingerprint: str, cursor: str, parameters: str) -> SortKey:
    """The sort key a cursor of ``encode_cursor`` carries; a 400 naming ``cursor`` for anything
    else, or for a cursor of another query (``parameters``: the ones that make a query, for the
    message)."""
    invalid = BadRequest("parameter 'cursor' is not a cursor this API returned", parameter="cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        missing, value, ident = data["k"]
        made_for = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(missing, bool) or not isinstance(value, (int, float)) or not isinstance(ident, str):
        raise invalid
    try:
        number = float(value)
    except OverflowError:  # an integer no float holds (10**309): never one of ours
        raise invalid from None
    if made_for != fingerprint:
        raise BadRequest(f"parameter 'cursor' belongs to a different query ({parameters} changed)",
                         parameter="cursor")
    return (missing, number, ident)
