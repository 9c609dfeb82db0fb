"""SQL of the events feature: the ``events`` table (written with the markets, by
``shared.markets.store.upsert_markets``) read back for the in-memory catalogue and one event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2.extensions

from shared.db.database import Cursor
from shared.markets import store as market_store  # its list query: an event's markets read as the list's

EVENT_COLUMNS = (
    "event_id, slug, title, description, image, icon, start_date, end_date, volume, volume_24h, liquidity, "
    "open_interest, competitive, neg_risk, closed, tags, tag_labels, updated_at"
)


def load_events(cur: Cursor, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored rows of these events (those the markets catalogue's markets name)."""
    # A plain cursor: tens of thousands of dicts by zip() cost a fraction of RealDictRow's.
    with cur.connection.cursor() as plain:
        psycopg2.extensions.register_type(market_store.TOLERANT_TIMESTAMPTZ, plain)
        plain.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY(%s)", (list(event_ids),))
        assert plain.description is not None, "a SELECT always describes its columns"
        names = [column.name for column in plain.description]
        return [dict(zip(names, row, strict=True)) for row in plain.fetchall()]


def event_memberships(cur: Cursor) -> list[tuple[str, str]]:
    """(condition id, event id) of every stored market with an event."""
    with cur.connection.cursor() as plain:
        plain.execute("SELECT condition_id, event_id FROM markets WHERE event_id IS NOT NULL")
        return [(condition_id, event_id) for condition_id, event_id in plain.fetchall()]


def events_fingerprint(cur: Cursor) -> str:
    """Changes whenever a stored event row does (every write gives a row a new xmin)."""
    cur.execute("SELECT concat_ws('|', count(*), max(updated_at)::text, sum(xmin::text::bigint)) AS f FROM events")
    row = cur.fetchone()
    assert row is not None  # an aggregate: always one row
    return str(row["f"])


def find_event(cur: Cursor, ref: str) -> dict[str, Any] | None:
    """The stored event with this Gamma id, else with this slug (ids are digits; a slug made of
    digits only is still found when no event has it as its id). Unreadable timestamps as in
    ``load_markets``."""
    psycopg2.extensions.register_type(market_store.TOLERANT_TIMESTAMPTZ, cur)
    cur.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = %(ref)s OR slug = %(ref)s "
        "ORDER BY (event_id = %(ref)s) DESC, updated_at DESC LIMIT 1",
        {"ref": ref},
    )
    row = cur.fetchone()
    return dict(row) if row else None


def event_market_ids(cur: Cursor, event_id: str) -> list[str]:
    cur.execute("SELECT condition_id FROM markets WHERE event_id = %s ORDER BY condition_id", (event_id,))
    return [row["condition_id"] for row in cur.fetchall()]


def event_markets(cur: Cursor, event_id: str) -> list[dict[str, Any]]:
    """The stored markets of one event, as ``load_markets`` reads them (list columns, unreadable
    timestamps marked)."""
    psycopg2.extensions.register_type(market_store.TOLERANT_TIMESTAMPTZ, cur)
    cur.execute(market_store.SUMMARY_SQL.format(extra="")
                + " WHERE m.event_id = %s", (event_id,))
    return [dict(row) for row in cur.fetchall()]
