"""PostgreSQL access: a lazy thread-safe pool, one unit-of-work helper, and migrations.

Works through PgBouncer in transaction pooling mode: every unit of work is one transaction,
and nothing session-scoped (session advisory locks, SET, prepared statements, temp tables)
is used, because the next transaction may run on another server connection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool

from shared.config import DatabaseSettings, get_settings
from shared.errors import DatabaseUnavailable, ServiceUnavailable
from shared.migrations import MIGRATION_LOCK_KEY, MIGRATIONS

log = logging.getLogger("polymarket_api.database")

T = TypeVar("T")
Cursor = psycopg2.extras.RealDictCursor

# Errors that mean "this connection is unusable", as opposed to a bad query.
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
_LIBPQ_ERRORS = (psycopg2.DatabaseError, psycopg2.OperationalError, psycopg2.InterfaceError)


def _server_gone(error: psycopg2.Error, conn: psycopg2.extensions.connection | None) -> bool:
    """The server end of the connection is gone (restart, failover, crash).

    libpq errors carry no SQLSTATE. When the server dies mid-statement psycopg2 raises a bare
    ``DatabaseError`` and still reports the connection open; the next use would fail too.
    """
    if conn is not None and conn.closed != 0:
        return True
    return type(error) in _LIBPQ_ERRORS and error.pgcode is None


def _unusable(error: psycopg2.Error, conn: psycopg2.extensions.connection | None) -> bool:
    """This connection must not be used again; the work may be retried on a fresh one."""
    return isinstance(error, _CONNECTION_ERRORS) or _server_gone(error, conn)


class _Pool(psycopg2.pool.ThreadedConnectionPool):
    """psycopg2's thread-safe pool, able to drop its idle connections at once."""

    def discard_idle(self) -> int:
        with self._lock:
            idle, self._pool = self._pool, []
        for conn in idle:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        return len(idle)


class Database:
    """A bounded pool. ``acquire`` waits at most ``pool_timeout_s`` for a free connection."""

    def __init__(self, settings: DatabaseSettings) -> None:
        if not settings.configured:
            raise DatabaseUnavailable("database is not configured (POSTGRES_HOST is not set)")
        self.settings = settings
        # psycopg2's pool raises at once when exhausted; the semaphore makes callers wait instead.
        self._slots = threading.BoundedSemaphore(settings.pool_max)
        self._in_use = 0
        self._count_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        try:
            self._pool = _Pool(
                settings.pool_min, settings.pool_max, **self._connect_kwargs()
            )
        except psycopg2.Error as error:
            raise DatabaseUnavailable("database is unreachable") from error

    def _connect_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "host": s.host,
            "port": s.port,
            "dbname": s.database,
            "user": s.user,
            "password": s.password or "",
            "sslmode": s.sslmode,
            "connect_timeout": s.connect_timeout_s,
            "application_name": "polymarket-api",
            # Keepalives find connections that a NAT or PgBouncer dropped while idle.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }

    # --- connections ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg2.extensions.connection]:
        if not self._slots.acquire(timeout=self.settings.pool_timeout_s):
            raise DatabaseUnavailable("database is busy (connection pool exhausted); try again",
                                      headers={"Retry-After": "1"})
        conn = None
        broken = lost = False
        try:
            with self._count_lock:
                self._in_use += 1
            try:
                conn = self._pool.getconn()
            except (psycopg2.Error, psycopg2.pool.PoolError) as error:
                raise DatabaseUnavailable("database is unreachable") from error
            try:
                yield conn
            except psycopg2.Error as error:
                broken, lost = _unusable(error, conn), _server_gone(error, conn)
                raise
            finally:
                lost = lost or conn.closed != 0
                broken = broken or lost
        finally:
            if conn is not None:
                try:
                    self._pool.putconn(conn, close=broken)
                except psycopg2.pool.PoolError:
                    pass
            if lost:
                # The server went away (restart, failover, crash): the idle connections went
                # with it. Dropping them now lets the retry, and the requests after it, connect
                # afresh instead of each failing on another dead connection.
                dropped = self._pool.discard_idle()
                if dropped:
                    log.warning("database connection lost; dropped %d idle connections", dropped)
            with self._count_lock:
                self._in_use -= 1
            self._slots.release()

    def run(self, work: Callable[[Cursor], T], *, ensure_schema: bool = True) -> T:
        """Run ``work`` in one transaction and commit. Retried once on a dead connection.

        A connection that died while idle in the pool (server restart, failover, PgBouncer
        recycling) fails on first use; the transaction never started, so running the work again
        on a fresh connection is safe. Work passed here must be idempotent for that reason.
        """
        if ensure_schema:
            self.ensure_schema()
        for attempt in (1, 2):
            conn = None
            try:
                with self._connection() as conn:
                    try:
                        with conn.cursor(cursor_factory=Cursor) as cur:
                            result = work(cur)
                        conn.commit()
                        return result
                    except BaseException:
                        if conn.closed == 0:
                            conn.rollback()
                        raise
            except psycopg2.Error as error:
                if not _unusable(error, conn):
                    raise
                if attempt == 2:
                    raise DatabaseUnavailable("database is unreachable") from error
                log.warning("database connection lost (%s); retrying once", type(error).__name__)
        raise AssertionError("unreachable")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        def work(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(sql, params)
            return [dict(row) for row in cur.fetchall()]

        return self.run(work)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> int:
        def work(cur: Cursor) -> int:
            cur.execute(sql, params)
            return cur.rowcount

        return self.run(work)

    def ping(self) -> None:
        """A round trip that needs no schema (health checks)."""
        self.run(lambda cur: cur.execute("SELECT 1"), ensure_schema=False)

    def pool_stats(self) -> dict[str, int]:
        return {"in_use": self._in_use, "max": self.settings.pool_max, "min": self.settings.pool_min}

    def close(self) -> None:
        self._pool.closeall()

    # --- schema --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                applied = self.run(migrate, ensure_schema=False)
                if applied:
                    log.info("applied migrations %s", applied)
                self._schema_ready = True


def migrate(cur: Cursor) -> list[int]:
    """Apply pending migrations in this transaction; returns the versions applied.

    The transaction-scoped advisory lock serialises instances that start together (and is
    released at commit, so it is safe through PgBouncer). Whoever waits finds the work done.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    cur.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    cur.execute("SELECT version FROM schema_migrations")
    done = {row["version"] for row in cur.fetchall()}
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        cur.execute(migration.sql)
        cur.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
        applied.append(migration.version)
    return applied


_db: Database | None = None
_db_lock = threading.Lock()
_db_failed_at = 0.0
_RECONNECT_BACKOFF_S = 2.0


def get_database() -> Database:
    """The process-wide pool, created on first use."""
    global _db, _db_failed_at
    if _db is not None:
        return _db
    with _db_lock:
        if _db is None:
            # Do not hammer an unreachable server with a pool build on every request.
            if time.monotonic() - _db_failed_at < _RECONNECT_BACKOFF_S:
                raise DatabaseUnavailable("database is unreachable")
            try:
                _db = Database(get_settings().database)
            except ServiceUnavailable:
                _db_failed_at = time.monotonic()
                raise
        return _db


def database_if_open() -> Database | None:
    """The pool if this process has created it (health reports without connecting)."""
    return _db


def reset_database() -> None:
    """Close and forget the pool (tests, local host shutdown)."""
    global _db, _db_failed_at
    with _db_lock:
        if _db is not None:
            _db.close()
        _db = None
        _db_failed_at = 0.0
