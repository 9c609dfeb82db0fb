"""The base of every query model, and the field types a query string needs.

Features declare their query models on :class:`Query` (``shared/markets/query.py`` ...); the API
layer parses ``req.params`` into them (``shared.api.params.parse_query``) and generates the
OpenAPI parameters from the same fields, so a parameter's rule is written once, beside the
feature, without the feature importing the API layer.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
MAX_UINT_DIGITS = 9  # beyond this int() of client text is never needed


class Query(BaseModel):
    """Base of every query model: immutable, unknown parameters ignored (as the API always has)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ParameterError(ValueError):
    """A cross-field rule's failure that still names one parameter (a model validator has no
    field location of its own); ``problem`` follows "parameter '<name>' "."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(problem)
        self.parameter = parameter
        self.problem = problem


def _bool(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise ValueError("must be true or false")
    return value


def _uint(value: Any) -> Any:
    # Not int(): that accepts odd forms ("+5", " 5", "5_000", "²" via isdigit, 5,000 digits).
    if isinstance(value, str):
        text = value.strip()
        if not (0 < len(text) <= MAX_UINT_DIGITS and text.isascii() and text.isdigit()):
            raise ValueError("must be a whole number")
        return int(text)
    return value


Bool = Annotated[bool, BeforeValidator(_bool)]
"""true/1/yes or false/0/no, any case."""
UInt = Annotated[int, BeforeValidator(_uint)]
"""1 to 9 ASCII digits; bounds come from the field (``Field(ge=..., le=...)``)."""


def no_default(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` for a field whose default is not a fixed value (it follows another)."""
    schema.pop("default", None)


REFRESH_DESCRIPTION = "Fetch from the source now instead of the cache, when allowed (throttled; otherwise ignored)"


def refresh_field() -> Any:
    """The ``refresh`` parameter, the same wherever a cached answer can be refreshed."""
    return Field(False, description=REFRESH_DESCRIPTION)
