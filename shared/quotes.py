"""Pure parsing and arithmetic for prices: token ids, CLOB books, the display-price rule,
history parameters and the history merge. No I/O here (see ``prices`` and ``prices_store``).

Wire facts this relies on (``docs/polymarket-api.md`` §1, §3):
* prices arrive as decimal **strings** (``"0.42"``, sometimes padded: ``"0.430"``); they are
  parsed as ``Decimal`` so midpoints and spreads are exact, and leave as JSON numbers;
* ``/book`` lists bids ascending and asks descending: the best bid and best ask are the
  **last** elements. Nothing here trusts the order: books are sorted best-first explicitly;
* ``/prices-history`` takes ``interval`` (``1m`` is a month) and ``fidelity`` in minutes, with
  minimum fidelities for long ranges, and keeps only about 31 days.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from shared.errors import BadRequest, UpstreamBadResponse
from shared.http import is_uint

TOKEN_ID_RE = re.compile(r"[0-9]{1,78}")  # uint256 as decimal text (§1); fullmatch only
# Polymarket shows the midpoint unless the spread is wider than this, then the last trade.
DISPLAY_SPREAD_LIMIT = Decimal("0.10")

PRICE_RULE_MIDPOINT = "midpoint"
PRICE_RULE_LAST_TRADE = "last_trade"
PRICE_RULE_LAST_KNOWN = "last_known"  # closed book: the last price we know of
PRICE_RULE_NONE = "none"  # no price: no two-sided book and no trade yet (``price`` is null)


def validate_token_id(raw: str | None, parameter: str = "token_id") -> str:
    """A token id (1 to 78 decimal digits) or BadRequest; nothing else is ever sent upstream."""
    value = raw or ""
    if not TOKEN_ID_RE.fullmatch(value):
        raise BadRequest(f"{parameter} must be 1 to 78 decimal digits", parameter=parameter)
    return value


def parse_decimal(value: Any) -> Decimal | None:
    """A CLOB number (string or JSON number) as Decimal; None when absent or empty."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        parsed = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise UpstreamBadResponse("clob", f"not a number: {str(value)[:40]!r}") from None
    if not parsed.is_finite():
        raise UpstreamBadResponse("clob", "not a finite number")
    return parsed


def num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


# --- books -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    price: Decimal
    size: Decimal


@dataclass(frozen=True)
class Book:
    """An order book normalised best-first: bids descending, asks ascending."""

    token_id: str
    condition_id: str | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    tick_size: Decimal | None
    min_order_size: Decimal | None
    neg_risk: bool | None
    last_trade_price: Decimal | None
    hash: str | None
    timestamp: datetime | None  # when the book last changed (upstream's ``timestamp``)
    fetched_at: datetime

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None


def _levels(raw: Any, *, descending: bool) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise UpstreamBadResponse("clob", "book side is not a list")
    levels = []
    for item in raw:
        if not isinstance(item, dict):
            raise UpstreamBadResponse("clob", "book level is not an object")
        price, size = parse_decimal(item.get("price")), parse_decimal(item.get("size"))
        if price is None or size is None:
            raise UpstreamBadResponse("clob", "book level without price or size")
        if size > 0:
            levels.append(Level(price, size))
    # Upstream sends worst-to-best (best LAST), contradicting its docs: sort, never assume.
    levels.sort(key=lambda level: level.price, reverse=descending)
    return tuple(levels)


def _book_time(raw: Any) -> datetime | None:
    try:
        ms = int(str(raw))
    except (TypeError, ValueError):
        return None
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_book(raw: Any, fetched_at: datetime, token_id: str | None = None) -> Book:
    """A ``/book`` object (or one element of ``/books``) as a :class:`Book`."""
    if not isinstance(raw, dict):
        raise UpstreamBadResponse("clob", "book is not an object")
    asset_id = raw.get("asset_id")
    if not isinstance(asset_id, str) or not TOKEN_ID_RE.fullmatch(asset_id):
        raise UpstreamBadResponse("clob", "book without a valid asset_id")
    if token_id is not None and asset_id != token_id:
        raise UpstreamBadResponse("clob", "book for another token")
    market = raw.get("market")
    neg_risk = raw.get("neg_risk")
    return Book(
        token_id=asset_id,
        condition_id=market if isinstance(market, str) and market else None,
        bids=_levels(raw.get("bids"), descending=True),
        asks=_levels(raw.get("asks"), descending=False),
        tick_size=parse_decimal(raw.get("tick_size")),
        min_order_size=parse_decimal(raw.get("min_order_size")),
        neg_risk=neg_risk if isinstance(neg_risk, bool) else None,
        last_trade_price=parse_decimal(raw.get("last_trade_price")),
        hash=raw.get("hash") if isinstance(raw.get("hash"), str) else None,
        timestamp=_book_time(raw.get("timestamp")),
        fetched_at=fetched_at,
    )


def _side_totals(levels: Iterable[Level]) -> dict[str, Any]:
    levels = list(levels)
    return {
        "levels": len(levels),
        "size": float(sum((level.size for level in levels), Decimal(0))),
        "notional": float(sum((level.price * level.size for level in levels), Decimal(0))),
    }


