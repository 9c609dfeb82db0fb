"""Candles: open, high, low and close of one token's display price per period, with the market's
traded volume in it, from the merged history.

Sources, one per candle so nothing is counted twice: the catalogue refresh's captures
(``shared.history.series``) wherever they cover the candle; elsewhere the series ``/api/price``
history serves (Polymarket's ``/prices-history`` merged with stored quote samples:
``shared.prices.history``). A period with no point of either is absent, never invented; a
captured period the refresh saw unchanged is a candle (``points`` 0: only changes are stored).
Candles are never finer than what is stored: hourly beyond 7 days, daily beyond the retention
(``period_s`` says). ``volume`` is the difference of the market's cumulative volume between the
candle's close and the one before it (captures only, null otherwise): per market, not per
outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from shared.core.config import CacheSettings
from shared.core.errors import BadRequest, NotFound
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer, Freshness
from shared.core.query import Query
from shared.db.database import Database
from shared.prices.query import OutputFormat, format_field

if TYPE_CHECKING:  # the prices service imports the client stack: built lazily
    from shared.prices.service import PricesService

Resolution = Literal["5m", "15m", "1h", "4h", "1d"]
RESOLUTION_S: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3_600, "4h": 14_400, "1d": 86_400}
# The stored resolution each is built from (``shared.history.series`` reads 5m, 1h or 1d).
_READ_AS = {"5m": "5m", "15m": "5m", "1h": "1h", "4h": "1h", "1d": "1d"}
DEFAULT_SPAN_S = {"5m": 86_400, "15m": 3 * 86_400, "1h": 7 * 86_400, "4h": 30 * 86_400, "1d": 365 * 86_400}
MAX_CANDLES = 4_000
MAX_TIME_CHARS = 40
_EARLIEST, _LATEST = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01: nothing outside is ours


def _time(value: Any) -> Any:
    """ISO 8601 (a time without an offset is UTC) or unix seconds -> epoch seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) > MAX_TIME_CHARS:
        raise ValueError(f"must be at most {MAX_TIME_CHARS} characters")
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be an ISO 8601 time or unix seconds") from None
        seconds = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    if not _EARLIEST <= seconds < _LATEST:
        raise ValueError("must be a time from 2000 to 2099")
    return seconds


EpochParam = Annotated[int, BeforeValidator(_time), WithJsonSchema(
    {"type": "string", "maxLength": MAX_TIME_CHARS, "examples": ["2026-11-25T13:00:00Z", "1764075600"]})]


