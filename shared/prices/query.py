"""What a client may ask of prices: history ranges, batches and book depths.

The fields are the parameters' whole definition: the API layer parses query strings into these
models and documents them from the same fields; the service takes the typed values.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from shared.core.query import Bool, ParameterError, Query, UInt, no_default, refresh_field

OutputFormat = Literal["json", "csv"]


def format_field() -> Any:
    """The ``format`` parameter of answers an analyst may want as a table."""
    return Field("json", description="`csv`: the points as `text/csv` (a header row, ISO 8601 UTC times), "
                                     "with the same caching as the JSON.")


Interval = Literal["1h", "6h", "1d", "1w", "1m", "max"]
INTERVALS: dict[str, int] = {
    "1h": 3600,
    "6h": 6 * 3600,
    "1d": 86_400,
    "1w": 7 * 86_400,
    "1m": 30 * 86_400,  # upstream's 1m is one month
    "max": 31 * 86_400,  # upstream keeps about 31 days; stored samples reach further (see window)
}
assert set(INTERVALS) == set(get_args(Interval))
DEFAULT_INTERVAL: Interval = "1d"
# Upstream 400s below these (§3.17); ``max`` covers more than ``1m``, so it gets 1m's floor too.
MIN_FIDELITY = {"1w": 5, "1m": 10, "max": 10}
MAX_FIDELITY = 1440  # one point a day

MAX_BATCH = 100
MAX_TOKEN_IDS_CHARS = MAX_BATCH * 80
MAX_DEPTH = 100
DEFAULT_DEPTH = 10


def _fidelity_floors() -> str:
    return ", ".join(f"{interval}: {floor}" for interval, floor in MIN_FIDELITY.items())


class HistoryQuery(Query):
    """A price-history range: ``interval`` and ``fidelity`` (minutes per point) within upstream's limits."""

    interval: Interval = Field(DEFAULT_INTERVAL,
                               description="History range (`1m` is a month; `max` is everything kept).")
    fidelity: UInt = Field(
        1, ge=1, le=MAX_FIDELITY,
        description=f"Minutes per history point; at least {_fidelity_floors()} (400 below), 1 otherwise. "
                    "Defaults to the interval's minimum.",
        json_schema_extra=no_default)  # the default depends on interval

    @model_validator(mode="before")
    @classmethod
    def _default_fidelity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("fidelity") is None and isinstance(data.get("interval"), str):
            return {**data, "fidelity": MIN_FIDELITY.get(data["interval"], 1)}
        return data

    @model_validator(mode="after")
    def _fidelity_floor(self) -> HistoryQuery:
        minimum = MIN_FIDELITY.get(self.interval, 1)
        if self.fidelity < minimum:
            raise ParameterError(
                "fidelity",
                f"must be an integer number of minutes from {minimum} to {MAX_FIDELITY} "
                f"(the minimum for interval {self.interval} is {minimum})",
            )
        return self

    @property
    def period_s(self) -> int:
        return self.fidelity * 60

    def window_s(self, retention_days: int) -> int:
        """How far back the answer reaches: ``max`` means everything we keep."""
        if self.interval == "max":
            return max(INTERVALS["max"], retention_days * 86_400)
        return INTERVALS[self.interval]


class PriceQuery(HistoryQuery):
    """``GET /api/price/{token_id}``."""

    history: Bool = Field(True, description="Include the price history")
    refresh: Bool = refresh_field()
    format: OutputFormat = format_field()

    @model_validator(mode="after")
    def _csv_needs_history(self) -> PriceQuery:
        if self.format == "csv" and not self.history:
            raise ParameterError("format", "csv is the price history: it needs history=true")
        return self

    def history_query(self) -> HistoryQuery | None:
        """The range alone (the service's cache key), or None without history."""
        return HistoryQuery(interval=self.interval, fidelity=self.fidelity) if self.history else None


def _token_ids(value: Any) -> Any:
    """``a,b,a`` -> ``("a", "b")``: split, stripped, deduplicated in order, capped. Each id is
    checked by the service, which answers an invalid one per item."""
    if not isinstance(value, str):
        return value
    if len(value) > MAX_TOKEN_IDS_CHARS:
        raise ValueError(f"lists more than {MAX_BATCH} ids")
    ids = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not ids:
        raise ValueError("is required: comma-separated token ids")
    if len(ids) > MAX_BATCH:
        raise ValueError(f"lists {len(ids)} ids; at most {MAX_BATCH}")
    return ids


TokenIds = Annotated[
    tuple[str, ...],
    BeforeValidator(_token_ids),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_IDS_CHARS}),
]


class QuotesQuery(Query):
    """``GET /api/prices``."""

    token_ids: TokenIds = Field(description=f"Comma-separated token ids, at most {MAX_BATCH} distinct.")


class BookQuery(Query):
    """``GET /api/book/{token_id}``."""

    depth: UInt = Field(DEFAULT_DEPTH, ge=1, le=MAX_DEPTH, description="Levels per side.")
