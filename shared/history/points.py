"""Stored history points, their downsampling, and the packed chunk format.

A stored point is one period of one market's first outcome (the second outcome of a binary
market is its complement, derived on read): a ``Native`` tuple of integers, prices in ticks of
1/10,000 (``TICKS``), cumulative volume in whole USDC, -1 for "unknown" (bid, ask, last trade or
volume; the price is always known). ``n`` counts the captures it stands for.

A chunk (one ``history_chunks`` row: one market, one period, ``SPAN_DAYS[period]`` days) is the
points as columns of small differences (``_COLUMNS``), each byte-shuffled, then zlib: a slowly
moving price is mostly zero bytes, and the open, high and low of a 5-minute point (its close)
cost nothing.
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
    volume: int  # cumulative, whole USDC
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


# Columns: (type code, width). Times, closes and volumes as differences from the point before;
# open, high and low from the point's own close (small, mostly 0); bid, ask and last trade from
# it too (nearly constant), ``_NONE`` standing for unknown.
_COLUMNS = (("i", 4), ("h", 2), ("h", 2), ("h", 2), ("h", 2), ("h", 2), ("h", 2), ("h", 2), ("q", 8), ("h", 2))
_ROW_BYTES = sum(width for _, width in _COLUMNS)
_NONE = 32_767  # never a difference of two prices in [0, 10,000]
_MAX_N = 32_767


def _pack(values: Sequence[int], typecode: str, width: int) -> bytes:
    """Little-endian, then byte-shuffled (every value's first byte, then every second...): the
    high bytes of small numbers are runs of 0x00 or 0xff, which zlib takes almost for free."""
    column = array(typecode, values)
    if _BIG_ENDIAN:
        column.byteswap()
    data = column.tobytes()
    return b"".join(data[k::width] for k in range(width))


def _unpack(data: bytes, typecode: str, width: int) -> list[int]:
    count = len(data) // width
    interleaved = bytearray(len(data))
    for k in range(width):
        interleaved[k::width] = data[k * count:(k + 1) * count]
    column = array(typecode)
    column.frombytes(bytes(interleaved))
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tolist()


def _delta(values: Sequence[int]) -> list[int]:
    return [values[0], *(b - a for a, b in zip(values, values[1:], strict=False))]


def _relative(values: Sequence[int], closes: Sequence[int]) -> list[int]:
    return [_NONE if v == UNKNOWN else v - c for v, c in zip(values, closes, strict=True)]


def _absolute(values: Sequence[int], closes: Sequence[int]) -> list[int]:
    return [UNKNOWN if v == _NONE else v + c for v, c in zip(values, closes, strict=True)]


def encode(points: Sequence[Native], start_day: int) -> bytes:
    """``points`` (sorted, within the chunk starting on ``start_day``) as a chunk payload."""
    if not points:
        raise ValueError("an empty chunk")
    base = start_day * DAY_S
    ts, opens, highs, lows, closes, bids, asks, lasts, volumes, ns = (list(c) for c in zip(*points, strict=True))
    columns = [
        _delta([t - base for t in ts]), _delta(closes),
        [o - c for o, c in zip(opens, closes, strict=True)], [h - c for h, c in zip(highs, closes, strict=True)],
        [c - low for low, c in zip(lows, closes, strict=True)],
        _relative(bids, closes), _relative(asks, closes), _relative(lasts, closes),
        _delta(volumes), [min(n, _MAX_N) for n in ns],
    ]
    body = b"".join(_pack(values, code, width) for values, (code, width) in zip(columns, _COLUMNS, strict=True))
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
    if len(body) != count * _ROW_BYTES:
        raise ValueError("a history chunk of the wrong length")
    columns, at = [], 0
    for code, width in _COLUMNS:
        columns.append(_unpack(body[at:at + width * count], code, width))
        at += width * count
    base = start_day * DAY_S
    ts = [t + base for t in accumulate(columns[0])]
    closes = list(accumulate(columns[1]))
    opens = [o + c for o, c in zip(columns[2], closes, strict=True)]
    highs = [h + c for h, c in zip(columns[3], closes, strict=True)]
    lows = [c - low for low, c in zip(columns[4], closes, strict=True)]
    bids, asks, lasts = (_absolute(columns[k], closes) for k in (5, 6, 7))
    return list(map(Native, ts, opens, highs, lows, closes, bids, asks, lasts, accumulate(columns[8]), columns[9]))
