"""How deep JSON nests, found without parsing it.

Python's JSON parser recurses once per level, and a deep enough input crashes the process
(issue 11, break 1), so text from outside is measured before any parser sees it: Polymarket
bodies, the JSON arrays Gamma puts inside strings, the model's reply.
"""

from __future__ import annotations

import itertools
import re

# A JSON string, or the rest of the text after an unterminated one (the parser stops there):
# it always matches where it starts, so its cost stays linear whatever the text.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1, as signed bytes


def json_depth(data: bytes | str) -> int:
    """How deep the arrays and objects of JSON ``data`` nest, brackets inside strings aside: at
    least as deep as a parser would recurse on it."""
    body = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    steps = _JSON_STRING.sub(b"", body).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0)


def deeper_than(data: bytes | str, limit: int) -> bool:
    """Whether ``data`` nests deeper than ``limit`` (no scan when it has too few brackets)."""
    brackets = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if brackets <= limit:
        return False
    return json_depth(data) > limit
