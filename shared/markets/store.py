"""SQL for the markets catalogue: batched upserts, the active set, snapshots, freshness state.

Functions take a cursor so the caller decides the transaction (a whole refresh is one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from shared.db.database import Cursor
from shared.markets.rows import EventRecord, MarketRecord

log = logging.getLogger("polymarket_api.markets")

MARKETS_DATASET = "markets"
# Arbitrary constant: the advisory lock every instance takes to refresh the catalogue.
REFRESH_LOCK_KEY = 7_336_104_212

_MARKET_COLUMNS = (
    "condition_id", "gamma_id", "slug", "question", "description", "category", "tags", "event_id",
    "event_slug", "event_title", "end_date", "closed", "accepting_orders", "enable_order_book",
    "neg_risk", "volume", "volume_24h", "liquidity", "best_bid", "best_ask", "last_trade_price",
    "spread", "one_day_price_change", "tick_size", "group_item_title", "neg_risk_other", "image", "icon",
    "closed_time", "uma_statuses", "tag_labels", "content_hash",
)
_EVENT_COLUMNS = (
    "event_id", "slug", "title", "description", "image", "icon", "start_date", "end_date", "volume", "volume_24h",
    "liquidity", "open_interest", "competitive", "neg_risk", "closed", "tags", "tag_labels", "content_hash",
)
_UPDATABLE = [c for c in _MARKET_COLUMNS if c != "condition_id"]


def _market_row(record: MarketRecord) -> tuple[Any, ...]:
    values = {**{c: getattr(record, c, None) for c in _MARKET_COLUMNS if c != "content_hash"}}
    values["tags"] = list(record.tags)
    values["uma_statuses"] = list(record.uma_statuses)
    values["tag_labels"] = list(record.tag_labels)
    values["content_hash"] = record.content_hash()
    return tuple(values[c] for c in _MARKET_COLUMNS)


def _event_row(event: EventRecord) -> tuple[Any, ...]:
    values = {c: getattr(event, c, None) for c in _EVENT_COLUMNS}
    values.update(event_id=event.id, tags=list(event.tags), tag_labels=list(event.tag_labels),
                  content_hash=event.content_hash())
    return tuple(values[c] for c in _EVENT_COLUMNS)


def upsert_markets(cur: Cursor, records: Sequence[MarketRecord], rejected: list[str] | None = None, *,
                   in_active_set: bool = True) -> int:
    """Insert or update a page of markets in a few round trips; returns how many changed.

    ``in_active_set``: the page is (part of) Gamma's open set, as a refresh reads it; False for
    markets looked up one by one after they left it (closed, resolved, or an old link), which
    also marks them checked (``resolution_checked_at``). Each page's events are written too.

    Unchanged rows (same content hash, still active) are not written, so a refresh with the
    same data changes nothing. Records are validated (``shared.markets.rows``) and carry
    distinct ids; a Gamma id or token id still held by a stored market outside this page
    passes to the page's market (the current crawl wins over older rows). Should the database
    refuse a page anyway, it is written row by row and each refused row is skipped, its
    condition id appended to ``rejected``: one row never fails the page.
    """
    if not records:
        return 0
    cur.execute("SAVEPOINT markets_page")
    try:
        changed = _write_page(cur, records, in_active_set)
    except _ROW_ERRORS:
        cur.execute("ROLLBACK TO SAVEPOINT markets_page")
        changed = 0
        for record in records:
            cur.execute("SAVEPOINT markets_row")
            try:
                changed += _write_page(cur, [record], in_active_set)
            except _ROW_ERRORS as error:
                cur.execute("ROLLBACK TO SAVEPOINT markets_row")
                log.warning("market %s skipped: the database refused it (%s)", record.condition_id,
                            type(error).__name__)
                if rejected is not None:
                    rejected.append(record.condition_id)
            else:
                cur.execute("RELEASE SAVEPOINT markets_row")
    cur.execute("RELEASE SAVEPOINT markets_page")
    return changed


# A row the database (or the driver, before sending) cannot take; never a lost connection or a
# timeout (OperationalError), which must fail the refresh.
_ROW_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)


def _write_events(cur: Cursor, records: Sequence[MarketRecord]) -> None:
    """The page's parent events (the first row naming an event gives it), unchanged ones not rewritten."""
    events: dict[str, EventRecord] = {}
    for record in records:
        if record.event is not None:
            events.setdefault(record.event.id, record.event)
    if not events:
        return
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _EVENT_COLUMNS if c != "event_id")
    psycopg2.extras.execute_values(
        cur,
        f"""
        INSERT INTO events ({", ".join(_EVENT_COLUMNS)}) VALUES %s
        ON CONFLICT (event_id) DO UPDATE SET {updates}, updated_at = now()
         WHERE events.content_hash IS DISTINCT FROM EXCLUDED.content_hash
        """,
        [_event_row(e) for e in events.values()],
        page_size=len(events),
    )


