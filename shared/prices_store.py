"""SQL for price history (``price_samples``): batched idempotent inserts, last known prices,
history reads bucketed by fidelity, token lookups, and retention in short batches.

Functions take a cursor so the caller decides the transaction. ``price_samples`` has no foreign
key to the markets tables on purpose: a sample is kept for any token, known or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg2.extras

from shared.database import Cursor

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
        [s.row() for s in samples],
        page_size=len(samples),
        fetch=True,
    )
    return len(rows)


_LAST_SQL = """
SELECT DISTINCT ON (token_id)
       token_id, ts, price, midpoint, best_bid, best_ask, spread, last_trade_price, source
  FROM price_samples
 WHERE token_id = ANY(%s)
 ORDER BY token_id, (source = 'quote') DESC, ts DESC
"""


def last_samples(cur: Cursor, token_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each token's last known quote: its latest quote sample, else its latest history point.

    A quote sample carries every field (bid, ask, spread, last trade) and the display price,
    so it is preferred to a later history point, which only has the midpoint.
    """
    if not token_ids:
        return {}
    cur.execute(_LAST_SQL, (list(token_ids),))
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
        """
        SELECT t, p FROM (
            SELECT DISTINCT ON (floor(extract(epoch FROM ts) / %(period)s))
                   floor(extract(epoch FROM ts))::bigint AS t, COALESCE(midpoint, price) AS p
              FROM price_samples
             WHERE token_id = %(token)s AND ts >= %(start)s AND ts <= %(end)s
             ORDER BY floor(extract(epoch FROM ts) / %(period)s), (source = 'upstream_history') DESC, ts DESC
        ) per_bucket
        ORDER BY t
        """,
        {"token": token_id, "start": start, "end": end, "period": period_s},
    )
    return [(int(row["t"]), float(row["p"])) for row in cur.fetchall()]


def known_tokens(cur: Cursor, token_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Tokens the markets store knows: condition id, outcome label and index, Gamma's price.

    The batch form of ``markets_store.outcome_for_token`` (one round trip for many tokens).
    """
    if not token_ids:
        return {}
    cur.execute(
        """
        SELECT o.token_id, o.condition_id, o.outcome_index, o.outcome, o.price, m.closed, m.in_active_set,
               m.updated_at
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
    return cur.rowcount
