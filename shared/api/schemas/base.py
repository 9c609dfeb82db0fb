"""Building blocks shared by every response model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.core.ids import CONDITION_ID_PATTERN, CONDITION_ID_RULE, TOKEN_ID_PATTERN, TOKEN_ID_RULE
from shared.core.query import no_default

EXAMPLE_CONDITION_ID = "0x" + "5e" * 32
EXAMPLE_TOKEN_ID = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
EXAMPLE_TIME = "2026-11-25T13:05:00+00:00"


def optional(description: str | None = None, **constraints: Any) -> Any:
    """A property that may be absent (not ``null``): no default in the document."""
    return Field(None, description=description, json_schema_extra=no_default, **constraints)


class Body(BaseModel):
    """A closed JSON object: every property without a default is required, nothing else allowed."""

    model_config = ConfigDict(extra="forbid")


class Answer(Body):
    """A top-level body: demo mode labels every one."""

    simulated: Literal[True] = Field(
        True, description="Only in `make demo` mode: the data comes from the simulated Polymarket stand-in.",
        json_schema_extra=no_default)


Probability = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Time = Annotated[datetime, Field(examples=[EXAMPLE_TIME])]
ConditionId = Annotated[str, Field(
    pattern=CONDITION_ID_PATTERN, description=f"Market id: {CONDITION_ID_RULE}.", examples=[EXAMPLE_CONDITION_ID])]
TokenId = Annotated[str, Field(
    pattern=TOKEN_ID_PATTERN, description=f"Outcome token id: a uint256 as {TOKEN_ID_RULE} (never a condition id).",
    examples=[EXAMPLE_TOKEN_ID])]
