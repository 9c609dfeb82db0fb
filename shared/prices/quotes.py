"""Pure parsing and arithmetic for prices: token ids, CLOB books, the display-price rule,
history parameters and the history merge. No I/O here (see ``prices`` and ``prices_store``).

Wire facts this relies on (``docs/polymarket-api.md`` §1, §3):
* prices arrive as decimal **strings** (``"0.42"``, sometimes padded: ``"0.430"``); they are
  parsed as ``Decimal`` so midpoints and spreads are exact, and leave as JSON numbers;
* ``/book`` lists bids ascending and asks descending: the best bid and best ask are the
  **last** elements. Nothing here trusts the order: books are sorted best-first explicitly;
* ``/prices-history`` takes ``interval`` (``1m`` is a month) and ``fidelity`` in minutes, with
  minimum fidelities for long ranges, and keeps only about 31 days.

Nothing from the wire is trusted: books and history are parsed into pydantic models with ranges
(prices in [0, 1], sizes finite and bounded, times between 2020 and just past now, text without
NUL or lone surrogates). A bad **item** (a book level, a history point) is skipped and counted
(``Book.rejected_levels``, ``HistoryRead.rejected``); a bad field of the book itself makes that
book an ``UpstreamBadResponse``, which costs its own token only.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from shared.core.display import (
    PRICE_RULE_LAST_KNOWN,
    display_price,
)
from shared.core.errors import UpstreamBadResponse
from shared.core.ids import TOKEN_ID_PATTERN, is_token_id
from shared.core.numbers import float_or_none

# --- the wire: what the CLOB sends, validated -------------------------------------------------

EARLIEST_TIME = datetime(2020, 1, 1, tzinfo=UTC)  # before the CLOB existed: no real time is older
EARLIEST_TS = int(EARLIEST_TIME.timestamp())
# Significant digits of a number (pydantic counts a large exponent as digits): "2260866.89" has
# 9; "9e999999999" and "1e-999999999" are refused before any arithmetic sees them.
MAX_DIGITS = 30
MAX_SIZE = Decimal(10**12)  # shares; the largest resting orders seen are about 10^7
MAX_LEVELS = 10_000  # per side: a 0.0001 tick has 9,999 prices
MAX_HISTORY_POINTS = 100_000  # about 31 days at one a minute is 44,640
MAX_HASH_CHARS = 128
# A book dated further ahead than this is not clock skew but a broken field (between the skew
# allowance and this, the book is kept and its samples are keyed on the fetch time instead).
BOOK_TIME_AHEAD = timedelta(hours=1)
CLOCK_SKEW_ALLOWANCE = timedelta(seconds=30)


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _millis_text(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 20):
        raise ValueError("not a time in milliseconds")
    return value


# Numbers arrive as strings ("0.42") or JSON numbers; a bool is neither (pydantic refuses it).
_PROBABILITY = Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False, max_digits=MAX_DIGITS)]
_SIZE = Annotated[Decimal, Field(ge=0, le=MAX_SIZE, allow_inf_nan=False, max_digits=MAX_DIGITS)]
_TICK = Annotated[Decimal, Field(gt=0, lt=1, allow_inf_nan=False, max_digits=MAX_DIGITS)]
# The book's ``market``: a condition id, served lower-case as Gamma's are.
_CONDITION_ID = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$"), AfterValidator(str.lower)]
# Printable ASCII without spaces: no NUL, no lone surrogate, nothing to break a header or a log.
_HASH = Annotated[str, StringConstraints(max_length=MAX_HASH_CHARS, pattern=r"^[!-~]+$")]
# "" is how the CLOB leaves a field empty (``last_trade_price`` before a first trade). The
# before-validator wraps the whole union, the constraints only its non-null member.
OptProbability = Annotated[_PROBABILITY | None, BeforeValidator(_blank_is_none)]
OptSize = Annotated[_SIZE | None, BeforeValidator(_blank_is_none)]
OptTick = Annotated[_TICK | None, BeforeValidator(_blank_is_none)]
TokenIdText = Annotated[str, StringConstraints(pattern=TOKEN_ID_PATTERN)]
ConditionIdText = Annotated[_CONDITION_ID | None, BeforeValidator(_blank_is_none)]
HashText = Annotated[_HASH | None, BeforeValidator(_blank_is_none)]
Millis = Annotated[int | None, BeforeValidator(_millis_text)]


# Items (levels, points) are TypedDicts with no Python validators: a history of 44,640 points
# validates in about 30 ms this way, against 150 ms as models. The window's upper end, which
# moves with the clock, is checked after (``read_history``).
class WireLevel(TypedDict):
    price: _PROBABILITY
    size: _SIZE


class WirePoint(TypedDict):
    """One ``/prices-history`` point (§3.17): ``t`` a whole number of seconds, ``p`` a number."""

    t: Annotated[StrictInt, Field(ge=EARLIEST_TS)]
    p: Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WireBook(_Wire):
    """One book as ``/book`` and ``/books`` send it (§3.7); validation context: ``fetched_at``."""

    asset_id: TokenIdText
    market: ConditionIdText = None
    timestamp: Millis = None
    hash: HashText = None
    bids: list[WireLevel] = Field(max_length=MAX_LEVELS)
    asks: list[WireLevel] = Field(max_length=MAX_LEVELS)
    min_order_size: OptSize = None
    tick_size: OptTick = None
    neg_risk: StrictBool | None = None
    last_trade_price: OptProbability = None

    @field_validator("timestamp")
    @classmethod
    def _sane_time(cls, ms: int | None, info: ValidationInfo) -> int | None:
        if ms is None:
            return None
        fetched_at: datetime = (info.context or {}).get("fetched_at") or datetime.now(UTC)
        if not EARLIEST_TS * 1000 <= ms <= (fetched_at + BOOK_TIME_AHEAD).timestamp() * 1000:
            raise ValueError("book time outside the sane window")
        return ms


class WireHistory(_Wire):
    history: list[WirePoint] = Field(max_length=MAX_HISTORY_POINTS)


def validation_summary(error: ValidationError, limit: int = 3) -> str:
    """Where and what kind of error (``bids.3.price: less_than_equal``), never the input itself."""
    items = error.errors(include_url=False, include_input=False, include_context=False)
    text = "; ".join(f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['type']}"
                     for item in items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


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
    rejected_levels: int = 0  # levels upstream sent that failed validation and were left out
    rejection: str = ""  # why (field and error type only: never upstream's text)

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None


def _levels(raw: Iterable[WireLevel], *, descending: bool) -> tuple[Level, ...]:
    levels = [Level(level["price"], level["size"]) for level in raw if level["size"] > 0]
    # Upstream sends worst-to-best (best LAST), contradicting its docs: sort, never assume.
    levels.sort(key=lambda level: level.price, reverse=descending)
    return tuple(levels)


def book_token(raw: Any) -> str | None:
    """The token id a raw book says it is for, if it says so readably (to pin a bad book on it)."""
    asset_id = raw.get("asset_id") if isinstance(raw, dict) else None
    return asset_id if is_token_id(asset_id) else None


def _level_at(loc: tuple[int | str, ...]) -> tuple[str, int] | None:
    """(side, index) when a validation error lies inside one level, else None (the book's own)."""
    if len(loc) >= 2 and loc[0] in ("bids", "asks") and isinstance(loc[1], int):
        return str(loc[0]), loc[1]
    return None


def parse_book(raw: Any, fetched_at: datetime, token_id: str | None = None) -> Book:
    """A ``/book`` object (or one element of ``/books``) as a :class:`Book`.

    Levels are items: a bad one is left out and counted in ``rejected_levels``. Anything else
    wrong (the book's own fields, a side that is not a list, an error body sent with status
    200) raises UpstreamBadResponse for the whole book.
    """
    if isinstance(raw, dict) and "error" in raw and "asset_id" not in raw:
        # The contract's "no book" is a 404; an error body with status 200 is a failure.
        raise UpstreamBadResponse("clob", "an error body with status 200")
    context = {"fetched_at": fetched_at}
    try:
        wire, rejected, problem = WireBook.model_validate(raw, context=context), 0, ""
    except ValidationError as error:
        bad = {_level_at(item["loc"]) for item in error.errors(include_url=False, include_input=False)}
        if None in bad or not isinstance(raw, dict):
            raise UpstreamBadResponse("clob", f"bad book: {validation_summary(error)}") from None
        cleaned = {**raw, **{side: [level for i, level in enumerate(raw[side]) if (side, i) not in bad]
                             for side in ("bids", "asks")}}
        wire = WireBook.model_validate(cleaned, context=context)  # only the valid levels are left
        rejected, problem = len(bad), validation_summary(error)
    if token_id is not None and wire.asset_id != token_id:
        raise UpstreamBadResponse("clob", "book for another token")
    return Book(
        token_id=wire.asset_id,
        condition_id=wire.market,
        bids=_levels(wire.bids, descending=True),
        asks=_levels(wire.asks, descending=False),
        tick_size=wire.tick_size,
        min_order_size=wire.min_order_size,
        neg_risk=wire.neg_risk,
        last_trade_price=wire.last_trade_price,
        hash=wire.hash,
        timestamp=None if wire.timestamp is None else datetime.fromtimestamp(wire.timestamp / 1000, UTC),
        fetched_at=fetched_at,
        rejected_levels=rejected,
        rejection=problem,
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
        "tick_size": float_or_none(book.tick_size),
        "min_order_size": float_or_none(book.min_order_size),
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
        price=float_or_none(price),
        price_rule=rule,
        midpoint=float_or_none(midpoint),
        best_bid=float_or_none(bid),
        best_ask=float_or_none(ask),
        spread=float_or_none(spread),
        last_trade_price=float_or_none(book.last_trade_price),
        tick_size=float_or_none(book.tick_size),
        book="open",
        as_of=book.fetched_at,
        book_timestamp=book.timestamp,
        book_hash=book.hash,
        condition_id=book.condition_id,
    )


def quote_from_sample(token_id: str, row: Mapping[str, Any]) -> Quote:
    """A closed or stale quote from a stored ``price_samples`` row."""

    def f(name: str) -> float | None:
        return float_or_none(row.get(name))

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

Point = tuple[int, float]  # (unix seconds, price)


@dataclass(frozen=True)
class HistoryRead:
    """The valid points of a ``/prices-history`` answer, and how many were left out (and why)."""

    points: list[Point]
    rejected: int = 0
    rejection: str = ""


def read_history(raw: Any, now: float | None = None) -> HistoryRead:
    """``{"history": [{"t", "p"}]}`` as ascending points; bad points (p outside [0, 1], t before
    2020 or more than the skew allowance past ``now``) are skipped and counted. A body that is
    not such an object raises UpstreamBadResponse."""
    try:
        wire, rejected, problem = WireHistory.model_validate(raw), 0, ""
    except ValidationError as error:
        bad: set[int] = set()
        for item in error.errors(include_url=False, include_input=False):
            loc = item["loc"]
            if len(loc) < 2 or loc[0] != "history" or not isinstance(loc[1], int):  # the body itself
                raise UpstreamBadResponse("clob", f"bad prices-history: {validation_summary(error)}") from None
            bad.add(loc[1])
        kept = [point for i, point in enumerate(raw["history"]) if i not in bad]
        wire = WireHistory.model_validate({"history": kept})
        rejected, problem = len(bad), validation_summary(error)
    latest = (time.time() if now is None else now) + CLOCK_SKEW_ALLOWANCE.total_seconds()
    points: dict[int, float] = {}
    for point in wire.history:
        if point["t"] > latest:
            rejected += 1
            problem = problem or "history.t: later than now by more than the clock skew allowance"
        else:
            points[point["t"]] = point["p"]
    return HistoryRead(sorted(points.items()), rejected, problem)


def parse_history(raw: Any, now: float | None = None) -> list[Point]:
    """The valid points of a ``/prices-history`` answer (see :func:`read_history`)."""
    return read_history(raw, now).points


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
