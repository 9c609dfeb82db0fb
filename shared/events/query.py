"""What a client may ask of the events catalogue: the query of ``GET /api/events``."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.core.paging import normalise_order
from shared.core.query import Bool, Query, UInt, no_default, refresh_field

Sort = Literal["volume", "volume_24h", "liquidity", "end_date", "competitive"]
SORTS: tuple[Sort, ...] = ("volume", "volume_24h", "liquidity", "end_date", "competitive")
MAX_LIMIT = 200
DEFAULT_LIMIT = 20
MAX_Q_CHARS = 200
MAX_TAG_CHARS = 100
MAX_CURSOR_CHARS = 512

class EventQuery(Query):
    sort: Sort = Field("volume", description="Sort key; events without a value come last.")
    order: Literal["asc", "desc"] = Field(
        "desc", description="`desc` by default (`asc` for `end_date`).", json_schema_extra=no_default)
    limit: UInt = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size.")
    q: str | None = Field(
        None, max_length=MAX_Q_CHARS,
        description="Text search: every word must appear in the event's title or slug (case-insensitive).")
    tag: str | None = Field(None, max_length=MAX_TAG_CHARS, description="Only events with this tag (slug or label).")
    sparkline: Literal["24h", "7d"] | None = Field(
        None, description="Add to each listed market its `sparkline`, as `/api/markets?sparkline=` does (from our "
                          "captures, no upstream call).")
    cursor: str | None = Field(
        None, max_length=MAX_CURSOR_CHARS,
        description="`next_cursor` of the previous page, with the same q, tag, sort, order and active_only "
                    "(400 otherwise).")
    active_only: Bool = Field(
        True, description="`false` also lists events whose markets all left the active set in the last 30 days")

    @model_validator(mode="before")
    @classmethod
    def _order(cls, data: Any) -> Any:
        """``order`` is case-insensitive, and its default follows ``sort``."""
        return normalise_order(data)

    def fingerprint(self) -> str:
        text = json.dumps(["events", self.active_only, self.q, self.tag, self.sort, self.order])
        # The sparkline window does not change which events a page holds: cursors stay valid across it.
        return hashlib.sha1(text.encode()).hexdigest()[:12]


class EventListQuery(EventQuery):
    """``GET /api/events``: the catalogue query and whether to refresh the markets first."""

    refresh: Bool = refresh_field()
