"""Route templates, and matching request paths to them.

The app's routes are literal segments and whole-segment ``{name}`` parameters
(``markets/{condition_id}/sentiment``), and that is all this host serves. What else Azure's
(ASP.NET Core) templates allow, and the app does not use, is refused when the template is read,
with a ``RouteError`` that names it, rather than served differently from Azure: constraints
(``{id:int}``), optional parameters (``{name?}``), defaults (``{name=x}``), catch-alls
(``{*rest}``) and several parts in one segment (``{name}.{ext}``).

Matching is Azure's for these: literal segments compare case-insensitively, one trailing slash
is ignored, a parameter takes one whole non-empty segment, and a literal beats a parameter in
the same place (``items/new`` before ``items/{name}``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a segment that is not served holds, for the error: the first that applies.
_UNSUPPORTED = (
    (re.compile(r"\{\*"), "a catch-all parameter"),
    (re.compile(r"\{[^{}]*:"), "a route constraint"),
    (re.compile(r"\{[^{}]*="), "a parameter default"),
    (re.compile(r"\{[^{}]*\?\}"), "an optional parameter"),
)


class RouteError(ValueError):
    """A route template this host does not serve."""


@dataclass(frozen=True)
class RouteSegment:
    text: str  # the literal text, or the parameter's name
    is_parameter: bool = False


def _segment(text: str, template: str) -> RouteSegment:
    if "{" not in text and "}" not in text:
        return RouteSegment(text)
    parameter = _PARAMETER.fullmatch(text)
    if parameter:
        return RouteSegment(parameter.group(1), is_parameter=True)
    what = next((kind for pattern, kind in _UNSUPPORTED if pattern.search(text)), None)
    found = f"{what}, {text}," if what else f"{text!r}, neither literal text nor one whole {{name}},"
    raise RouteError(
        f"route {template!r} has {found} which the local host does not serve: it serves literal "
        "segments and {name} parameters (a name of letters, digits and _) only, as the app's routes are"
    )


class RouteTemplate:
    """A route, prefix included, e.g. ``api/markets/{condition_id}``."""

    def __init__(self, template: str) -> None:
        self.text = template.strip("/")
        texts = self.text.split("/") if self.text else []
        if "" in texts:
            raise RouteError(f"route {template!r} has an empty segment")
        self.segments = tuple(_segment(text, template) for text in texts)
        names = [segment.text.lower() for segment in self.segments if segment.is_parameter]
        if len(names) != len(set(names)):
            raise RouteError(f"route {template!r} repeats a parameter name")
        # ASP.NET Core's inbound precedence: a literal segment sorts before a parameter.
        self.precedence = tuple(int(segment.is_parameter) for segment in self.segments)

    def __repr__(self) -> str:
        return f"RouteTemplate({self.text!r})"

    def match(self, path_segments: Sequence[str]) -> dict[str, str] | None:
        """Route values when the (decoded) path segments match, else None."""
        if len(path_segments) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for segment, text in zip(self.segments, path_segments, strict=True):
            if segment.is_parameter:
                if not text:
                    return None
                values[segment.text] = text
            elif text.casefold() != segment.text.casefold():
                return None
        return values


def split_path(path: str) -> list[str]:
    """Decoded request path to segments; one trailing slash is ignored, as ASP.NET Core does."""
    path = path.lstrip("/")
    path = path.removesuffix("/")
    return path.split("/") if path else []