def _write_page(cur: Cursor, records: Sequence[MarketRecord], in_active_set: bool = True) -> int:
    _write_events(cur, records)
    checked_at = datetime.now(UTC)
    gamma_ids = [(r.condition_id, r.gamma_id) for r in records if r.gamma_id is not None]
    if gamma_ids:
        # 'released': the market that gave its id up is rewritten when Gamma next sends it.
        psycopg2.extras.execute_values(
            cur,
            """
            UPDATE markets AS m SET gamma_id = NULL, content_hash = 'released'
              FROM (VALUES %s) AS p (condition_id, gamma_id)
             WHERE m.gamma_id = p.gamma_id AND m.condition_id <> p.condition_id
            """,
            gamma_ids,
            page_size=len(gamma_ids),
        )
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATABLE)
    changed = psycopg2.extras.execute_values(
        cur,
        f"""
        INSERT INTO markets ({", ".join(_MARKET_COLUMNS)}, in_active_set, resolution_checked_at) VALUES %s
        ON CONFLICT (condition_id) DO UPDATE
           SET {updates}, in_active_set = EXCLUDED.in_active_set, updated_at = now(),
               resolution_checked_at = COALESCE(EXCLUDED.resolution_checked_at, markets.resolution_checked_at)
         WHERE markets.content_hash IS DISTINCT FROM EXCLUDED.content_hash
            OR markets.in_active_set IS DISTINCT FROM EXCLUDED.in_active_set
        RETURNING condition_id
        """,
        [(*_market_row(r), in_active_set, None if in_active_set else checked_at) for r in records],
        page_size=len(records),
        fetch=True,
    )
    changed_ids = {row["condition_id"] for row in changed}
    outcome_rows = [
        (r.condition_id, o.index, o.token_id, o.label, o.price)
        for r in records
        if r.condition_id in changed_ids
        for o in r.outcomes
    ]
    if changed_ids:
        # Outcomes follow their market: rewrite them only for markets that changed. A token id
        # another stored market still holds passes to this one (that market is rewritten later).
        tokens = [o[2] for o in outcome_rows if o[2] is not None]
        cur.execute(
            """
            DELETE FROM outcome_tokens WHERE condition_id = ANY(%s);
            WITH released AS (
                UPDATE outcome_tokens SET token_id = NULL WHERE token_id = ANY(%s) RETURNING condition_id
            )
            UPDATE markets SET content_hash = 'released' WHERE condition_id IN (SELECT condition_id FROM released)
            """,
            (list(changed_ids), tokens),
        )
    if outcome_rows:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO outcome_tokens (condition_id, outcome_index, token_id, outcome, price) VALUES %s",
            outcome_rows,
            page_size=len(outcome_rows),
        )
    return len(changed_ids)


