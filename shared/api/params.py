"""Query strings into typed models: the one place a query parameter is read.

Each endpoint declares a pydantic model (its fields, defaults, bounds and descriptions are the
parameter's whole definition: the OpenAPI document is generated from the same model), and
:func:`parse_query` turns ``req.params`` into it, or into a 400 ``bad_request`` naming the
parameter. Values are stripped; an empty value means "not given" (the default applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args

from annotated_types import Ge, Le, MaxLen
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from shared.core.errors import BadRequest

M = TypeVar("M", bound="Query")

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
MAX_UINT_DIGITS = 9  # beyond this int() of client text is never needed


class Query(BaseModel):
    """Base of every query model: immutable, unknown parameters ignored (as the API always has)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


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
    # Not int(): that accepts "²"-free but odd forms ("+5", " 5", "5_000", 5,000 digits).
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


def parse_query(model: type[M], params: Mapping[str, str]) -> M:
    given = {name: value.strip() for name, value in params.items() if isinstance(value, str) and value.strip()}
    try:
        return model.model_validate(given)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise BadRequest(f"parameter '{name}' {_problem(model, name, first)}", parameter=name or None) from None


def _field(model: type[Query], name: str) -> FieldInfo | None:
    for field_name, info in model.model_fields.items():
        aliases = {field_name, info.alias}
        choices = getattr(info.validation_alias, "choices", None) or [info.validation_alias]
        aliases.update(c for c in choices if isinstance(c, str))
        if name in aliases:
            return info
    return None


def _bound(info: FieldInfo, kind: type) -> Any:
    for item in info.metadata:
        if isinstance(item, kind):
            return getattr(item, {Ge: "ge", Le: "le", MaxLen: "max_length"}[kind])
    return None


def _problem(model: type[Query], name: str, error: Any) -> str:
    """What the client must send instead, from the field's own definition (written once)."""
    info = _field(model, name)
    if info is not None:
        low, high = _bound(info, Ge), _bound(info, Le)
        if low is not None and high is not None and info.annotation in (int, int | None):
            return f"must be an integer from {low} to {high}"
        choices = _literal_choices(info.annotation)
        if choices:
            return f"must be one of {', '.join(choices)}"
        longest = _bound(info, MaxLen)
        if longest is not None and error["type"] == "string_too_long":
            return f"must be at most {longest} characters"
    message = str(error.get("msg", "is not valid"))
    return message.removeprefix("Value error, ") if error["type"] == "value_error" else message.lower()


def _literal_choices(annotation: Any) -> list[str]:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and all(isinstance(a, str) for a in args):
        return list(args)
    for arg in args:  # Optional[Literal[...]]
        inner = get_args(arg)
        if inner and all(isinstance(a, str) for a in inner):
            return list(inner)
    return []
