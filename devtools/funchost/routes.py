"""Route templates, as Azure (ASP.NET Core) reads them, and matching request paths to them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime


class RouteError(ValueError):
    """A route template that Azure would reject."""


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ALPHA_RE = re.compile(r"[A-Za-z]+")
Check = Callable[[str], bool]


def _integer_in(low: int, high: int) -> Check:
    return lambda value: bool(_INT_RE.fullmatch(value)) and low <= int(value) <= high


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _compile_constraint(name: str, args: tuple[str, ...]) -> Check | None:
    """ASP.NET Core route constraints, as Azure uses them; None for ones not checked here."""
    numbers: list[int] = []
    if name in ("min", "max", "range", "length", "minlength", "maxlength"):
        try:
            numbers = [int(arg) for arg in args]
        except ValueError:
            raise RouteError(f"constraint {name}({', '.join(args)}) needs integer arguments") from None
    elif args and name != "regex":
        return None  # e.g. a custom constraint with arguments: not ours to judge
    match name, numbers:
        case "int", []:
            return _integer_in(*_INT32)
        case "long", []:
            return _integer_in(*_INT64)
        case "bool", []:
            return lambda value: value.lower() in ("true", "false")
        case "alpha", []:
            return lambda value: bool(_ALPHA_RE.fullmatch(value))
        case "guid", []:
            return _is_guid
        case ("decimal" | "double" | "float"), []:
            return lambda value: bool(_FLOAT_RE.fullmatch(value))
        case "datetime", []:
            return _is_datetime
        case "min", [low]:
            return _integer_in(low, _INT64[1])
        case "max", [high]:
            return _integer_in(_INT64[0], high)
        case "range", [low, high]:
            return _integer_in(low, high)
        case "length", [exact]:
            return lambda value: len(value) == exact
        case "length", [low, high]:
            return lambda value: low <= len(value) <= high
        case "minlength", [low]:
            return lambda value: len(value) >= low
        case "maxlength", [high]:
            return lambda value: len(value) <= high
        case "required", []:
            return lambda value: value != ""
        case "regex", _:
            # Braces are doubled in templates; Azure matches case-insensitively, unanchored.
            pattern = re.compile(args[0].replace("{{", "{").replace("}}", "}"), re.IGNORECASE)
            return lambda value: pattern.search(value) is not None
    return None


@dataclass(frozen=True)
class RouteParameter:
    name: str
    constraints: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    optional: bool = False
    default: str | None = None
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


def _parse_parameter(body: str, template: str) -> tuple[RouteParameter, list[str]]:
    """Parse ``*name:c1:c2(arg)?`` / ``name=default``; returns the parameter and unknown constraints."""
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    name_match = re.match(r"[^:=?]+", body)
    if not name_match:
        raise RouteError(f"route {template!r}: a parameter has no name")
    name, rest = name_match.group(0).strip(), body[name_match.end():]
    constraints: list[str] = []
    checks: list[Check] = []
    unknown: list[str] = []
    while rest.startswith(":"):
        constraint = re.match(r":([A-Za-z_]\w*)", rest)
        if not constraint:
            raise RouteError(f"route {template!r}: bad constraint in {{{body}}}")
        kind, rest = constraint.group(1).lower(), rest[constraint.end():]
        args: tuple[str, ...] = ()
        if rest.startswith("("):
            depth = 0
            for end, char in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
            else:
                raise RouteError(f"route {template!r}: unbalanced parentheses in {{{body}}}")
            inner, rest = rest[1:end], rest[end + 1:]
            args = (inner,) if kind == "regex" else tuple(arg.strip() for arg in inner.split(","))
        check = _compile_constraint(kind, args)
        constraints.append(kind)
        if check is None:
            unknown.append(kind)
        else:
            checks.append(check)
    optional, default = False, None
    if rest.startswith("="):
        default, rest = rest[1:], ""
    elif rest == "?":
        optional, rest = True, ""
    if rest:
        raise RouteError(f"route {template!r}: cannot parse {{{body}}}")
    parameter = RouteParameter(name, tuple(constraints), tuple(checks), optional, default, catch_all)
    return parameter, unknown


Part = str | RouteParameter


def _tokenize(template: str) -> tuple[list[list[Part]], list[str]]:
    """Split a template into segments of literal text and parameters (``{{``/``}}`` escape braces)."""
    segments: list[list[Part]] = [[]]
    literal: list[str] = []
    unknown: list[str] = []

    def flush() -> None:
        if literal:
            segments[-1].append("".join(literal))
            literal.clear()

    i = 0
    while i < len(template):
        char = template[i]
        if template.startswith("{{", i) or template.startswith("}}", i):
            literal.append(char)
            i += 2
        elif char == "{":
            depth, end = 0, i + 1
            while end < len(template) and not (template[end] == "}" and depth == 0):
                depth += {"(": 1, ")": -1}.get(template[end], 0)
                end += 1
            if end >= len(template):
                raise RouteError(f"route {template!r}: unclosed '{{'")
            flush()
            parameter, bad = _parse_parameter(template[i + 1:end], template)
            segments[-1].append(parameter)
            unknown.extend(bad)
            i = end + 1
        elif char == "}":
            raise RouteError(f"route {template!r}: unmatched '}}'")
        elif char == "/":
            flush()
            segments.append([])
            i += 1
        else:
            literal.append(char)
            i += 1
    flush()
    return segments, unknown


@dataclass(frozen=True)
class RouteSegment:
    parts: tuple[Part, ...]
    pattern: re.Pattern[str] | None = None  # only for complex segments such as "{name}.{ext}"

    @property
    def literal(self) -> str | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], str) else None

    @property
    def parameter(self) -> RouteParameter | None:
        only = self.parts[0] if len(self.parts) == 1 else None
        return only if isinstance(only, RouteParameter) else None

    @property
    def precedence(self) -> int:
        # ASP.NET Core inbound precedence: literal, complex, constrained, plain, catch-all.
        if self.literal is not None:
            return 1
        parameter = self.parameter
        if parameter is None:
            return 2
        if parameter.catch_all:
            return 5
        return 3 if parameter.constraints else 4


def _segment(parts: list[Part]) -> RouteSegment:
    if len(parts) <= 1:
        return RouteSegment(tuple(parts))
    regex: list[str] = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            regex.append(re.escape(part))
        else:
            if part.catch_all:
                raise RouteError("a catch-all parameter must be a whole segment")
            regex.append(f"(?P<p{index}>.+?)" + ("?" if part.optional else ""))
    return RouteSegment(tuple(parts), re.compile("".join(regex), re.IGNORECASE | re.DOTALL))


class RouteTemplate:
    """An Azure (ASP.NET Core) route template, prefix included, e.g. ``api/items/{id:int}``."""

    def __init__(self, template: str) -> None:
        self.text = template.strip("/")
        raw_segments, self.unknown_constraints = _tokenize(self.text) if self.text else ([], [])
        if any(not parts for parts in raw_segments):
            raise RouteError(f"route {template!r} has an empty segment")
        self.segments = tuple(_segment(parts) for parts in raw_segments)
        names = [p.name.lower() for s in self.segments for p in s.parts if isinstance(p, RouteParameter)]
        if len(names) != len(set(names)):
            raise RouteError(f"route {template!r} repeats a parameter name")
        for segment in self.segments[:-1]:
            if segment.parameter and segment.parameter.catch_all:
                raise RouteError(f"route {template!r}: a catch-all parameter must come last")
        self.precedence = tuple(segment.precedence for segment in self.segments)

    def __repr__(self) -> str:
        return f"RouteTemplate({self.text!r})"

    def match(self, path_segments: Sequence[str]) -> dict[str, str] | None:
        """Route values when the (decoded) path segments match, else None."""
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            parameter = segment.parameter
            if parameter is not None and parameter.catch_all:
                rest = "/".join(path_segments[index:])
                if rest:
                    if not parameter.accepts(rest):
                        return None
                    values[parameter.name] = rest
                elif parameter.default is not None:
                    values[parameter.name] = parameter.default
                return values
            if index >= len(path_segments):
                if parameter is not None and (parameter.optional or parameter.default is not None):
                    if parameter.default is not None:
                        values[parameter.name] = parameter.default
                    continue
                return None
            text = path_segments[index]
            if segment.literal is not None:
                if text.casefold() != segment.literal.casefold():
                    return None
            elif parameter is not None:
                if not text or not parameter.accepts(text):
                    return None
                values[parameter.name] = text
            elif not self._match_complex(segment, text, values):
                return None
        return values if len(path_segments) <= len(self.segments) else None

    @staticmethod
    def _match_complex(segment: RouteSegment, text: str, values: dict[str, str]) -> bool:
        assert segment.pattern is not None
        found = segment.pattern.fullmatch(text)
        if not found:
            return False
        for index, part in enumerate(segment.parts):
            if isinstance(part, RouteParameter):
                value = found.group(f"p{index}")
                if value is None:
                    continue
                if not part.accepts(value):
                    return False
                values[part.name] = value
        return True


def split_path(path: str) -> list[str]:
    """Decoded request path to segments; one trailing slash is ignored, as ASP.NET Core does."""
    path = path.lstrip("/")
    path = path.removesuffix("/")
    return path.split("/") if path else []