def insert_new_markets(cur: Cursor, records: Sequence[MarketRecord], rejected: list[str] | None = None) -> int:
    """Store markets fetched on demand (an old link, a lookup) that are not stored yet, outside
    the active set: the refresh alone decides what is open, so a stored market (the catalogue's,
    maybe active) stays as the refresh wrote it. Returns how many were new."""
    records = list({r.condition_id: r for r in records}.values())  # the first of a condition id wins
    if not records:
        return 0
    cur.execute("SELECT condition_id FROM markets WHERE condition_id = ANY(%s)", ([r.condition_id for r in records],))
    stored = {row["condition_id"] for row in cur.fetchall()}
    new = [r for r in records if r.condition_id not in stored]
    upsert_markets(cur, new, rejected, in_active_set=False)
    return len(new)


def mark_missing_inactive(cur: Cursor, seen: Sequence[str]) -> int:
    """Markets that left the active set stay stored, flagged as no longer active."""
    cur.execute(
        """
        UPDATE markets SET in_active_set = false, accepting_orders = false, updated_at = now()
         WHERE in_active_set AND NOT (condition_id = ANY(%s))
        """,
        (list(seen),),
    )
    return cur.rowcount


def mark_for_rewrite(cur: Cursor, condition_ids: Sequence[str]) -> None:
    """The next refresh rewrites these markets even if Gamma's row is unchanged."""
    cur.execute("UPDATE markets SET content_hash = 'unloadable' WHERE condition_id = ANY(%s)", (list(condition_ids),))


def active_count(cur: Cursor) -> int:
    cur.execute("SELECT count(*) AS n FROM markets WHERE in_active_set")
    row = cur.fetchone()
    assert row is not None, "an aggregate without GROUP BY returns one row"
    return int(row["n"])


def try_refresh_lock(cur: Cursor) -> bool:
    """Transaction-scoped, so it is released at commit/rollback and is safe through PgBouncer."""
    cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (REFRESH_LOCK_KEY,))
    row = cur.fetchone()
    assert row is not None, "a SELECT without FROM returns one row"
    return bool(row["locked"])


def transaction_time(cur: Cursor) -> datetime:
    """The transaction's start (PostgreSQL's now()): what ``record_success`` stores as refreshed_at."""
    cur.execute("SELECT now() AS at")
    row = cur.fetchone()
    assert row is not None, "a SELECT without FROM returns one row"
    return row["at"]


def read_state(cur: Cursor, dataset: str = MARKETS_DATASET) -> dict[str, Any] | None:
    cur.execute(
        "SELECT refreshed_at, last_attempt_at, last_error, last_error_at, now() AS db_now "
        "FROM dataset_state WHERE name = %s",
        (dataset,),
    )
    row = cur.fetchone()
    return dict(row) if row else None


def record_success(cur: Cursor, dataset: str = MARKETS_DATASET) -> datetime:
    cur.execute(
        """
        INSERT INTO dataset_state (name, refreshed_at, last_attempt_at) VALUES (%s, now(), now())
        ON CONFLICT (name) DO UPDATE SET refreshed_at = now(), last_attempt_at = now()
        RETURNING refreshed_at
        """,
        (dataset,),
    )
    row = cur.fetchone()
    assert row is not None, "an upsert's RETURNING gives its one row, inserted or updated"
    return row["refreshed_at"]


def record_attempt(cur: Cursor, dataset: str = MARKETS_DATASET) -> None:
    cur.execute(
        """
        INSERT INTO dataset_state (name, last_attempt_at) VALUES (%s, now())
        ON CONFLICT (name) DO UPDATE SET last_attempt_at = now()
        """,
        (dataset,),
    )


def record_failure(cur: Cursor, reason: str, dataset: str = MARKETS_DATASET) -> None:
    cur.execute(
        """
        INSERT INTO dataset_state (name, last_attempt_at, last_error, last_error_at)
        VALUES (%s, now(), %s, now())
        ON CONFLICT (name) DO UPDATE
           SET last_attempt_at = now(), last_error = EXCLUDED.last_error, last_error_at = now()
        """,
        (dataset, reason),
    )


