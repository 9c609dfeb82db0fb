"""The pool and migrations on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from shared.config import get_settings
from shared.database import Database, get_database, migrate
from shared.errors import DatabaseUnavailable
from shared.migrations import MIGRATIONS
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
