"""Bodies every feature shares: the error body and the freshness of a cached answer."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from shared.api.schemas.base import Answer, Body, NonNegative, Time, optional


class ErrorDetail(Body):
    # The enum of codes is set by the generator from the error classes (shared/core/errors.py).
    code: str = Field(description="Stable machine-readable class of the failure.")
    message: str = Field(description="What went wrong, for people; never a stack trace, DSN, key or upstream body.")
    parameter: str = optional("The query or path parameter that was wrong (400 only).")


class Error(Answer):
    """Every error: `{"error": {"code", "message"}}`."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "bad_request", "message": "parameter 'limit' must be an integer from 1 to 500",
                   "parameter": "limit"}}]})

    error: ErrorDetail


class Freshness(Body):
    """How fresh a cached answer is."""

    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"source": {"const": "stale"}}},
        "then": {"required": ["stale_reason"]},
        "else": {"not": {"required": ["stale_reason"]}},
        "examples": [{"source": "cache", "as_of": "2026-11-25T13:05:00+00:00", "age_seconds": 4.2}],
    })

    source: Literal["cache", "live", "stale"] = Field(
        description="`live`: fetched from Polymarket (or the model) for this request; `cache`: stored data within "
                    "its TTL (or being revalidated); `stale`: the last fetch failed and this is the last good data.")
    as_of: Time | None = Field(description="When the data was fetched or observed.")
    age_seconds: NonNegative = Field(description="Seconds since `as_of`, rounded to 0.1.")
    stale_reason: str = optional("What failed; present when (and only when) `source` is `stale`.")