SUMMARY_SQL = """
SELECT m.condition_id, m.gamma_id, m.slug, m.question, m.category, m.tags, m.event_id, m.event_slug,
       m.event_title, m.end_date, m.closed, m.accepting_orders, m.in_active_set, m.volume, m.volume_24h,
       m.liquidity, m.best_bid, m.best_ask, m.last_trade_price, m.spread, m.one_day_price_change,
       m.group_item_title, m.neg_risk_other, m.image, m.icon, m.closed_time, m.uma_statuses, m.tag_labels,
       m.updated_at {extra},
       COALESCE((SELECT json_agg(json_build_object(
                    'index', o.outcome_index, 'outcome', o.outcome, 'token_id', o.token_id, 'price', o.price)
                    ORDER BY o.outcome_index)
                 FROM outcome_tokens o WHERE o.condition_id = m.condition_id), '[]') AS outcomes
  FROM markets m
"""


class Unreadable:
    """A stored value the driver cannot turn into Python (a timestamp in year 10000 or BC)."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE = Unreadable()


def _timestamptz_or_unreadable(
    value: str | bytes | None, cur: psycopg2.extensions.cursor
) -> datetime | Unreadable | None:
    try:
        return psycopg2.extensions.PYDATETIMETZ(value, cur)
    except (ValueError, OverflowError, psycopg2.DataError):
        return UNREADABLE


# Registered per cursor: one bad value marks its row, instead of failing the whole fetch.
TOLERANT_TIMESTAMPTZ = psycopg2.extensions.new_type(
    psycopg2.extensions.PYDATETIMETZ.values, "TIMESTAMPTZ_OR_UNREADABLE", _timestamptz_or_unreadable
)


def load_markets(cur: Cursor, inactive_window_days: int) -> list[dict[str, Any]]:
    """The active set plus markets that left it within the window (list views, no descriptions).

    A timestamp Python cannot hold comes back as ``UNREADABLE``; the caller skips that row.
    """
    # A plain cursor: building 50,000 dicts with zip() is several times cheaper than RealDictRow.
    with cur.connection.cursor() as plain:
        psycopg2.extensions.register_type(TOLERANT_TIMESTAMPTZ, plain)
        plain.execute(
            SUMMARY_SQL.format(extra="")
            + " WHERE m.in_active_set OR m.updated_at > now() - make_interval(days => %s)",
            (inactive_window_days,),
        )
        assert plain.description is not None, "a SELECT always describes its columns"
        names = [column.name for column in plain.description]
        return [dict(zip(names, row, strict=True)) for row in plain.fetchall()]


def get_market(cur: Cursor, condition_id: str) -> dict[str, Any] | None:
    """One market with its detail fields; unreadable timestamps as in ``load_markets``."""
    psycopg2.extensions.register_type(TOLERANT_TIMESTAMPTZ, cur)
    cur.execute(
        SUMMARY_SQL.format(extra=", m.description, m.enable_order_book, m.neg_risk, m.tick_size")
        + " WHERE m.condition_id = %s",
        (condition_id,),
    )
    row = cur.fetchone()
    return dict(row) if row else None


def outcome_for_token(cur: Cursor, token_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT condition_id, outcome_index, outcome FROM outcome_tokens WHERE token_id = %s", (token_id,)
    )
    row = cur.fetchone()
    return dict(row) if row else None


# What a snapshot is built from, in one value: any change to a served row (every write to a row
# gives it a new xmin; an insert or delete changes a count) or to the window's membership gives
# another fingerprint. Text, so an unreadable timestamp cannot fail it. The rows query itself is
# planned (never run: WHERE false), so a schema the rows cannot be read from fails here as it
# would there, instead of a stored copy hiding it.
_FINGERPRINT_TEMPLATE = """
SELECT concat_ws('|', m.n, m.last_change, m.xmins, o.n, o.xmins, (SELECT count(*) FROM ({readable}) r)) AS fingerprint
  FROM (SELECT count(*) AS n, max(updated_at)::text AS last_change, sum(xmin::text::bigint) AS xmins
          FROM markets WHERE in_active_set OR updated_at > now() - make_interval(days => %(days)s)) m,
       (SELECT count(*) AS n, sum(xmin::text::bigint) AS xmins FROM outcome_tokens) o
