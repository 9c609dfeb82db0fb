"""Polymarket's id formats, written once: every check, schema and SQL constraint derives from these.

- A **token id** (one outcome of a market) is a uint256 as decimal text: 1 to 78 digits.
- A **condition id** (a market) is ``0x`` and 64 lower-case hex characters.
- A **Gamma id** (a market or an event on Gamma) is 1 to 20 decimal digits.
- A **slug** (a market's or an event's name in polymarket.com links) is lower-case letters, digits,
  ``-``, ``_`` and ``.``, at most 300 characters, never starting with ``0x`` (a malformed
  condition id is not a slug) and never all digits (that is a Gamma id).
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
GAMMA_ID_PATTERN = "^[0-9]{1,20}$"
SLUG_PATTERN = "^(?!0x)(?![0-9]+$)[a-z0-9][a-z0-9._-]{0,299}$"
GAMMA_ID_RE = re.compile(GAMMA_ID_PATTERN)
SLUG_RE = re.compile(SLUG_PATTERN)
MARKET_REF_RULE = (f"a condition id ({CONDITION_ID_RULE}), a numeric Gamma id (1 to 20 digits) or a market slug "
                   "(lower-case letters, digits, '-', '_' and '.', at most 300 characters)")


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and TOKEN_ID_RE.fullmatch(value) is not None


def is_condition_id(value: object) -> bool:
    return isinstance(value, str) and CONDITION_ID_RE.fullmatch(value) is not None


def is_gamma_id(value: object) -> bool:
    return isinstance(value, str) and GAMMA_ID_RE.fullmatch(value) is not None


def is_slug(value: object) -> bool:
    return isinstance(value, str) and SLUG_RE.fullmatch(value) is not None


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


def validate_market_ref(raw: str | None, parameter: str = "market") -> str:
    """A market path id: a condition id, a Gamma id or a slug; anything starting with 0x must
    be a whole condition id (its check is not weakened by the wider rule)."""
    value = (raw or "").strip()
    if not (is_condition_id(value) or is_gamma_id(value) or is_slug(value)):
        raise BadRequest(f"{parameter} must be {MARKET_REF_RULE}", parameter=parameter)
    return value