class CandleQuery(Query):
    """``GET /api/price/{token_id}/candles``."""

    resolution: Resolution = Field("1h", description="Candle length.")
    start: EpochParam | None = Field(
        None, description="First candle's time (ISO 8601, UTC without an offset, or unix seconds), rounded down to "
                          "the resolution. Default: `end` less 1 day (5m), 3 days (15m), 7 days (1h), 30 days (4h) "
                          f"or 365 days (1d). At most {MAX_CANDLES} candles from `start` to `end` (400 beyond).")
    end: EpochParam | None = Field(None, description="End of the range (exclusive; same forms). Default: now.")
    format: OutputFormat = format_field()

    def bounds(self, now: float) -> tuple[int, int]:
        """[lo, hi) in epoch seconds, aligned to the resolution; BadRequest naming the parameter."""
        step = RESOLUTION_S[self.resolution]
        end = int(now) if self.end is None else self.end
        start = end - DEFAULT_SPAN_S[self.resolution] if self.start is None else self.start
        if end <= start:
            raise BadRequest("parameter 'end' must be after start", parameter="end")
        lo, hi = start - start % step, -(-end // step) * step
        if (hi - lo) // step > MAX_CANDLES:
            raise BadRequest(f"parameter 'start' gives more than {MAX_CANDLES} candles of {self.resolution} "
                             "before end; narrow the range or use a longer resolution", parameter="start")
        return lo, hi


@dataclass
class Candle:
    start: int  # epoch seconds
    period_s: int
    source: str  # "captures" or "history"
    open: float
    high: float
    low: float
    close: float
    points: int = 0
    cumulative: float | None = None  # the market's cumulative volume at the close (captures)
    volume: float | None = None

    def add(self, high: float, low: float, close: float, points: int) -> None:
        """A later point of the candle (its open is the first point's)."""
        self.high, self.low, self.close = max(self.high, high), min(self.low, low), close
        self.points += points

    def as_json(self) -> dict[str, Any]:
        return {"t": datetime.fromtimestamp(self.start, UTC).isoformat(), "period_s": self.period_s,
                "open": self.open, "high": self.high, "low": self.low, "close": self.close, "points": self.points,
                "volume": self.volume, "source": self.source}


CSV_COLUMNS = ("time", "period_s", "open", "high", "low", "close", "points", "volume", "source")


def csv_rows(body: dict[str, Any]) -> list[list[Any]]:
    return [[c["t"], *(c[k] for k in CSV_COLUMNS[1:])] for c in body["candles"]]


def build(captured: list[Any], history: list[tuple[int, float]], lo: int, hi: int, step: int) -> list[Candle]:
    """The candles of [lo, hi): ``captured`` (``shared.history.series.Point``s from ``lo - step``,
    ascending) wherever they fall, ``history`` points (t, p) only in candles no capture covers."""
    cells: dict[int, Candle] = {}
    for p in captured:
        ts = int(p.ts.timestamp())
        size = max(step, p.period_s)
        begin = ts - ts % size
        cell = cells.get(begin)
        if cell is None:
            cell = cells[begin] = Candle(begin, size, "captures", p.open, p.high, p.low, p.price)
        cell.add(p.high, p.low, p.price, p.captures)
        cell.cumulative = p.volume
    spans = {c.period_s for c in cells.values()}

    def covered(t: int) -> bool:
        return any((c := cells.get(t - t % size)) is not None and c.period_s == size for size in spans)

    for t, price in history:
        if not lo <= t < hi or covered(t):
            continue
        begin = t - t % step
        cell = cells.get(begin)
        if cell is None:
            cells[begin] = Candle(begin, step, "history", price, price, price, price, 1)
        else:
            cell.add(price, price, price, 1)
    ordered = sorted(cells.values(), key=lambda c: c.start)
    before: Candle | None = None
    for cell in ordered:
        if (cell.source == "captures" and before is not None and before.source == "captures"
                and before.start + before.period_s == cell.start
                and cell.cumulative is not None and before.cumulative is not None):
            # Gamma restating a cumulative volume downwards is not negative trading.
            cell.volume = max(0.0, cell.cumulative - before.cumulative)
        before = cell
    return [c for c in ordered if c.start >= lo and c.start < hi]


class CandleService:
    """Candles of one token: one read of the captures, and the token's ``/api/price`` history
    series (its caches, its one upstream call per TTL) for a token the catalogue knows."""

    def __init__(self, settings: CacheSettings, database: Callable[[], Database],
                 prices: Callable[[], PricesService]) -> None:
        self.settings = settings
        self._database = database
        self._prices = prices

    def candles(self, token: str, query: CandleQuery, now: float | None = None) -> Answer:
        from shared.history.series import series
        from shared.prices.query import HistoryQuery

        step = RESOLUTION_S[query.resolution]
        lo, hi = query.bounds(time.time() if now is None else now)
        start, end = datetime.fromtimestamp(lo - step, UTC), datetime.fromtimestamp(hi, UTC)
        captured = self._database().run(
            lambda cur: series(cur, [token], start, end, _READ_AS[query.resolution])).get(token)
        prices = self._prices()
        info = prices.tokens.lookup([token])[token]
        history: list[tuple[int, float]] = []
        stale_reason = None
        if info.known or captured is not None:
            fidelity = min(1_440, max(10, step // 60))  # ``max``'s floor is 10 minutes
            merged = prices.history.or_stored(token, HistoryQuery(interval="max", fidelity=fidelity), False)
            history = merged.points
            if merged.error is not None:
                stale_reason = f"Polymarket's price history failed ({merged.error.summary()}): captures and " \
                               "stored samples only"
        elif captured is None:
            raise NotFound(f"unknown token {token}: nothing is stored for it")
        candles = [c.as_json() for c in build(captured or [], history, lo, hi, step)]
        body = {"token_id": token, "resolution": query.resolution,
                "start": datetime.fromtimestamp(lo, UTC).isoformat(),
                "end": datetime.fromtimestamp(hi, UTC).isoformat(), "candles": candles}
        as_of = datetime.now(UTC)
        freshness = Freshness("stale", as_of, 0.0, stale_reason) if stale_reason else Freshness("cache", as_of, 0.0)
        tag = make_etag("candles", token, query.resolution, lo, hi, len(candles),
                        make_etag(*(tuple(c.values()) for c in candles)), stale_reason is None)
        return Answer(body, freshness, tag, self.settings.price_history_ttl_s)

