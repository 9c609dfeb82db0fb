"""The pool and migrations on a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from shared.core.config import get_settings
from shared.core.errors import DatabaseTimeout, DatabaseUnavailable
from shared.db.database import Cursor, Database, get_database, migrate
from shared.db.migrations import MIGRATIONS
from tests.conftest import PostgresServer


def test_schema_is_created_on_first_use(database_env: dict[str, str]) -> None:
    db = get_database()
    tables = {row["table_name"] for row in db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )}
    assert {"markets", "outcome_tokens", "price_samples", "dataset_state", "schema_migrations"} <= tables
    versions = [row["version"] for row in db.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


def test_migrations_applied_concurrently_run_once(database_env: dict[str, str]) -> None:
    settings = get_settings().database
    instances = [Database(settings) for _ in range(6)]  # six "instances" starting together
    barrier = threading.Barrier(len(instances))

    def start(db: Database) -> list[int]:
        barrier.wait()
        return db.run(migrate, ensure_schema=False)

    try:
        with ThreadPoolExecutor(len(instances)) as pool:
            results = list(pool.map(start, instances))
        applied = [versions for versions in results if versions]
        assert applied == [[m.version for m in MIGRATIONS]]  # exactly one instance did the work
        # And a second round applies nothing.
        assert all(db.run(migrate, ensure_schema=False) == [] for db in instances)
        rows = instances[0].query("SELECT count(*) AS n FROM schema_migrations")
        assert rows[0]["n"] == len(MIGRATIONS)
    finally:
        for db in instances:
            db.close()


def test_ids_cannot_be_mixed_up(database_env: dict[str, str]) -> None:
    db = get_database()
    token_id = "32338220190071351435772801779725302244575775216413325951443816017994629993401"
    condition_id = "0x" + "ab" * 32
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.execute("INSERT INTO markets (condition_id, question, content_hash) VALUES (%s, 'q', 'h')", (token_id,))
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.execute(
            "INSERT INTO price_samples (token_id, ts, price, source) VALUES (%s, now(), 0.5, 'quote')",
            (condition_id,),
        )
    # A sample for a token the markets table has never seen is fine.
    assert db.execute(
        "INSERT INTO price_samples (token_id, ts, price, source) VALUES (%s, now(), 0.5, 'quote')", (token_id,)
    ) == 1


def test_connection_that_died_while_idle_is_replaced(
    database_env: dict[str, str], postgres: PostgresServer
) -> None:
    db = get_database()
    db.ensure_schema()
    pids = {row["pid"] for row in db.query("SELECT pg_backend_pid() AS pid")}
    # Kill every backend of this database, as a server restart or failover would.
    admin = postgres.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database_env["POSTGRES_DATABASE"],),
            )
    finally:
        admin.close()
    time.sleep(0.2)
    rows = db.query("SELECT pg_backend_pid() AS pid")
    assert rows[0]["pid"] not in pids


def test_pool_exhaustion_waits_a_bounded_time(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_POOL_MAX", "2")
    monkeypatch.setenv("POSTGRES_POOL_TIMEOUT_S", "0.3")
    from tests.conftest import reset_app

    reset_app()
    db = get_database()
    db.ensure_schema()
    hold = threading.Event()
    started = threading.Barrier(3)

    def occupy() -> None:
        def work(cur: object) -> None:
            started.wait()
            hold.wait(5)

        db.run(work)

    threads = [threading.Thread(target=occupy) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait()
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="pool exhausted"):
            db.query("SELECT 1")
        assert time.monotonic() - began < 2
    finally:
        hold.set()
        for thread in threads:
            thread.join()
    assert db.query("SELECT 1 AS one") == [{"one": 1}]


def test_unreachable_database_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", "1")  # nothing listens there
    monkeypatch.setenv("POSTGRES_CONNECT_TIMEOUT_S", "1")
    with pytest.raises(DatabaseUnavailable) as caught:
        get_database()
    assert "127.0.0.1" not in caught.value.message


def test_not_configured_is_a_typed_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="not configured"):
        get_database()


# --- every unit of work is bounded ------------------------------------------------------------


def _fresh_pool(monkeypatch: pytest.MonkeyPatch, **env: str) -> Database:
    from tests.conftest import reset_app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_app()
    db = get_database()
    db.ensure_schema()
    return db


def _show(cur: Any) -> dict[str, str]:
    values = {}
    for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
        cur.execute(f"SHOW {name}")
        values[name] = cur.fetchone()[name]
    return values


def test_each_transaction_carries_its_limits_and_the_session_none(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _fresh_pool(monkeypatch, POSTGRES_STATEMENT_TIMEOUT_S="7", POSTGRES_LOCK_TIMEOUT_S="0.25",
                     POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S="9", POSTGRES_POOL_MIN="1", POSTGRES_POOL_MAX="1")
    assert db.run(_show) == {"statement_timeout": "7s", "lock_timeout": "250ms",
                             "idle_in_transaction_session_timeout": "9s"}
    assert db.run(_show, timeout_s=60) == dict.fromkeys(
        ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"), "61s")
    # SET LOCAL: nothing stays on the session (PgBouncer hands it to other clients next).
    with db._connection() as conn, conn.cursor(cursor_factory=Cursor) as cur:
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        assert set(_show(cur).values()) == {"0"}


def test_a_statement_past_its_timeout_is_a_typed_error_and_the_connection_stays(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _fresh_pool(monkeypatch, POSTGRES_STATEMENT_TIMEOUT_S="0.3", POSTGRES_POOL_MIN="1", POSTGRES_POOL_MAX="1")
    pid = db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
    began = time.monotonic()
    with pytest.raises(DatabaseTimeout) as caught:
        db.query("SELECT pg_sleep(5)")
    assert time.monotonic() - began < 2
    assert caught.value.status == 503 and caught.value.code == "database_unavailable"
    assert "psycopg2" not in caught.value.message and "pg_sleep" not in caught.value.message
    assert db.query("SELECT pg_backend_pid() AS pid")[0]["pid"] == pid  # rolled back, kept in the pool


def test_a_lock_wait_past_its_timeout_is_a_typed_error(
    database_env: dict[str, str], postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _fresh_pool(monkeypatch, POSTGRES_LOCK_TIMEOUT_S="0.3")
    holder = postgres.connect(database_env["POSTGRES_DATABASE"])
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN; LOCK TABLE markets IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            with pytest.raises(DatabaseTimeout, match="lock wait"):
                db.query("SELECT count(*) FROM markets")
            assert time.monotonic() - began < 2
            cur.execute("ROLLBACK")
    finally:
        holder.close()
    assert db.query("SELECT count(*) AS n FROM markets") == [{"n": 0}]


def test_a_transaction_left_idle_is_ended_by_the_server_and_not_retried(
    database_env: dict[str, str], postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _fresh_pool(monkeypatch, POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S="1")
    key = 424242
    calls = []
    freed_while_stalled = []

    def lock_is_free() -> bool:
        other = postgres.connect(database_env["POSTGRES_DATABASE"])
        try:
            with other.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                return bool(cur.fetchone()[0])
        finally:
            other.close()

    def stalls(cur: Any) -> None:
        calls.append(1)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        assert not lock_is_free()
        time.sleep(2)  # a process that stalls mid-transaction, holding what it locked
        freed_while_stalled.append(lock_is_free())
        cur.execute("SELECT 2")

    with pytest.raises(DatabaseUnavailable, match="lost during the transaction"):
        db.run(stalls)
    assert freed_while_stalled == [True] and len(calls) == 1  # ended by the server, not run again
    assert db.query("SELECT 1 AS one") == [{"one": 1}]


def test_a_server_that_does_not_answer_is_cut_off_at_the_bound(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its backend stopped (SIGSTOP): no server timeout can fire; the client's watchdog does."""
    from shared.db.database import CLIENT_GRACE_S

    db = _fresh_pool(monkeypatch, POSTGRES_STATEMENT_TIMEOUT_S="0.5", POSTGRES_POOL_MIN="1", POSTGRES_POOL_MAX="1")
    pid = db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseTimeout, match="no answer"):
            db.query("SELECT 1")
        took = time.monotonic() - began
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0.5 + CLIENT_GRACE_S - 0.1 < took < 0.5 + CLIENT_GRACE_S + 1.5
    assert db.query("SELECT pg_backend_pid() AS pid")[0]["pid"] != pid  # that connection was discarded


def test_a_sql_error_on_a_surplus_connection_is_the_sql_error(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With more connections in use than POSTGRES_POOL_MIN, the pool closes the surplus one as it
    # comes back. A SQL error on it is still the SQL error, not "connection lost" (a 503).
    monkeypatch.setenv("POSTGRES_POOL_MIN", "1")
    db = Database(get_settings().database)
    try:
        db.query("SELECT 1")  # schema ready: nothing below opens a third connection
        release, other_done = threading.Event(), threading.Event()

        def hold(cur: Cursor) -> None:
            cur.execute("SELECT 1")
            assert release.wait(10)

        def fail(cur: Cursor) -> None:
            cur.execute("SELECT 1")  # this connection is held now: two in use, one kept
            release.set()
            assert other_done.wait(10)  # the other connection is back in the pool, idle
            cur.execute("SELECT 1 / 0")

        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(db.run, hold)
            time.sleep(0.2)
            held.add_done_callback(lambda _: other_done.set())
            with pytest.raises(psycopg2.errors.DivisionByZero):
                db.run(fail)
            held.result(timeout=10)
    finally:
        db.close()
