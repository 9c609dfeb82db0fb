"""Query models of the operations that belong to no feature."""

from __future__ import annotations

from pydantic import Field

from shared.core.query import Bool, Query


class HealthQuery(Query):
    deep: Bool = Field(False, description="Check every dependency")
