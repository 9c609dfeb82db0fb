"""Number coercion, written once."""

from __future__ import annotations

from typing import SupportsFloat


def float_or_none(value: SupportsFloat | None) -> float | None:
    """``float(value)``, with None kept as None (a Decimal from the wire or a NUMERIC column)."""
    return None if value is None else float(value)
