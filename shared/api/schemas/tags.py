"""Body of /api/tags."""

from __future__ import annotations

from pydantic import Field

from shared.api.schemas.base import Answer, Body, Count
from shared.api.schemas.common import Freshness


class Tag(Body):
    slug: str = Field(description="Tag slug, lower case: the `tag` parameter of `/api/markets`.",
                      examples=["politics"])
    label: str = Field(description="The tag's name in Polymarket's casing.", examples=["Politics"])
    market_count: Count = Field(description="Active markets with this tag.")
    event_count: Count = Field(description="Distinct events of those markets.")


class TagList(Answer):
    tags: list[Tag] = Field(description="Most markets first, then by slug.")
    total: Count
    freshness: Freshness
