"""Prices, books and price history as deterministic functions of (market seed, time).

Nothing is stepped forward in the background: every view asks "what is the book of this token at
time t", so any process, thread or request computes the same answer and history is consistent with
live prices by construction.

* Time is cut into steps of ``step`` seconds (per-market phase, so changes are not aligned).
  In each step a market's book changes with probability ``activity`` (a hash of seed and step);
  the book shown at time t is the one built at the last change step at or before t. Book
  ``timestamp``/``hash`` therefore change only when the book does.
* The fair value of ``tokens[0]`` is ``logistic(logit(base) + volatility * noise(t))`` where
  ``noise`` sums value-noise octaves from one minute to one week: a bounded random walk that can be
  evaluated at any t in O(1).
* Binary books mirror each other (No bid = 1 - Yes ask), so the two midpoints sum to exactly 1.
* ``set_price`` pins (or restarts the walk from) an explicit price from a given step on;
  ``forget_history`` hides history before a time.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .catalogue import DAY, Catalogue, Market, logit

M64 = (1 << 64) - 1
HISTORY_RETENTION = 31 * DAY  # interval=max/all and startTs-only requests see this much
_SALT_CHANGE, _SALT_SPREAD, _SALT_TRADE, _SALT_PHASE = 101, 102, 103, 104
# (period in seconds, amplitude in logit units): coarse octaves dominate, fine ones add jitter.
_OCTAVES = ((604_800, 0.55), (86_400, 0.30), (21_600, 0.16), (3_600, 0.08), (600, 0.035), (60, 0.015))
_MAX_SCAN = 4000  # steps to look back for the last book change (activity >= 0.05 makes this ample)


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash."""
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _u01(seed: int, k: int, salt: int) -> float:
    return _mix(seed ^ (k * 0x9E3779B97F4A7C15) ^ (salt * 0xD1B54A32D192ED03)) / 18446744073709551616.0


def _noise(seed: int, t: float, memo: dict[tuple[int, int], float] | None = None) -> float:
    total = 0.0
    for octave, (period, amp) in enumerate(_OCTAVES):
        x = t / period
        k = math.floor(x)
        f = x - k
        if memo is not None:
            a = memo.get((octave, k))
            if a is None:
                a = memo[(octave, k)] = _u01(seed, k, octave + 1)
            b = memo.get((octave, k + 1))
            if b is None:
                b = memo[(octave, k + 1)] = _u01(seed, k + 1, octave + 1)
        else:
            a, b = _u01(seed, k, octave + 1), _u01(seed, k + 1, octave + 1)
        f = f * f * (3 - 2 * f)
        total += amp * (2 * (a + (b - a) * f) - 1)
    return total


def dec(n: int, places: int) -> str:
    """``n / 10**places`` as the shortest decimal string (``42, 2 -> "0.42"``, ``40, 2 -> "0.4"``)."""
    sign = "-" if n < 0 else ""
    digits = str(abs(n)).rjust(places + 1, "0")
    whole, frac = digits[:-places] if places else digits, digits[-places:] if places else ""
    frac = frac.rstrip("0")
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def tick_places(denom: int) -> int:
    return len(str(denom)) - 1


