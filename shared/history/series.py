"""Reading the captured history: one series per token, one point per period.

``series`` answers, per token, a point per period from ``start`` to ``end``: the period's
open, high, low and close (``price``) of the display price, the last bid, ask, trade and
cumulative volume, and how many captures it summarises. Where nothing changed the last value
is carried forward (``captures`` 0): a refresh stores only what changed. A period is never
finer than what is stored for it (5 minutes for the last week, hourly to the retention, daily
beyond: ``shared.history.downsample``), so a 5-minute read of last month answers hourly points
there. Points stop at the newest capture (nothing is known after it), at a resolved market's
settled point, and when a market left the open set (its closing time, or when the refresh
stopped seeing it).

The second outcome of a binary market is the first's complement: its bid is 1 - the first's
ask, its high 1 - the first's low.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from shared.db.database import Cursor
from shared.history.points import DAY_S, SPAN_DAYS, TICKS, UNKNOWN, Native, decode

RESOLUTIONS = {"5m": 300, "1h": 3_600, "1d": 86_400}
MAX_PERIODS = 20_000  # per token and read: the caller bounds its ranges well below this
_OPENING_CHUNKS = 3  # chunks read back per series to find the value a range opens with


class Point(NamedTuple):
    ts: datetime  # the period's start, UTC
    period_s: int
    price: float  # the display price at the period's end (its close)
    open: float
    high: float
    low: float
    bid: float | None
    ask: float | None
    last: float | None  # last trade price
    volume: float | None  # the market's cumulative volume (USDC): per market, not per outcome
    captures: int  # captures in the period; 0: the previous value carried forward


@dataclass(frozen=True)
class _Series:
    series_id: int
    outcome: int  # 0, or 1 for the complement
    ends_at: int | None  # epoch seconds: settled, or left the open set (nothing is known after)


def series(cur: Cursor, token_ids: Sequence[str], start: datetime, end: datetime,
           resolution: str = "5m") -> dict[str, list[Point]]:
    """Per token (those with a captured series; others are absent), its points in [start, end)
    at ``resolution`` ("5m", "1h", "1d") or coarser where only coarser is stored."""
    step = RESOLUTIONS[resolution]
    lo, hi = _epoch(start), _epoch(end)
    if hi <= lo:
        return {}
    if (hi - lo) // step > MAX_PERIODS:
        raise ValueError(f"more than {MAX_PERIODS} periods of {resolution}")
    found = _find(cur, token_ids)
    if not found:
        return {}
    ids = sorted({s.series_id for s in found.values()})
    horizon = _last_capture(cur)
    # From the day's start: a coarser point that began before ``lo`` may still cover it.
    day_start = lo - lo % DAY_S
    stored = _natives_between(cur, ids, day_start, hi)
    opening = latest_natives(cur, dict.fromkeys(ids, day_start - 1))
    out: dict[str, list[Point]] = {}
    by_series: dict[int, list[Run]] = {}
    times: dict[int, datetime] = {}
    for token, info in found.items():
        if info.series_id not in by_series:
            stop = hi if horizon is None else min(hi, horizon + 1)
            if info.ends_at is not None:
                stop = min(stop, info.ends_at + 1)
            by_series[info.series_id] = _periods(stored.get(info.series_id, []), opening.get(info.series_id),
                                                 lo, stop, step)
        out[token] = _expand(by_series[info.series_id], info.outcome == 1, times)
    return out


def latest_before(cur: Cursor, token_ids: Sequence[str], ts: datetime) -> dict[str, Point | None]:
    """Per token, the newest stored point whose period began at or before ``ts`` (None: the
    series begins later); tokens without a captured series are absent."""
    found = _find(cur, token_ids)
    if not found:
        return {}
    latest = latest_natives(cur, dict.fromkeys(sorted({s.series_id for s in found.values()}), _epoch(ts)))
    out: dict[str, Point | None] = {}
    for token, info in found.items():
        hit = latest.get(info.series_id)
        if hit is None:
            out[token] = None
        else:
            period, native = hit
            out[token] = _point(_complement(native) if info.outcome == 1 else native, period)
    return out


# --- reading -----------------------------------------------------------------------------


def _epoch(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("a time without a time zone")
    return int(when.timestamp())


def _find(cur: Cursor, token_ids: Sequence[str]) -> dict[str, _Series]:
    tokens = list(dict.fromkeys(token_ids))
    cur.execute(
        """
        SELECT s.series_id, s.token_0, s.token_1, extract(epoch FROM COALESCE(s.settled_at, CASE
                   WHEN NOT m.in_active_set THEN GREATEST(s.last_at, LEAST(m.closed_time, m.updated_at)) END))::bigint
                   AS ends_at
          FROM history_series s LEFT JOIN markets m USING (condition_id)
         WHERE s.token_0 = ANY(%(t)s) OR s.token_1 = ANY(%(t)s)
         ORDER BY s.last_at DESC NULLS LAST
        """,
        {"t": tokens},
    )
    wanted, found = set(tokens), {}
    for row in cur.fetchall():  # a token that passed between markets: the newest series wins
        for outcome, token in enumerate((row["token_0"], row["token_1"])):
            if token in wanted and token not in found:
                ends = row["ends_at"]
                found[token] = _Series(row["series_id"], outcome, None if ends is None else int(ends))
    return {t: found[t] for t in tokens if t in found}


def _last_capture(cur: Cursor) -> int | None:
    cur.execute("SELECT extract(epoch FROM last_capture_at)::bigint AS at FROM history_state WHERE id = 1")
    row = cur.fetchone()
    return None if row is None else int(row["at"])


Tagged = tuple[int, Native]  # (the period it was stored at, the point)


def _natives_between(cur: Cursor, ids: list[int], lo: int, hi: int) -> dict[int, list[Tagged]]:
    """Stored points of ``ids`` whose period starts in [lo, hi): chunks and raw captures."""
    out: dict[int, list[Tagged]] = {}
    cur.execute(
        """
        SELECT series_id, period_s, start_day, points FROM history_chunks
         WHERE series_id = ANY(%(ids)s) AND start_day <= %(hi_day)s
           AND start_day > %(lo_day)s - CASE period_s WHEN 300 THEN %(s5)s WHEN 3600 THEN %(s1h)s ELSE %(s1d)s END
        """,
        {"ids": ids, "hi_day": hi // DAY_S, "lo_day": lo // DAY_S,
         "s5": SPAN_DAYS[300], "s1h": SPAN_DAYS[3_600], "s1d": SPAN_DAYS[86_400]},
    )
    for row in cur.fetchall():
        for point in _decoded(row):
            if lo <= point.ts < hi:
                out.setdefault(row["series_id"], []).append((row["period_s"], point))
    cur.execute(
        """
        SELECT series_id, extract(epoch FROM ts)::bigint AS ts, price, bid, ask, last, volume FROM history_raw
         WHERE series_id = ANY(%s) AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)
        """,
        (ids, lo, hi),
    )
    for row in cur.fetchall():
        out.setdefault(row["series_id"], []).append((300, _raw_native(row)))
    return out


def latest_natives(cur: Cursor, at: Mapping[int, int]) -> dict[int, Tagged]:
    """Per series id, the newest stored point (with its stored period) whose period starts at
    or before the epoch seconds ``at`` gives it."""
    best: dict[int, Tagged] = {}
    ids = list(at)
    if not ids:
        return best

    def offer(series_id: int, tagged: Tagged) -> None:
        if tagged[1].ts <= at[series_id] and (series_id not in best or tagged[1].ts >= best[series_id][1].ts):
            best[series_id] = tagged

    # The newest chunk begun by then nearly always holds the point; a few more when it does not.
    missing = ids
    for offset, limit in ((0, 1), (1, _OPENING_CHUNKS)):
        cur.execute(
            """
            SELECT c.series_id, c.period_s, c.start_day, c.points
              FROM unnest(%s::int[], %s::int[]) AS k (series_id, day)
            CROSS JOIN LATERAL (
                SELECT series_id, period_s, start_day, points FROM history_chunks
                 WHERE series_id = k.series_id AND start_day <= k.day ORDER BY start_day DESC OFFSET %s LIMIT %s
            ) c
            """,
            (missing, [at[i] // DAY_S for i in missing], offset, limit),
        )
        for row in cur.fetchall():
            for point in _decoded(row):
                offer(row["series_id"], (row["period_s"], point))
        missing = [i for i in missing if i not in best]
        if not missing:
            break
    cur.execute(
        """
        SELECT r.* FROM unnest(%s::int[], %s::bigint[]) AS k (series_id, at)
        CROSS JOIN LATERAL (
            SELECT series_id, extract(epoch FROM ts)::bigint AS ts, price, bid, ask, last, volume FROM history_raw
             WHERE series_id = k.series_id AND ts < to_timestamp(k.at + 1) ORDER BY ts DESC LIMIT 1
        ) r
        """,
        (ids, [at[i] for i in ids]),
    )
    for row in cur.fetchall():
        offer(row["series_id"], (300, _raw_native(row)))
    return best


def _decoded(row: dict[str, object]) -> list[Native]:
    try:
        return decode(row["points"], int(row["start_day"]))  # type: ignore[arg-type, call-overload]
    except ValueError:
        return []  # an unreadable chunk is a gap, not a failed read


def _raw_native(row: dict[str, object]) -> Native:
    ts, p = int(row["ts"]), int(row["price"])  # type: ignore[call-overload]
    native = Native(ts, p, p, p, p, row["bid"], row["ask"], row["last"], int(row["volume"]), 1)  # type: ignore[arg-type, call-overload]
    return native._replace(ts=ts - ts % 300)


# --- shaping -----------------------------------------------------------------------------


Run = tuple[int, Native, int]  # (period, the point of the first period, how many periods it holds)


def _periods(stored: list[Tagged], opening: Tagged | None, lo: int, stop: int, step: int) -> list[Run]:
    """The periods overlapping [lo, stop) as runs: a stored point (or the points of one
    period, grouped: never finer than they were stored) holds one period; the gap after it is
    one run of its close carried forward (``opening``: the point before all)."""
    buckets: list[tuple[int, int, list[Native]]] = []  # (start, length, points)
    tagged = sorted(stored, key=lambda t: t[1].ts)
    end = -1  # where the last bucket ends
    for period, point in [opening, *tagged] if opening is not None else tagged:
        size = step if step >= period else period
        start = point.ts - point.ts % size
        if start < end:  # inside (or coarser than) the last bucket
            begin, span, group = buckets[-1]
            group.append(point)
            if start + size > end:
                end = start + size
                buckets[-1] = (begin, end - begin, group)
        else:
            buckets.append((start, size, [point]))
            end = start + size
    out: list[Run] = []
    previous: Native | None = None
    held, held_end = 0, 0  # the previous bucket's length and end
    for begin, span, group in buckets:
        if begin >= stop:
            break
        if previous is not None and held_end < begin:
            # At the finer of the two periods: a gap where the stored tier changes is carried
            # in periods both boundaries fall on (each stored period divides the next).
            _carry(out, previous, held_end, min(begin, stop), min(held, span), lo)
        merged = _one(group, begin, span, previous)
        if begin + span > lo:
            out.append((span, merged, 1))
        previous, held, held_end = merged, span, begin + span
    if previous is not None:
        _carry(out, previous, held_end, stop, held, lo)
    return out


def _one(group: list[Native], begin: int, span: int, before: Native | None) -> Native:
    """The points of one period (in time order) as one: ``downsample``'s rule, whatever their
    stored periods."""
    first, last = group[0], group[-1]
    if len(group) == 1 and first.ts == begin:  # the usual case: one stored point, its own period
        return first
    opened, high, low, captures = first.open, first.high, first.low, 0
    for p in group:
        if p.high > high:
            high = p.high
        if p.low < low:
            low = p.low
        captures += p.n
    if before is not None and first.ts > begin:  # it opened at the value before it
        opened = before.close
        high, low = max(high, opened), min(low, opened)
    return Native(begin, opened, high, low, last.close, last.bid, last.ask, last.last, last.volume, captures)


def _carry(out: list[Run], point: Native, start: int, stop: int, size: int, lo: int) -> None:
    """``point``'s close held over the periods of ``size`` from ``start`` to ``stop`` that end after ``lo``."""
    first = max(start, lo - lo % size)
    count = len(range(first, stop, size))
    if count:
        c = point.close
        out.append((size, Native(first, c, c, c, c, point.bid, point.ask, point.last, point.volume, 0), count))


