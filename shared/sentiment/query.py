"""What a client may ask of a market's sentiment: the query of ``GET /api/markets/{id}/sentiment``."""

from __future__ import annotations

from pydantic import Field

from shared.core.query import Bool, Query, refresh_field

HISTORY_LIMIT = 50


class SentimentQuery(Query):
    history: Bool = Field(False, description=f"Add the newest {HISTORY_LIMIT} analyses")
    refresh: Bool = refresh_field()
