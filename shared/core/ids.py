"""Polymarket's id formats, written once: every check, schema and SQL constraint derives from these.

- A **token id** (one outcome of a market) is a uint256 as decimal text: 1 to 78 digits.
- A **condition id** (a market) is ``0x`` and 64 lower-case hex characters.
"""

from __future__ import annotations

import re

from shared.core.errors import BadRequest

TOKEN_ID_PATTERN = "^[0-9]{1,78}$"
CONDITION_ID_PATTERN = "^0x[0-9a-f]{64}$"
TOKEN_ID_RE = re.compile(TOKEN_ID_PATTERN)
CONDITION_ID_RE = re.compile(CONDITION_ID_PATTERN)
TOKEN_ID_RULE = "1 to 78 decimal digits"
CONDITION_ID_RULE = "0x followed by 64 lower-case hex characters"


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and TOKEN_ID_RE.fullmatch(value) is not None


def is_condition_id(value: object) -> bool:
    return isinstance(value, str) and CONDITION_ID_RE.fullmatch(value) is not None


def validate_token_id(raw: str | None, parameter: str = "token_id") -> str:
    """A token id or BadRequest naming ``parameter``; nothing else is ever sent upstream."""
    value = raw or ""
    if not is_token_id(value):
        raise BadRequest(f"{parameter} must be {TOKEN_ID_RULE}", parameter=parameter)
    return value


def validate_condition_id(raw: str | None, parameter: str = "condition_id") -> str:
    value = (raw or "").strip()
    if not is_condition_id(value):
        raise BadRequest(f"{parameter} must be {CONDITION_ID_RULE}", parameter=parameter)
    return value
