"""Writing captures: what each catalogue refresh records, and a resolved market's final point.

Both take the caller's cursor: the refresh calls ``record_refresh`` inside its own transaction,
so the history holds exactly the catalogue that refresh stored, or nothing if it rolled back.
Only markets whose values changed since their last row get a new row (``history_raw``); reads
carry the last value forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extras

from shared.db.database import Cursor
from shared.history.capture import BadCapture, Capture, capture_of, ticks
from shared.history.points import UNKNOWN
from shared.markets.rows import MarketRecord

log = logging.getLogger("polymarket_api.history")

MAX_SKIP_WARNINGS = 20  # per CaptureCounts: the rest are counted only


@dataclass
class CaptureCounts:
    """What a refresh's captures came to. ``skipped``: by reason (``price``, ``bid``, ``ask``,
    ``last``, ``volume``, ``outcomes``, ``no_price``, ``refused``: the database would not take it)."""

    captured: int = 0  # sound captures of open markets
    written: int = 0  # of those, rows written (the values changed)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip(self, condition_id: str, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if self.skipped_total <= MAX_SKIP_WARNINGS:
            log.warning("price capture of %s skipped (%s)", condition_id, reason)

    def add(self, other: CaptureCounts) -> None:
        self.captured += other.captured
        self.written += other.written
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


# A capture the database (or the driver) cannot take; a lost connection or a timeout is not
# one of these and fails the refresh, as for the markets themselves.
_ROW_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)


def record_refresh(cur: Cursor, records: Sequence[MarketRecord], at: datetime) -> CaptureCounts:
    """Record the open markets among ``records`` (a page a refresh just stored) as captured at
    ``at`` (timezone-aware). A bad capture is skipped and counted, and so is one the database
    refuses (``refused``): never the page, never the refresh."""
    counts = CaptureCounts()
    captures: dict[str, Capture] = {}
    for record in records:
        if record.closed:
            continue
        try:
            capture = capture_of(record)
        except BadCapture as bad:
            counts.skip(record.condition_id, bad.reason)
            continue
        if capture.token_0 is not None:  # no order book, no token: nothing a read could ask for
            captures[capture.condition_id] = capture
    if not captures:
        return counts
    cur.execute("SAVEPOINT history_page")
    try:
        counts.written = _write(cur, list(captures.values()), at)
        counts.captured = len(captures)
    except _ROW_ERRORS:
        # Should the database refuse the page, each capture is tried alone: one is skipped, not the page.
        cur.execute("ROLLBACK TO SAVEPOINT history_page")
        for capture in captures.values():
            cur.execute("SAVEPOINT history_capture")
            try:
                counts.written += _write(cur, [capture], at)
            except _ROW_ERRORS as error:
                cur.execute("ROLLBACK TO SAVEPOINT history_capture")
                counts.skip(capture.condition_id, "refused")
                log.debug("capture refused: %s", type(error).__name__)
            else:
                cur.execute("RELEASE SAVEPOINT history_capture")
                counts.captured += 1
    cur.execute("RELEASE SAVEPOINT history_page")
    return counts


def _at_sql(cur: Cursor, at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("a capture time without a time zone")
    return cur.mogrify("%s::timestamptz", (at,)).decode()


def _write(cur: Cursor, captures: list[Capture], at: datetime) -> int:
    psycopg2.extras.execute_values(
        cur,
        """
        INSERT INTO history_series (condition_id, token_0, token_1) VALUES %s
        ON CONFLICT (condition_id) DO UPDATE SET token_0 = EXCLUDED.token_0, token_1 = EXCLUDED.token_1
         WHERE (history_series.token_0, history_series.token_1) IS DISTINCT FROM (EXCLUDED.token_0, EXCLUDED.token_1)
        """,
        [(c.condition_id, c.token_0, c.token_1) for c in captures],
        page_size=len(captures),
    )
    when = _at_sql(cur, at)
    # One statement: what changed (and is newer than the series' last row) gets a raw row and
    # becomes the series' last values; the capture time is remembered for carry-forward.
    rows = psycopg2.extras.execute_values(
        cur,
        f"""
        WITH cap (condition_id, price, bid, ask, last, volume) AS (VALUES %s),
        changed AS (
            SELECT s.series_id, c.price, c.bid, c.ask, c.last, c.volume
              FROM cap c JOIN history_series s USING (condition_id)
             WHERE s.settled_at IS NULL AND (s.last_at IS NULL OR s.last_at < {when})
               AND (s.last_price, s.last_bid, s.last_ask, s.last_trade, s.last_volume)
                   IS DISTINCT FROM (c.price::smallint, c.bid::smallint, c.ask::smallint, c.last::smallint,
                                     c.volume::bigint)
        ),
        raw AS (
            INSERT INTO history_raw (series_id, ts, price, bid, ask, last, volume)
            SELECT series_id, {when}, price, bid, ask, last, volume FROM changed
        ),
        state AS (
            INSERT INTO history_state (id, last_capture_at) VALUES (1, {when})
            ON CONFLICT (id) DO UPDATE SET last_capture_at = GREATEST(history_state.last_capture_at,
                                                                      EXCLUDED.last_capture_at)
        )
        UPDATE history_series s
           SET first_at = COALESCE(s.first_at, {when}), last_at = {when}, last_price = c.price,
               last_bid = c.bid, last_ask = c.ask, last_trade = c.last, last_volume = c.volume
          FROM changed c WHERE s.series_id = c.series_id
        RETURNING s.series_id
        """,
        [(c.condition_id, c.price, c.bid, c.ask, c.last, c.volume) for c in captures],
        page_size=len(captures),
        fetch=True,
    )
    return len(rows)


def record_settled(cur: Cursor, condition_id: str, prices: Sequence[Any], at: datetime) -> bool:
    """A resolved market's final point: ``prices`` per outcome (1 for the winner, 0 for the
    other, as Gamma settles them), at ``at`` (or just after the market's last point, should
    that be later). Later captures of the market are ignored. False when there is nothing to
    record: already settled, not a binary market, or no outcome tokens stored for a market
    never captured. ``BadCapture`` for prices outside [0, 1]."""
    if len(prices) != 2:
        return False
    price = ticks(prices[0])
    ticks(prices[1])  # both must be sound
    if price == UNKNOWN:
        raise BadCapture("price")
    when = _at_sql(cur, at)
    cur.execute(
        """
        INSERT INTO history_series (condition_id, token_0, token_1)
        SELECT %(c)s, max(token_id) FILTER (WHERE outcome_index = 0), max(token_id) FILTER (WHERE outcome_index = 1)
          FROM outcome_tokens WHERE condition_id = %(c)s HAVING count(*) > 0
        ON CONFLICT (condition_id) DO NOTHING
        """,
        {"c": condition_id},
    )
    cur.execute(
        f"""
        WITH target AS (
            SELECT series_id, GREATEST({when}, last_at + interval '1 second') AS ts, COALESCE(last_volume, -1) AS volume
              FROM history_series WHERE condition_id = %(c)s AND settled_at IS NULL FOR UPDATE
        ),
        raw AS (
            INSERT INTO history_raw (series_id, ts, price, bid, ask, last, volume)
            SELECT series_id, ts, %(p)s, -1, -1, -1, volume FROM target
        )
        UPDATE history_series s
           SET settled_at = t.ts, first_at = COALESCE(s.first_at, t.ts), last_at = t.ts, last_price = %(p)s,
               last_bid = -1, last_ask = -1, last_trade = -1
          FROM target t WHERE s.series_id = t.series_id
        RETURNING s.series_id
        """,
        {"c": condition_id, "p": price},
    )
    return cur.fetchone() is not None