def size_str(size: float) -> str:
    text = f"{size:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def book_hash(book: dict) -> str:
    """The CLOB's book hash: SHA-1 of the compact JSON in this key order with ``hash`` = ""."""
    payload = {
        "market": book["market"], "asset_id": book["asset_id"], "timestamp": book["timestamp"], "hash": "",
        "bids": book["bids"], "asks": book["asks"], "min_order_size": book["min_order_size"],
        "tick_size": book["tick_size"], "neg_risk": book["neg_risk"], "last_trade_price": book["last_trade_price"],
    }
    return hashlib.sha1(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Override:
    step: int  # first step it applies to
    value: float  # fair value of tokens[0]
    hold: bool  # True: the book stays put at this price; False: the walk restarts from it


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book of ``tokens[0]`` in ticks, at one book state."""

    step: int  # the change step that produced this book
    bid: int
    ask: int
    last_trade: int
    last_side: str  # side of the last trade, from tokens[0]'s point of view
    held: bool

    def for_token(self, index: int, denom: int) -> tuple[int, int, int, str]:
        """(bid, ask, last trade, side) in ticks for token ``index`` (token 1 mirrors token 0)."""
        if index == 0:
            return self.bid, self.ask, self.last_trade, self.last_side
        flipped = "SELL" if self.last_side == "BUY" else "BUY"
        return denom - self.ask, denom - self.bid, denom - self.last_trade, flipped


class MarketData:
    def __init__(self, catalogue: Catalogue, clock: Callable[[], float], step: float = 1.0) -> None:
        if step <= 0:
            raise ValueError("step must be > 0")
        self.catalogue = catalogue
        self.clock = clock
        self.step = step
        self._lock = threading.Lock()
        self._overrides: dict[int, list[Override]] = {}  # market index -> ascending by step
        self._forget_all = 0.0
        self._forget: dict[str, float] = {}  # token id -> forget points before this time
        self._one_sided: set[int] = set()  # market indexes: tokens[0] bids only, never traded
        self._books: dict[tuple[int, int, int, int], dict] = {}
        self._quotes: dict[tuple[int, int, int], Quote] = {}

    # --- time and state -----------------------------------------------------------------------

    def _phase(self, m: Market) -> float:
        return _u01(m.seed, 0, _SALT_PHASE) * self.step

    def step_at(self, m: Market, t: float) -> int:
        return math.floor((t - self._phase(m)) / self.step)

    def step_time(self, m: Market, k: int) -> float:
        return self._phase(m) + k * self.step

    def _override(self, m: Market, k: int) -> Override | None:
        overrides = self._overrides.get(m.index)
        if not overrides:
            return None
        i = bisect.bisect_right([o.step for o in overrides], k)
        return overrides[i - 1] if i else None

    def _last_change(self, m: Market, k: int, ov: Override | None) -> int:
        if ov is not None and ov.hold:
            return ov.step
        floor = k - _MAX_SCAN if ov is None else max(ov.step, k - _MAX_SCAN)
        seed, activity = m.seed, m.activity
        for j in range(k, floor, -1):
            if _u01(seed, j, _SALT_CHANGE) < activity:
                return j
        return floor

    def _fair(self, m: Market, j: int, ov: Override | None, memo: dict | None = None) -> float:
        t = self.step_time(m, j)
        if ov is None:
            x = logit(m.base_price) + m.volatility * _noise(m.seed, t, memo)
        elif ov.hold:
            return ov.value
        else:
            x = logit(ov.value) + m.volatility * (_noise(m.seed, t, memo) - _noise(m.seed, self.step_time(m, ov.step)))
        return 1 / (1 + math.exp(-x))

    def quote(self, m: Market, t: float | None = None, memo: dict | None = None) -> Quote:
        """Top of book at time t (default: now), whether or not the market is open.

        ``memo`` (history sampling) shares noise values between nearby times and skips the quote
        cache, which a month of minute points would only flush."""
        k = self.step_at(m, self.clock() if t is None else t)
        ov = self._override(m, k)
        j = self._last_change(m, k, ov)
        if memo is not None:
            return self._build_quote(m, j, ov, memo)
        key = (m.index, j, len(self._overrides.get(m.index, ())))
        cached = self._quotes.get(key)
        if cached is None:
            cached = self._build_quote(m, j, ov, None)
            if len(self._quotes) > 200_000:
                self._quotes.clear()
            self._quotes[key] = cached
        return cached

    def _build_quote(self, m: Market, j: int, ov: Override | None, memo: dict | None) -> Quote:
        denom = m.tick_denom
        if ov is not None and ov.hold:
            centre = round(ov.value * denom)
            bid, ask = centre - 1, centre + 1
            if bid < 1:
                bid, ask = 1, 2
            if ask > denom - 1:
                bid, ask = denom - 2, denom - 1
            return Quote(j, bid, ask, min(max(centre, 1), denom - 1), "BUY", True)
        v = self._fair(m, j, ov, memo)
        spread = m.spread_ticks + (1 if _u01(m.seed, j, _SALT_SPREAD) < 0.25 else 0)
        spread = min(spread, denom - 2)
        bid = min(max(round(v * denom - spread / 2), 1), denom - 1 - spread)
        at_ask = _u01(m.seed, j, _SALT_TRADE) < 0.5
        return Quote(j, bid, bid + spread, bid + spread if at_ask else bid, "BUY" if at_ask else "SELL", False)

    def has_book(self, m: Market, t: float | None = None) -> bool:
        now = self.clock() if t is None else t
        return not m.closed and m.created_at <= now

    # --- views --------------------------------------------------------------------------------

    def book(self, m: Market, index: int) -> dict:
        """The ``/book`` object of token ``index`` now (callers check ``has_book`` first)."""
        q = self.quote(m)
        version = len(self._overrides.get(m.index, ()))
        key = (m.index, index, q.step, version)
        cached = self._books.get(key)
        if cached is not None:
            return cached
        denom, places = m.tick_denom, tick_places(m.tick_denom)
        bids0, asks0 = self._levels(m, q)
        one_sided = m.index in self._one_sided
        if one_sided:
            asks0 = []  # tokens[0] has no asks, so tokens[1] (the mirror) has no bids
        if index == 0:
            bids = [(p, s) for p, s in reversed(bids0)]
            asks = [(p, s) for p, s in reversed(asks0)]
        else:
            bids = [(denom - p, s) for p, s in reversed(asks0)]
            asks = [(denom - p, s) for p, s in reversed(bids0)]
        _bid, _ask, last, _side = q.for_token(index, denom)
        book = {
            "market": m.condition_id,
            "asset_id": m.tokens[index].token_id,
            "timestamp": str(int(self.step_time(m, q.step) * 1000)),
            "hash": "",
            # Worst to best, as the live CLOB sends them: the best bid and best ask are LAST.
            "bids": [{"price": dec(p, places), "size": s} for p, s in bids],
            "asks": [{"price": dec(p, places), "size": s} for p, s in asks],
            "min_order_size": str(m.min_order_size),
            "tick_size": dec(1, places),
            "neg_risk": m.neg_risk,
            # The book pads this to three decimals ("0.430") while /last-trade-price does not.
            "last_trade_price": "" if one_sided else f"{last / denom:.3f}",
        }
        book["hash"] = book_hash(book)
        if len(self._books) > 50_000:
            self._books.clear()
        self._books[key] = book
        return book

    def _levels(self, m: Market, q: Quote) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """tokens[0]'s bids (best first, descending) and asks (best first, ascending)."""
        rng = random.Random(_mix(m.seed ^ (q.step * 0x9E3779B97F4A7C15)))
        denom = m.tick_denom
        depth = 4 + int(min(m.liquidity, 2e6) ** 0.25)
        gaps = (1, 1, 1, 2) if denom == 100 else (1, 1, 2, 3, 5, 10)
        mu = math.log(max(m.liquidity, 500.0) / depth)

        def side(best: int, direction: int) -> list[tuple[int, str]]:
            out: list[tuple[int, str]] = []
            p = best
            n = rng.randint(max(1, depth // 3), depth)
            while 1 <= p <= denom - 1 and len(out) < n:
                out.append((p, size_str(max(m.min_order_size, rng.lognormvariate(mu, 1.3)))))
                p += direction * rng.choice(gaps)
            # Resting orders at the extreme price are common and huge on real books.
            edge = 1 if direction < 0 else denom - 1
            if out and out[-1][0] != edge and rng.random() < 0.6:
                out.append((edge, size_str(rng.uniform(1e4, 3e6))))
            return out

        return side(q.bid, -1), side(q.ask, +1)

    def prices(self, m: Market, index: int, t: float | None = None) -> tuple[int, int, int, str]:
        """(best bid, best ask, last trade, last side) in ticks for token ``index``."""
        return self.quote(m, t).for_token(index, m.tick_denom)

    def midpoint(self, m: Market, index: int, t: float | None = None, memo: dict | None = None) -> float:
        bid, ask, _last, _side = self.quote(m, t, memo).for_token(index, m.tick_denom)
        return (bid + ask) / (2 * m.tick_denom)

    # --- history ------------------------------------------------------------------------------

    def history(self, m: Market, index: int, start: float, end: float, fidelity_min: int) -> list[dict]:
        """``[{"t", "p"}]`` at one point per ``fidelity`` minutes, forward-filled midpoints."""
        now = self.clock()
        token_id = m.tokens[index].token_id
        lo = max(start, now - HISTORY_RETENTION, m.created_at, self._forget_all, self._forget.get(token_id, 0.0))
        hi = min(end, now)
        if m.closed_at is not None:
            hi = min(hi, m.closed_at)
        if hi < lo:
            return []
        period = max(1, fidelity_min) * 60
        # Sample times are not aligned to round minutes on the live API either.
        phase = (m.seed >> 11) % 60
        t = math.ceil((lo - phase) / period) * period + phase
        memo: dict[tuple[int, int], float] = {}
        out: list[dict] = []
        while t <= hi:
            out.append({"t": int(t), "p": round(self.midpoint(m, index, t, memo), 6)})
            t += period
        return out

    # --- mutations ----------------------------------------------------------------------------

    def set_price(self, m: Market, index: int, price: float, *, hold: bool = True) -> None:
        if not 0 < price < 1:
            raise ValueError("price must be strictly between 0 and 1")
        value0 = price if index == 0 else 1 - price
        k = self.step_at(m, self.clock())
        with self._lock:
            overrides = [o for o in self._overrides.get(m.index, []) if o.step < k]
            overrides.append(Override(k, value0, hold))
            self._overrides[m.index] = overrides
            self._drop_cached(m)

    def release_price(self, m: Market) -> None:
        """Let the walk run again from the current price (the pinned stretch stays in history)."""
        k = self.step_at(m, self.clock())
        ov = self._override(m, k)
        if ov is None or not ov.hold:
            return
        with self._lock:
            overrides = [o for o in self._overrides.get(m.index, []) if o.step < k]
            overrides.append(Override(k, ov.value, False))
            self._overrides[m.index] = overrides
            self._drop_cached(m)

    def make_one_sided(self, m: Market) -> None:
        with self._lock:
            self._one_sided.add(m.index)
            self._drop_cached(m)

    def forget_history(self, before: float, token_id: str | None = None) -> None:
        with self._lock:
            if token_id is None:
                self._forget_all = before
            else:
                self._forget[token_id] = before

    def _drop_cached(self, m: Market) -> None:
        # Cache keys carry the override count, but a replaced override can keep the same count.
        self._quotes = {k: v for k, v in self._quotes.items() if k[0] != m.index}
        self._books = {k: v for k, v in self._books.items() if k[0] != m.index}
