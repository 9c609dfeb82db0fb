"""Query strings into typed models: the one place a query parameter is read.

Each endpoint declares a pydantic model (its fields, defaults, bounds and descriptions are the
parameter's whole definition: the OpenAPI document is generated from the same model), and
:func:`parse_query` turns ``req.params`` into it, or into a 400 ``bad_request`` naming the
parameter. Values are stripped; an empty value means "not given" (the default applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from shared.core.errors import BadRequest
from shared.core.query import Bool, ParameterError, Query, UInt

__all__ = ["Bool", "Query", "UInt", "parse_query"]

M = TypeVar("M", bound=Query)


def parse_query(model: type[M], params: Mapping[str, str]) -> M:
    given = {name: value.strip() for name, value in params.items() if isinstance(value, str) and value.strip()}
    try:
        return model.model_validate(given)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, ParameterError):  # a model validator's rule, naming its parameter
            raise BadRequest(f"parameter '{cause.parameter}' {cause.problem}", parameter=cause.parameter) from None
        used = str(first["loc"][0]) if first["loc"] else ""
        name = public_name(model, used) or used
        raise BadRequest(f"parameter '{name}' {_problem(model, used, first)}", parameter=name or None) from None


def public_name(model: type[Query], name: str) -> str | None:
    """The parameter a field is documented and reported as (its first alias: ``category`` is
    ``tag``'s second name, so an error in it names ``tag``)."""
    for field_name, info in model.model_fields.items():
        names = parameter_names(field_name, info)
        if name in names:
            return names[0]
    return None


def parameter_names(field_name: str, info: FieldInfo) -> list[str]:
    choices = getattr(info.validation_alias, "choices", None)
    if choices:
        return [c for c in choices if isinstance(c, str)]
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return [alias or field_name]


def _field(model: type[Query], name: str) -> FieldInfo | None:
    for field_name, info in model.model_fields.items():
        if name == field_name or name in parameter_names(field_name, info):
            return info
    return None


def _bound(info: FieldInfo, name: str) -> Any:
    """A bound of the field (``ge``, ``le``, ``max_length``), read from its constraint metadata."""
    for item in info.metadata:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def _problem(model: type[Query], name: str, error: Any) -> str:
    """What the client must send instead, from the field's own definition (written once)."""
    info = _field(model, name)
    if info is not None:
        low, high = _bound(info, "ge"), _bound(info, "le")
        if low is not None and high is not None and info.annotation in (int, int | None):
            return f"must be an integer from {low} to {high}"
        choices = _literal_choices(info.annotation)
        if choices:
            return f"must be one of {', '.join(choices)}"
        longest = _bound(info, "max_length")
        if longest is not None and error["type"] == "string_too_long":
            return f"must be at most {longest} characters"
    if error["type"] == "missing":
        what = (info.description or "").rstrip(".") if info is not None else ""
        return f"is required: {what[:1].lower()}{what[1:]}" if what else "is required"
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
