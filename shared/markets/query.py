"""What a client may ask of the market catalogue: the query of ``GET /api/markets``.

The fields are the parameters' whole definition (bounds, defaults, descriptions): the API layer
parses query strings into :class:`MarketQuery` and documents it from the same fields.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from shared.core.paging import normalise_order
from shared.core.query import Bool, Query, UInt, no_default, refresh_field

Sort = Literal["volume", "volume_24h", "liquidity", "end_date", "price_change", "closed_time",
               "change_1h", "change_24h", "change_7d", "abs_change_1h", "abs_change_24h", "abs_change_7d"]
SORTS: dict[Sort, str] = {  # sort key -> catalogue column (movers: shared.markets.trends)
    "volume": "volume",
    "volume_24h": "volume_24h",
    "liquidity": "liquidity",
    "end_date": "end_date",
    "price_change": "one_day_price_change",
    "closed_time": "closed_time",
}
Status = Literal["open", "closing_soon", "closed", "resolved"]
MAX_EVENT_CHARS = 300
DEFAULT_CLOSING_WITHIN_H = 24
MAX_CLOSING_WITHIN_H = 24 * 90
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_Q_CHARS = 200
MAX_TAG_CHARS = 100
MAX_CURSOR_CHARS = 512
MAX_MIN_VOLUME = 10**9


class MarketQuery(Query):
    # Declared in the order the parameters were always checked in (the first bad one is named).
    sort: Sort = Field("volume", description="Sort key; markets without a value come last. "
                                             "`closed_time` by default for `status=closed|resolved`, "
                                             "`end_date` for `status=closing_soon`. Movers: `change_1h`, "
                                             "`change_24h`, `change_7d` (the first outcome's price change over "
                                             "the window, from our captures; Gamma's one-day change where they "
                                             "do not reach back a day) and `abs_` forms (biggest moves either "
                                             "way); each market then carries `change`.")
    order: Literal["asc", "desc"] = Field(
        "desc", description="`desc` by default (`asc` for `end_date`, so the soonest first).",
        json_schema_extra=no_default)
    limit: UInt = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size.")
    q: str | None = Field(
        None, max_length=MAX_Q_CHARS,
        description="Text search: every word must appear in the question or slug (case-insensitive).")
    tag: str | None = Field(
        None, max_length=MAX_TAG_CHARS, validation_alias=AliasChoices("tag", "category"),
        description="Only markets with this tag or category (slug or label).",
        json_schema_extra={"x-alias-descriptions": {"category": "Same as `tag` (`tag` wins when both are given)."}})
    cursor: str | None = Field(
        None, max_length=MAX_CURSOR_CHARS,
        description="`next_cursor` of the previous page, with the same q, tag, event, status, sort, order, "
                    "active_only and min_volume_24h (400 otherwise).")
    active_only: Bool = Field(
        True, description="`false` also lists markets that left the active set in the last 30 days")
    event: str | None = Field(
        None, max_length=MAX_EVENT_CHARS, description="Only the markets of this event (Gamma event id or slug).")
    status: Status | None = Field(
        None, description="`open`; `closing_soon` (open, ending within `closing_within_h` hours); `closed` "
                          "(closed or left the open set, not settled) or `resolved` (settled, with a winner): "
                          "these two include markets outside the active set and sort most recently closed first.")
    closing_within_h: UInt = Field(
        DEFAULT_CLOSING_WITHIN_H, ge=1, le=MAX_CLOSING_WITHIN_H,
        description="The window of `status=closing_soon`, in hours.")
    min_volume_24h: UInt | None = Field(
        None, ge=0, le=MAX_MIN_VOLUME,
        description="Only markets that traded at least this much (USDC) in the last 24 hours (keeps illiquid "
                    "noise out of movers).")
    sparkline: Literal["24h", "7d"] | None = Field(
        None, description="Add each market's `sparkline`: its first outcome's price over the last 24 hours (a point "
                          "per 30 minutes) or 7 days (per 4 hours), from our captures (no upstream call).")

    @model_validator(mode="before")
    @classmethod
    def _order(cls, data: Any) -> Any:
        """``order`` is case-insensitive, and its default follows ``sort``, whose default follows
        ``status``."""
        if isinstance(data, dict) and data.get("sort") is None:
            if data.get("status") in ("closed", "resolved"):
                data = {**data, "sort": "closed_time"}  # most recently closed first
            elif data.get("status") == "closing_soon":
                data = {**data, "sort": "end_date"}  # soonest first
        return normalise_order(data)

    def fingerprint(self) -> str:
        parts: list[Any] = [self.active_only, self.q, self.tag, self.sort, self.order, self.event, self.status,
                            self.closing_within_h]
        if self.min_volume_24h is not None:  # only when given: the cursors of other queries stay valid
            parts.append(self.min_volume_24h)
        text = json.dumps(parts)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


class MarketListQuery(MarketQuery):
    """``GET /api/markets``: the catalogue query and whether to refresh it first."""

    refresh: Bool = refresh_field()
