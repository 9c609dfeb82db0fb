"""What one refresh records of one market: its first outcome's display price (Polymarket's
rule, ``shared.core.display``, on Gamma's best bid, best ask and last trade, as the lists show
it; Gamma's outcome price when the rule gives none), the bid, ask and last trade to recompute
it, and the market's cumulative volume. The second outcome of a binary market is the
complement, so it is not stored.

A capture that is not sound (a price outside [0, 1] or not finite, a negative or absurd volume,
no price at all, not a binary market) is a ``BadCapture``: skipped and counted, never stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.core.display import display_price
from shared.history.points import TICKS, UNKNOWN
from shared.markets.rows import MAX_AMOUNT, MarketRecord


class BadCapture(ValueError):
    """``reason``: a short label the refresh counts by (``price``, ``volume``, ``outcomes``...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Capture:
    condition_id: str
    token_0: str | None
    token_1: str | None
    price: int  # ticks
    bid: int  # ticks, UNKNOWN if none
    ask: int
    last: int
    volume: int  # whole USDC, UNKNOWN if none


def ticks(value: Any, what: str = "price") -> int:
    """A price in [0, 1] as ticks of 1/10,000 (rounded half even); ``UNKNOWN`` for None."""
    if value is None:
        return UNKNOWN
    number = _finite(value, what)
    if not 0 <= number <= 1:
        raise BadCapture(what)
    return int((number * TICKS).to_integral_value())


def dollars(value: Any) -> int:
    """A cumulative volume in whole USDC (cents are noise to a candle, and cost a byte a stored
    point); ``UNKNOWN`` for None."""
    if value is None:
        return UNKNOWN
    number = _finite(value, "volume")
    if not 0 <= number < MAX_AMOUNT:
        raise BadCapture("volume")
    return int(number.to_integral_value())


def _finite(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise BadCapture(what)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadCapture(what)
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise BadCapture(what) from None
    if not number.is_finite():
        raise BadCapture(what)
    return number


def capture_of(record: MarketRecord) -> Capture:
    """The capture of an open market's record; ``BadCapture`` for one that cannot be stored."""
    if len(record.outcomes) != 2:
        raise BadCapture("outcomes")
    bid, ask = ticks(record.best_bid, "bid"), ticks(record.best_ask, "ask")
    last = ticks(record.last_trade_price, "last")
    best_bid, best_ask = record.best_bid, record.best_ask  # finite and in [0, 1]: ticks() checked them
    midpoint = spread = None
    if best_bid is not None and best_ask is not None and best_bid <= best_ask:  # as snapshot.outcome_prices
        midpoint, spread = (best_bid + best_ask) / 2, best_ask - best_bid
    price, _rule = display_price(midpoint, spread, record.last_trade_price)
    price_ticks = ticks(price if price is not None else record.outcomes[0].price)
    if price_ticks == UNKNOWN:
        raise BadCapture("no_price")
    return Capture(record.condition_id, record.outcomes[0].token_id, record.outcomes[1].token_id,
                   price_ticks, bid, ask, last, dollars(record.volume))
