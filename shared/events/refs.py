"""An event reference in a path (a Gamma event id or a slug), checked once. Light (no pydantic):
the route table imports it at cold start."""

from __future__ import annotations

import re

from shared.core.errors import BadRequest

# Gamma event ids are decimal digits; slugs are lower-case letters, digits and hyphens. Anything
# else is never looked up, here or upstream.
EVENT_ID_RE = re.compile(r"^[0-9]{1,20}$")
EVENT_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,299}$")
EVENT_REF_PATTERN = "^([0-9]{1,20}|[A-Za-z0-9][A-Za-z0-9-]{0,299})$"  # case-insensitive: slugs are lower-cased
EVENT_REF_RULE = "a Gamma event id (1 to 20 digits) or an event slug (letters, digits and hyphens)"


def validate_event_ref(raw: str | None, parameter: str = "event") -> str:
    """An event id or slug, lower-cased, or BadRequest naming ``parameter``."""
    value = (raw or "").strip().lower()
    if not (EVENT_ID_RE.match(value) or EVENT_SLUG_RE.match(value)):
        raise BadRequest(f"{parameter} must be {EVENT_REF_RULE}", parameter=parameter)
    return value
