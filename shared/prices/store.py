"""SQL for price history (``price_samples``): batched idempotent inserts, last known prices,
history reads bucketed by fidelity, token lookups, and retention in short batches.

Functions take a cursor so the caller decides the transaction. ``price_samples`` has no foreign
key to the markets tables on purpose: a sample is kept for any token, known or not.

Whatever is stored can be loaded: a sample is checked before it is written (``Sample.problem``),
and reads leave out rows no check would pass (rows written before these checks existed: a time
decades ahead, a price of 12 or NaN), so one such row never hides or replaces the good ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2.extras

from shared.db.database import Cursor
from shared.markets.store import SETTLED_SQL
from shared.prices.quotes import CLOCK_SKEW_ALLOWANCE, EARLIEST_TIME

SOURCE_QUOTE = "quote"
SOURCE_HISTORY = "upstream_history"


@dataclass(frozen=True)
class Sample:
    token_id: str
    ts: datetime
    price: float
    midpoint: float | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    spread: float | None = None
    last_trade_price: float | None = None
    source: str = SOURCE_QUOTE

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.token_id, self.ts)

    def problem(self, now: datetime | None = None) -> str | None:
        """Why this sample must not be stored (it could not be served back), or None."""
        latest = (now or datetime.now(UTC)) + CLOCK_SKEW_ALLOWANCE
        if not EARLIEST_TIME <= self.ts <= latest:
            return "time outside the sane window"
        for name in ("price", "midpoint", "best_bid", "best_ask", "spread", "last_trade_price"):
            value = getattr(self, name)
            low = -1.0 if name == "spread" else 0.0  # a crossed book has a negative spread
            if value is not None and not (math.isfinite(value) and low <= value <= 1.0):
                return f"{name} outside [{low:g}, 1]"
        return None

    def row(self) -> tuple[Any, ...]:
        def d(value: float | None) -> Decimal | None:
            # repr of a float is its shortest round-trip text: 0.425 is stored as 0.425 exactly.
            return None if value is None else Decimal(repr(value))

        return (
            self.token_id, self.ts, d(self.price), d(self.midpoint), d(self.best_bid), d(self.best_ask),
            d(self.spread), d(self.last_trade_price), self.source,
        )


def insert_samples(cur: Cursor, samples: Sequence[Sample]) -> int:
    """Insert in one statement; (token_id, ts) already stored is left alone. Returns rows added."""
    if not samples:
        return 0
    rows = psycopg2.extras.execute_values(
        cur,
        """
        INSERT INTO price_samples
               (token_id, ts, price, midpoint, best_bid, best_ask, spread, last_trade_price, source)
        VALUES %s
        ON CONFLICT (token_id, ts) DO NOTHING
        RETURNING 1
        """,
        # In key order: two instances inserting overlapping batches take the rows' locks in the
        # same order, so neither waits on the other in a cycle (a deadlock, or a lock timeout).
        [s.row() for s in sorted(samples, key=lambda sample: sample.key)],
        page_size=len(samples),
        fetch=True,
    )
    return len(rows)


# The rows ``Sample.problem`` would pass (NaN is above every number in PostgreSQL: BETWEEN
# leaves it out, as it does infinities).
_SERVABLE = """
       ts >= %(earliest)s AND ts <= %(latest)s
   AND price BETWEEN 0 AND 1
   AND (midpoint IS NULL OR midpoint BETWEEN 0 AND 1)
   AND (best_bid IS NULL OR best_bid BETWEEN 0 AND 1)
   AND (best_ask IS NULL OR best_ask BETWEEN 0 AND 1)
   AND (spread IS NULL OR spread BETWEEN -1 AND 1)
   AND (last_trade_price IS NULL OR last_trade_price BETWEEN 0 AND 1)