def book_json(book: Book, depth: int) -> dict[str, Any]:
    """The ``book`` object of ``/api/book``: ``depth`` levels best-first, totals of the whole book."""
    quote = quote_from_book(book)
    return {
        "token_id": book.token_id,
        "condition_id": book.condition_id,
        "bids": [{"price": float(level.price), "size": float(level.size)} for level in book.bids[:depth]],
        "asks": [{"price": float(level.price), "size": float(level.size)} for level in book.asks[:depth]],
        "depth": depth,
        "best_bid": quote.best_bid,
        "best_ask": quote.best_ask,
        "midpoint": quote.midpoint,
        "spread": quote.spread,
        "last_trade_price": quote.last_trade_price,
        "totals": {"bids": _side_totals(book.bids), "asks": _side_totals(book.asks)},
        "tick_size": num(book.tick_size),
        "min_order_size": num(book.min_order_size),
        "neg_risk": book.neg_risk,
        "hash": book.hash,
        "timestamp": book.timestamp.isoformat() if book.timestamp else None,
    }


# --- quotes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """One token's price. ``price`` is the display price chosen by ``price_rule``."""

    token_id: str
    price: float | None
    price_rule: str
    midpoint: float | None
    best_bid: float | None
    best_ask: float | None
    spread: float | None
    last_trade_price: float | None
    tick_size: float | None
    book: str  # "open" | "closed"
    as_of: datetime  # when this was observed (fetch time), or the stored sample's time
    book_timestamp: datetime | None = None
    book_hash: str | None = None
    condition_id: str | None = None  # from the book's ``market`` field

    def as_json(self) -> dict[str, Any]:
        """The ``quote`` object (built once per quote; callers must not modify it)."""
        return self._json

    @cached_property
    def _json(self) -> dict[str, Any]:
        return {
            "price": self.price,
            "price_rule": self.price_rule,
            "midpoint": self.midpoint,
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "spread": self.spread,
            "last_trade_price": self.last_trade_price,
            "tick_size": self.tick_size,
            "book": self.book,
            "book_timestamp": self.book_timestamp.isoformat() if self.book_timestamp else None,
            "as_of": self.as_of.isoformat(),
        }

    @cached_property
    def _version(self) -> str:
        return f"{self.book}|{self.book_hash}|{self.price}|{self.price_rule}|{self.as_of.isoformat()}"

    def version(self) -> str:
        """Changes whenever the quote's content does (for ETags)."""
        return self._version

    @property
    def sample_time(self) -> datetime:
        """The time a stored sample of this quote is keyed on: when the book took this state.

        Upstream's book ``timestamp`` is the book's last-change time, so re-reading an unchanged
        book stores nothing new (idempotent on (token, time)). A timestamp a little ahead of our
        clock is clock skew and is kept (a fallback to the fetch time would store the same book
        state again under another key); a missing one, or one far ahead, falls back to the
        fetch time.
        """
        if self.book_timestamp is None or self.book_timestamp > self.as_of + CLOCK_SKEW_ALLOWANCE:
            return self.as_of
        return self.book_timestamp


CLOCK_SKEW_ALLOWANCE = timedelta(seconds=30)


def display_price(
    midpoint: Decimal | None, spread: Decimal | None, last_trade: Decimal | None
) -> tuple[Decimal | None, str]:
    """Polymarket's rule: the midpoint, unless the spread is wider than 0.10 (or there is no
    two-sided book), then the last trade price. Returns (price, rule applied); the rule is
    ``none`` when neither exists (a one-sided or empty book that never traded): no price."""
    wide = spread is None or spread > DISPLAY_SPREAD_LIMIT
    if wide and last_trade is not None:
        return last_trade, PRICE_RULE_LAST_TRADE
    if midpoint is None:
        return None, PRICE_RULE_NONE
    return midpoint, PRICE_RULE_MIDPOINT


def quote_from_book(book: Book) -> Quote:
    """A quote from one ``/book`` read.

    One round trip gives every field: best bid and ask are the top levels, and the midpoint and
    spread are computed from them exactly as ``/midpoint`` ((bid + ask) / 2) and ``/spread``
    (ask - bid) compute them upstream, so separate calls would only add latency and rate-limit
    use. ``last_trade_price`` and ``tick_size`` are fields of the book.
    """
    bid, ask = book.best_bid, book.best_ask
    midpoint = (bid + ask) / 2 if bid is not None and ask is not None else None
    spread = ask - bid if bid is not None and ask is not None else None
    price, rule = display_price(midpoint, spread, book.last_trade_price)
    return Quote(
        token_id=book.token_id,
        price=num(price),
        price_rule=rule,
        midpoint=num(midpoint),
        best_bid=num(bid),
        best_ask=num(ask),
        spread=num(spread),
        last_trade_price=num(book.last_trade_price),
        tick_size=num(book.tick_size),
        book="open",
        as_of=book.fetched_at,
        book_timestamp=book.timestamp,
        book_hash=book.hash,
        condition_id=book.condition_id,
    )