def _expand(runs: list[Run], complement: bool, times: dict[int, datetime]) -> list[Point]:
    """Runs as points (``times``: the period starts' datetimes, shared by a page of tokens)."""
    out: list[Point] = []
    for size, native, count in runs:
        first = _point(_complement(native) if complement else native, size, times)
        out.append(first)
        rest = first[1:]
        for k in range(1, count):
            t = native.ts + k * size
            out.append(Point(times.get(t) or times.setdefault(t, datetime.fromtimestamp(t, UTC)), *rest))
    return out


def _flip(ticks: int) -> int:
    return UNKNOWN if ticks == UNKNOWN else TICKS - ticks


def _complement(p: Native) -> Native:
    """The other outcome of a binary market: 1 - each price; its bid is 1 - the ask, its high 1 - the low."""
    return Native(p.ts, TICKS - p.open, TICKS - p.low, TICKS - p.high, TICKS - p.close, _flip(p.ask), _flip(p.bid),
                  _flip(p.last), p.volume, p.n)


def _price(ticks: int) -> float | None:
    return None if ticks == UNKNOWN else ticks / TICKS


def _point(p: Native, period_s: int, times: dict[int, datetime] | None = None) -> Point:
    if times is None:
        ts = datetime.fromtimestamp(p.ts, UTC)
    else:  # a page of tokens shares its period starts: one datetime each
        ts = times.get(p.ts) or times.setdefault(p.ts, datetime.fromtimestamp(p.ts, UTC))
    return Point(
        ts=ts, period_s=period_s, price=p.close / TICKS, open=p.open / TICKS,
        high=p.high / TICKS, low=p.low / TICKS, bid=_price(p.bid), ask=_price(p.ask), last=_price(p.last),
        volume=None if p.volume == UNKNOWN else float(p.volume), captures=p.n,
    )
