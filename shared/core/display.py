"""Polymarket's display price, written once: the API's quotes and its lists both apply it.

The site shows the midpoint of the best bid and ask, unless the spread is wider than 0.10 (or
there is no two-sided book), then the last trade price.
"""

from __future__ import annotations

from decimal import Decimal

DISPLAY_SPREAD_LIMIT = Decimal("0.10")

PRICE_RULE_MIDPOINT = "midpoint"
PRICE_RULE_LAST_TRADE = "last_trade"
PRICE_RULE_LAST_KNOWN = "last_known"  # closed book: the last price we know of
PRICE_RULE_NONE = "none"  # no price: no two-sided book and no trade yet (``price`` is null)
PRICE_RULE_RESOLVED = "resolved"  # settled: 1 for the winner, 0 for the others
PRICE_RULE_OUTCOME_PRICES = "outcome_prices"  # Gamma's outcomePrices (no book fields to apply the rule to)


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