def quote_from_sample(token_id: str, row: Mapping[str, Any]) -> Quote:
    """A closed or stale quote from a stored ``price_samples`` row."""

    def f(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return Quote(
        token_id=token_id,
        price=f("price"),
        price_rule=PRICE_RULE_LAST_KNOWN,
        midpoint=f("midpoint"),
        best_bid=f("best_bid"),
        best_ask=f("best_ask"),
        spread=f("spread"),
        last_trade_price=f("last_trade_price"),
        tick_size=None,
        book="open",
        as_of=row["ts"],
        book_timestamp=row["ts"],
    )


# --- history ---------------------------------------------------------------------------------

INTERVALS: dict[str, int] = {
    "1h": 3600,
    "6h": 6 * 3600,
    "1d": 86_400,
    "1w": 7 * 86_400,
    "1m": 30 * 86_400,  # upstream's 1m is one month
    "max": 31 * 86_400,  # upstream keeps about 31 days; stored samples reach further (see window)
}
DEFAULT_INTERVAL = "1d"
# Upstream 400s below these (§3.17); ``max`` covers more than ``1m``, so it gets 1m's floor too.
MIN_FIDELITY = {"1w": 5, "1m": 10, "max": 10}
MAX_FIDELITY = 1440  # one point a day


@dataclass(frozen=True)
class HistoryQuery:
    interval: str = DEFAULT_INTERVAL
    fidelity: int = 1  # minutes per point

    @property
    def period_s(self) -> int:
        return self.fidelity * 60

    def window_s(self, retention_days: int) -> int:
        """How far back the answer reaches: ``max`` means everything we keep."""
        if self.interval == "max":
            return max(INTERVALS["max"], retention_days * 86_400)
        return INTERVALS[self.interval]


def parse_history_query(params: Mapping[str, str]) -> HistoryQuery:
    """``interval`` and ``fidelity`` validated against upstream's limits, naming the parameter."""
    interval = (params.get("interval") or DEFAULT_INTERVAL).strip()
    if interval not in INTERVALS:
        raise BadRequest(f"parameter 'interval' must be one of {', '.join(INTERVALS)}", parameter="interval")
    minimum = MIN_FIDELITY.get(interval, 1)
    raw = (params.get("fidelity") or "").strip()
    if raw == "":
        return HistoryQuery(interval, minimum)
    if not is_uint(raw) or not minimum <= int(raw) <= MAX_FIDELITY:
        raise BadRequest(
            f"parameter 'fidelity' must be an integer number of minutes from {minimum} to {MAX_FIDELITY}"
            + (f" (the minimum for interval {interval} is {minimum})" if minimum > 1 else ""),
            parameter="fidelity",
        )
    return HistoryQuery(interval, int(raw))


Point = tuple[int, float]  # (unix seconds, price)


def parse_history(raw: Any) -> list[Point]:
    """``{"history": [{"t", "p"}]}`` from ``/prices-history`` as ascending points."""
    if not isinstance(raw, dict) or not isinstance(raw.get("history"), list):
        raise UpstreamBadResponse("clob", "prices-history without a history list")
    points: dict[int, float] = {}
    for item in raw["history"]:
        if not isinstance(item, dict):
            raise UpstreamBadResponse("clob", "prices-history point is not an object")
        t, p = item.get("t"), item.get("p")
        if isinstance(t, bool) or isinstance(p, bool) or not isinstance(t, (int, float)):
            raise UpstreamBadResponse("clob", "prices-history point without t")
        price = parse_decimal(p)
        if price is None:
            raise UpstreamBadResponse("clob", "prices-history point without p")
        points[int(t)] = float(price)
    return sorted(points.items())


def merge_history(
    upstream: Iterable[Point], stored: Iterable[Point], *, period_s: int, start: int, end: int
) -> tuple[list[Point], int]:
    """Upstream's points plus stored ones where upstream has none, at most one per bucket.

    Buckets are ``period_s`` (the fidelity) wide. Upstream wins every bucket it has a point in
    (and every exact timestamp clash); a bucket upstream forgot (older than its ~31 days, or a
    closed market) is filled from storage, whose points (one per bucket, see
    ``prices_store.history_points``) are kept only at least half a period away from every
    other point, so the series keeps the requested spacing where the two meet. Returns the
    ascending points and how many came from storage.
    """
    upstream_points = {t: p for t, p in upstream if start <= t <= end}
    covered = {t // period_s for t in upstream_points}
    fill: dict[int, Point] = {}
    for t, p in stored:
        if not start <= t <= end or t in upstream_points:
            continue
        bucket = t // period_s
        if bucket in covered:
            continue
        if bucket not in fill or t >= fill[bucket][0]:
            fill[bucket] = (t, p)
    upstream_times = sorted(upstream_points)
    half = period_s / 2
    kept: list[Point] = []
    for t, p in sorted(fill.values()):
        i = bisect.bisect_left(upstream_times, t)
        near = [abs(t - upstream_times[j]) for j in (i - 1, i) if 0 <= j < len(upstream_times)]
        if (near and min(near) < half) or (kept and t - kept[-1][0] < half):
            continue
        kept.append((t, p))
    return sorted([*upstream_points.items(), *kept]), len(kept)
