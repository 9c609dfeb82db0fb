"""Untrusted text: market fields before a prompt, and the model's summary before it is stored
or served. Both come from outside (whoever created the market; a model that market text may
have steered), so both are made plain text here, by the same rules."""

from __future__ import annotations

import re
import unicodedata
from typing import Any


def clean(text: str) -> str:
    """Control, format, private-use and unassigned characters removed (NUL, lone surrogates,
    ESC, bidi overrides, zero-width characters); every whitespace run one space."""
    kept = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")
    return " ".join(kept.split())


def plain_text(value: Any, limit: int, *, marker: str = "") -> str | None:
    """``value`` as one line of plain text of at most ``limit`` characters (ending in ``marker``
    when cut), or None when it is not text or nothing is left."""
    if not isinstance(value, str):
        return None
    # Cleaning only shrinks text: a prefix this long fills the cap unless it is mostly junk,
    # and a megabyte of text is never scanned whole.
    head = value[: 2 * limit + 64]
    text = clean(head)
    if len(text) > limit or (len(value) > len(head) and text):
        text = text[: max(0, limit - len(marker))].rstrip() + marker
    return text or None


# What makes a summary not plain text. A false positive costs one analysis (the last one is
# served stale); a false negative puts markup or a link in front of every client.
_MARKUP: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("markup", re.compile(r"<\s*[/!?]?\s*[A-Za-z]|<!--|&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")),
    ("a link", re.compile(r"\]\(|\b[A-Za-z][A-Za-z0-9+.-]*://|\b(?:javascript|vbscript|data|file|mailto):(?!\s)"
                          r"|\bwww\.", re.IGNORECASE)),
    # A dotted name ending in a lower-case word: evil.example, bit.ly, polymarket.com.
    ("a web address", re.compile(r"\b[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.[a-z]{2,24}\b")),
)


def markup_in(text: str) -> str | None:
    """What in ``text`` is markup or a link ("markup", "a link", "a web address"), or None."""
    for what, pattern in _MARKUP:
        if pattern.search(text):
            return what
    return None
