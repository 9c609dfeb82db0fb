"""Stored history points, their downsampling, and the packed chunk format.

A stored point is one period of one market's first outcome (the second outcome of a binary
market is its complement, derived on read): a ``Native`` tuple of integers, prices in ticks of
1/10,000 (``TICKS``), cumulative volume in cents, -1 for "unknown" (bid, ask, last trade or
volume; the price is always known). ``n`` counts the captures it stands for.

A chunk (one ``history_chunks`` row: one market, one period, ``SPAN_DAYS[period]`` days) is the
points as columns, each delta-coded, then zlib: unchanged or slowly moving prices become runs of
zeros, and the open/high/low columns of 5-minute points equal the close column, which the
compressor stores as a back-reference.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import NamedTuple

TICKS = 10_000  # a price of 1.0
UNKNOWN = -1
DAY_S = 86_400
PERIODS = (300, 3_600, 86_400)  # 5m, 1h, 1d: what is stored
# Days one chunk row covers, per period: about 100-300 points a row, so the row overhead and
# the index stay small next to the compressed points.
SPAN_DAYS = {300: 1, 3_600: 8, 86_400: 256}

_FORMAT = 1
_PRICE_COLUMNS = 7  # open, high, low, close, bid, ask, last
_BIG_ENDIAN = sys.byteorder == "big"


class Native(NamedTuple):
    ts: int  # epoch seconds, the period's start
    open: int
    high: int
    low: int
    close: int
    bid: int
    ask: int
    last: int
    volume: int  # cumulative, cents
    n: int  # captures summarised


def chunk_start_day(ts: int, period_s: int) -> int:
    """The first day (days since the epoch) of the chunk of ``period_s`` points holding ``ts``."""
    day = ts // DAY_S
    return day - day % SPAN_DAYS[period_s]


def chunk_end_s(start_day: int, period_s: int) -> int:
    return (start_day + SPAN_DAYS[period_s]) * DAY_S


def downsample(points: Iterable[Native], period_s: int, before: Native | None = None) -> list[Native]:
    """One point per ``period_s``: first open, highest high, lowest low, last close (and last
    bid, ask, trade and volume), captures summed. A period whose first point comes after its
    start opened at the close before it (nothing changed until then): that close is its open
    and counts for its high and low; ``before`` is the point before the first. Points are
    aligned to their own period's start; any order; the result is sorted."""
    buckets: dict[int, list[Native]] = {}
    for point in sorted(points, key=lambda p: p.ts):
        buckets.setdefault(point.ts - point.ts % period_s, []).append(point)
    out = []
    carry = None if before is None else before.close
    for ts, group in sorted(buckets.items()):
        first, last = group[0], group[-1]
        opened, high, low, captures = first.open, first.high, first.low, 0
        for p in group:
            high, low, captures = max(high, p.high), min(low, p.low), captures + p.n
        if carry is not None and first.ts > ts:
            opened, high, low = carry, max(high, carry), min(low, carry)
        out.append(Native(ts, opened, high, low, last.close, last.bid, last.ask, last.last, last.volume, captures))
        carry = last.close
    return out


def _deltas(values: Sequence[int], typecode: str) -> bytes:
    out = array(typecode, [values[0], *(b - a for a, b in zip(values, values[1:], strict=False))])
    if _BIG_ENDIAN:
        out.byteswap()
    return out.tobytes()


def _undeltas(data: bytes, typecode: str) -> list[int]:
    values = array(typecode)
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    return list(accumulate(values))


def encode(points: Sequence[Native], start_day: int) -> bytes:
    """``points`` (sorted, within the chunk starting on ``start_day``) as a chunk payload."""
    if not points:
        raise ValueError("an empty chunk")
    base = start_day * DAY_S
    columns = list(zip(*points, strict=True))
    body = b"".join([
        _deltas([t - base for t in columns[0]], "i"),
        *(_deltas(columns[i], "h") for i in range(1, 1 + _PRICE_COLUMNS)),
        _deltas(columns[8], "q"),
        _deltas(columns[9], "i"),
    ])
    return bytes([_FORMAT]) + len(points).to_bytes(4, "little") + zlib.compress(body, 9)


def decode(payload: bytes, start_day: int) -> list[Native]:
    """A chunk payload back to its points; ``ValueError`` for one that is not ours."""
    data = bytes(payload)
    if len(data) < 5 or data[0] != _FORMAT:
        raise ValueError("not a history chunk")
    count = int.from_bytes(data[1:5], "little")
    try:
        body = zlib.decompress(data[5:])
    except zlib.error as error:
        raise ValueError("a corrupt history chunk") from error
    sizes = [4] + [2] * _PRICE_COLUMNS + [8, 4]
    if len(body) != count * sum(sizes):
        raise ValueError("a history chunk of the wrong length")
    columns, at = [], 0
    for size, typecode in zip(sizes, ["i"] + ["h"] * _PRICE_COLUMNS + ["q", "i"], strict=True):
        columns.append(_undeltas(body[at:at + size * count], typecode))
        at += size * count
    base = start_day * DAY_S
    columns[0] = [t + base for t in columns[0]]
    return [Native(*row) for row in zip(*columns, strict=True)]