"""


_FINGERPRINT_SQL = _FINGERPRINT_TEMPLATE.format(readable=SUMMARY_SQL.format(extra="") + " WHERE false")


class UnreadableCopy(ValueError):
    """A binary COPY answer that is not the one row asked for."""


def current_fingerprint(cur: Cursor, inactive_window_days: int) -> str:
    """The fingerprint of the rows a compact snapshot would be built from now."""
    cur.execute(_FINGERPRINT_SQL, {"days": inactive_window_days})
    row = cur.fetchone()
    assert row is not None  # an aggregate: always one row
    return str(row["fingerprint"])


def read_stored(cur: Cursor, fingerprint: str) -> tuple[str | None, memoryview | None]:
    """(the stored snapshot's fingerprint, its payload when that is ``fingerprint``); (None, None)
    without one.

    By binary COPY: the raw bytes, not bytea's hex text (twice the size, then unescaped)."""
    sink = _Sink()
    copy = ("COPY (SELECT fingerprint, payload FROM market_snapshot WHERE id = 1 AND fingerprint = {}) "
            "TO STDOUT (FORMAT binary)")
    cur.copy_expert(copy.format(cur.mogrify("%s", (fingerprint,)).decode()), sink, size=1 << 20)
    data = sink.parts[0] if len(sink.parts) == 1 else b"".join(sink.parts)
    sink.parts.clear()  # one copy of the payload in memory, not two
    try:
        stored, payload = _copied_row(data)
    except UnreadableCopy as error:  # never expected of PostgreSQL: the rows answer instead
        log.warning("stored catalogue snapshot unreadable (%s)", error)
        return None, None
    if stored is None:  # none stored, or another: which one is counted
        cur.execute("SELECT fingerprint FROM market_snapshot WHERE id = 1")
        row = cur.fetchone()
        stored = row["fingerprint"] if row else None
    return stored, payload


def write_payload(cur: Cursor, fingerprint: str, parts: list[bytes]) -> None:
    """Store the payload (``encode_parts``) by binary COPY, streamed in chunks, where a bytea
    parameter would be escaped to hex text in memory (twice the payload, then copied into the
    query: +140 MB peak at 50,000 markets)."""
    cur.execute("CREATE TEMP TABLE compact_upload (fingerprint text, payload bytea) ON COMMIT DROP")
    fingerprint_bytes = fingerprint.encode()
    head = b"".join([_COPY_SIGNATURE, bytes(8), (2).to_bytes(2, "big"), len(fingerprint_bytes).to_bytes(4, "big"),
                     fingerprint_bytes, sum(map(len, parts)).to_bytes(4, "big")])
    cur.copy_expert("COPY compact_upload FROM STDIN (FORMAT binary)", _Source([head, *parts, b"\xff\xff"]),
                    size=1 << 20)
    cur.execute(
        """
        INSERT INTO market_snapshot (id, fingerprint, payload) SELECT 1, fingerprint, payload FROM compact_upload
        ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, payload = EXCLUDED.payload,
                                       built_at = now()
        """
    )


class _Source:
    """A file for copy_expert to read: the parts in turn, in slices, never joined."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = [memoryview(part) for part in parts]
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        while self._parts and self._at >= len(self._parts[0]):
            self._parts.pop(0)
            self._at = 0
        if not self._parts:
            return b""
        part = self._parts[0]
        end = len(part) if size < 0 else self._at + size
        chunk = part[self._at : end]
        self._at += len(chunk)
        return bytes(chunk)

    def readline(self, size: int = -1) -> bytes:  # copy_expert asks for read() only; a file has both
        return self.read(size)


class _Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _copied_row(data: bytes) -> tuple[str | None, memoryview | None]:
    """(text, bytea) of a binary COPY's only row; (None, None) without a row."""
    if not data.startswith(_COPY_SIGNATURE):
        raise UnreadableCopy("not a binary COPY")
    at = len(_COPY_SIGNATURE) + 4
    at += 4 + int.from_bytes(data[at : at + 4], "big")  # the header extension
    if int.from_bytes(data[at : at + 2], "big", signed=True) != 2:
        return None, None  # the trailer: no row
    at += 2
    view = memoryview(data)  # the payload is a slice of it, not a copy
    fields: list[memoryview] = []
    for _ in range(2):
        size = int.from_bytes(data[at : at + 4], "big", signed=True)
        if size < 0 or at + 4 + size > len(data):
            raise UnreadableCopy("not a (text, bytea) row")
        fields.append(view[at + 4 : at + 4 + size])
        at += 4 + size
    if at + 2 != len(data):
        raise UnreadableCopy("not one row")
    return str(fields[0], "utf-8"), fields[1]


# --- lifecycle: what left the active set (shared.markets.resolution) ------------------------

# A market with a winner: closed, and its outcome prices exactly one 1 and the rest 0.
SETTLED_SQL = """
(m.closed AND (SELECT count(*) >= 2 AND count(*) FILTER (WHERE o.price = 1) = 1
                      AND count(*) FILTER (WHERE o.price = 0) = count(*) - 1
                 FROM outcome_tokens o WHERE o.condition_id = m.condition_id))
"""


def resolution_candidates(cur: Cursor, limit: int, recheck_after_h: int, window_days: int) -> list[str]:
    """Markets out of the active set to look up: never checked (those that just left first),
    then closed-but-unsettled ones last checked over ``recheck_after_h`` ago, within
    ``window_days`` of closing; at most ``limit``."""
    cur.execute(
        f"""
        SELECT m.condition_id FROM markets m
         WHERE NOT m.in_active_set
           AND (m.resolution_checked_at IS NULL
                OR (m.resolution_checked_at < now() - make_interval(hours => %(recheck)s)
                    AND COALESCE(m.closed_time, m.updated_at) > now() - make_interval(days => %(window)s)
                    AND NOT COALESCE({SETTLED_SQL}, false)))
         ORDER BY m.resolution_checked_at NULLS FIRST, m.updated_at DESC, m.condition_id
         LIMIT %(limit)s
        """,
        {"recheck": recheck_after_h, "window": window_days, "limit": limit},
    )
    return [row["condition_id"] for row in cur.fetchall()]


def mark_resolution_checked(cur: Cursor, condition_ids: Sequence[str]) -> None:
    """Looked up now (found or not); the row is otherwise left as it is."""
    if condition_ids:
        cur.execute("UPDATE markets SET resolution_checked_at = now() WHERE condition_id = ANY(%s)",
                    (list(condition_ids),))


def get_markets(cur: Cursor, condition_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Markets with their detail fields, in the order of ``condition_ids``; unknown ids are left
    out; unreadable timestamps as in ``load_markets``."""
    psycopg2.extensions.register_type(TOLERANT_TIMESTAMPTZ, cur)
    cur.execute(
        SUMMARY_SQL.format(extra=", m.description, m.enable_order_book, m.neg_risk, m.tick_size")
        + " WHERE m.condition_id = ANY(%s)",
        (list(condition_ids),),
    )
    rows = {row["condition_id"]: dict(row) for row in cur.fetchall()}
    return [rows[c] for c in condition_ids if c in rows]
