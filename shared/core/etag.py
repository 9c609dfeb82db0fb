"""Entity tags, written once: a response's ETag is the sha1 of the parts that make it what it is."""

from __future__ import annotations

import hashlib


def etag(*parts: object) -> str:
    """sha1 (hex) of the parts' ``str`` joined by ``|``: equal parts, equal tag."""
    return hashlib.sha1("|".join(str(part) for part in parts).encode()).hexdigest()