"""
# Retention deletes rows dated further ahead than this: no clock is that far off.
MISDATED_AHEAD = timedelta(days=1)


def _window(latest: datetime | None = None) -> dict[str, datetime]:
    return {"earliest": EARLIEST_TIME, "latest": latest or datetime.now(UTC) + CLOCK_SKEW_ALLOWANCE}


_LAST_SQL = f"""
SELECT DISTINCT ON (token_id)
       token_id, ts, price, midpoint, best_bid, best_ask, spread, last_trade_price, source
  FROM price_samples
 WHERE token_id = ANY(%(tokens)s) AND {_SERVABLE}
 ORDER BY token_id, (source = 'quote') DESC, ts DESC
"""


def last_samples(cur: Cursor, token_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each token's last known quote: its latest quote sample, else its latest history point.

    A quote sample carries every field (bid, ask, spread, last trade) and the display price,
    so it is preferred to a later history point, which only has the midpoint.
    """
    if not token_ids:
        return {}
    cur.execute(_LAST_SQL, {"tokens": list(token_ids), **_window()})
    return {row["token_id"]: dict(row) for row in cur.fetchall()}


def history_points(
    cur: Cursor, token_id: str, start: datetime, end: datetime, period_s: int
) -> list[tuple[int, float]]:
    """One stored point per ``period_s`` bucket in [start, end], ascending: the latest stored
    upstream history point of the bucket, else its latest quote sample.

    Preferring upstream's own points means that, once upstream forgets a stretch, the same
    request gets the series upstream used to give. The series is of midpoints, as upstream's
    ``/prices-history`` is; a sample without one (a one-sided book) contributes its price.
    """
    cur.execute(
        f"""
        SELECT t, p FROM (
            SELECT DISTINCT ON (floor(extract(epoch FROM ts) / %(period)s))
                   floor(extract(epoch FROM ts))::bigint AS t, COALESCE(midpoint, price) AS p
              FROM price_samples
             WHERE token_id = %(token)s AND ts >= %(start)s AND ts <= %(end)s AND {_SERVABLE}
             ORDER BY floor(extract(epoch FROM ts) / %(period)s), (source = 'upstream_history') DESC, ts DESC
        ) per_bucket
        ORDER BY t
        """,
        {"token": token_id, "start": start, "end": end, "period": period_s, **_window()},
    )
    return [(int(row["t"]), float(row["p"])) for row in cur.fetchall()]


def known_tokens(cur: Cursor, token_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Tokens the markets store knows: condition id, outcome label and index, Gamma's price, and
    whether its market is settled (``settled``: then ``price`` is 1 or 0, final since
    ``resolved_at``).

    The batch form of ``markets_store.outcome_for_token`` (one round trip for many tokens).
    """
    if not token_ids:
        return {}
    cur.execute(
        f"""
        SELECT o.token_id, o.condition_id, o.outcome_index, o.outcome, o.price, m.closed, m.in_active_set,
               m.updated_at, COALESCE({SETTLED_SQL}, false) AS settled, m.closed_time AS resolved_at
          FROM outcome_tokens o JOIN markets m USING (condition_id)
         WHERE o.token_id = ANY(%s)
        """,
        (list(token_ids),),
    )
    return {row["token_id"]: dict(row) for row in cur.fetchall()}


def delete_older_than(cur: Cursor, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` samples older than ``cutoff``: one short transaction per batch,
    so retention never holds locks on many rows or for long (uses the ``ts`` index)."""
    cur.execute(
        """
        DELETE FROM price_samples
         WHERE ctid = ANY(ARRAY(SELECT ctid FROM price_samples WHERE ts < %s LIMIT %s))
        """,
        (cutoff, limit),
    )
    return int(cur.rowcount)


def delete_misdated(cur: Cursor, limit: int, now: datetime | None = None) -> int:
    """Delete at most ``limit`` samples dated before 2020 or more than a day ahead (rows written
    before times were checked: retention by age would keep a row dated 2076 forever). Uses the
    ``ts`` index; rows with out-of-range prices are left to retention (reads skip them)."""
    cur.execute(
        """
        DELETE FROM price_samples
         WHERE ctid = ANY(ARRAY(SELECT ctid FROM price_samples WHERE ts < %s OR ts > %s LIMIT %s))
        """,
        (EARLIEST_TIME, (now or datetime.now(UTC)) + MISDATED_AHEAD, limit),
    )
    return int(cur.rowcount)
