"""PostgreSQL access: a lazy thread-safe pool, one unit-of-work helper, and migrations.

Works through PgBouncer in transaction pooling mode: every unit of work is one transaction,
and nothing session-scoped (session advisory locks, SET, prepared statements, temp tables)
is used, because the next transaction may run on another server connection.

Every unit of work is bounded, on both ends of the wire:

* the server: ``statement_timeout``, ``lock_timeout`` and ``idle_in_transaction_session_timeout``
  are set LOCAL in the round trip that opens the transaction (``BEGIN; SET LOCAL ...``), so they
  cost no extra round trip and end with the transaction, as transaction pooling requires;
* the client: a watchdog shuts the connection's socket when a unit outlives its bound plus
  ``CLIENT_GRACE_S``. A server that is frozen (a stopped process, a stuck host) cannot cancel
  its own statement, and TCP keepalives do not notice: its kernel still answers for it;
* the pool connects outside its lock, so one slow connect holds up only the request making it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from shared.core.config import DatabaseSettings
from shared.core.errors import DatabaseTimeout, DatabaseUnavailable
from shared.db.migrations import MIGRATION_LOCK_KEY, MIGRATIONS

log = logging.getLogger("polymarket_api.database")

T = TypeVar("T")
Cursor = psycopg2.extras.RealDictCursor
Connection = psycopg2.extensions.connection

# A server that is alive answers its own timeout; past this much more, the client gives up on it.
CLIENT_GRACE_S = 2.0
# A unit with its own deadline (run(timeout_s=...)): the server's limits fall this long after
# the app's, so the app's own rollback normally comes first.
SERVER_SLACK_S = 1.0
# Migrations may rewrite a table or wait for another instance's migration.
MIGRATION_TIMEOUT_S = 120.0

# Errors that mean "this connection is unusable", as opposed to a bad query.
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
_LIBPQ_ERRORS = (psycopg2.DatabaseError, psycopg2.OperationalError, psycopg2.InterfaceError)
# The server ended a statement at its limit (OperationalError subclasses, yet the connection is fine).
_CANCELLED: dict[type[psycopg2.Error], str] = {
    psycopg2.errors.QueryCanceled: "a statement ran past its time limit",
    psycopg2.errors.LockNotAvailable: "a lock wait ran past its time limit",
}


def _server_gone(error: psycopg2.Error, conn: Connection | None) -> bool:
    """The server end of the connection is gone (restart, failover, crash).

    libpq errors carry no SQLSTATE. When the server dies mid-statement psycopg2 raises a bare
    ``DatabaseError`` and still reports the connection open; the next use would fail too.
    """
    if conn is not None and conn.closed != 0:
        return True
    return type(error) in _LIBPQ_ERRORS and error.pgcode is None


def _unusable(error: psycopg2.Error, conn: Connection | None) -> bool:
    """This connection must not be used again; the work may be retried on a fresh one."""
    if type(error) in _CANCELLED and (conn is None or conn.closed == 0):
        return False  # rolled back, the connection serves the next unit
    return isinstance(error, _CONNECTION_ERRORS) or _server_gone(error, conn)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass(frozen=True)
class Limits:
    """One unit of work's bounds: the server's, set LOCAL when it begins, and the client's."""

    statement_s: float
    lock_s: float
    idle_s: float
    client_s: float  # the whole unit, from BEGIN to COMMIT, as the client sees it

    @classmethod
    def of(cls, settings: DatabaseSettings) -> Limits:
        return cls(settings.statement_timeout_s, settings.lock_timeout_s, settings.idle_in_transaction_timeout_s,
                   settings.statement_timeout_s + CLIENT_GRACE_S)

    @classmethod
    def lasting(cls, seconds: float) -> Limits:
        """A unit that may take ``seconds`` in all, each statement, lock wait or idle gap too."""
        server = seconds + SERVER_SLACK_S
        return cls(server, server, server, seconds + CLIENT_GRACE_S)

    @cached_property
    def begin_sql(self) -> str:
        """BEGIN and the limits, one round trip: no more than psycopg2's own BEGIN costs."""
        return (
            f"BEGIN; SET LOCAL statement_timeout = {_ms(self.statement_s)}; "
            f"SET LOCAL lock_timeout = {_ms(self.lock_s)}; "
            f"SET LOCAL idle_in_transaction_session_timeout = {_ms(self.idle_s)}"
        )


def bound_transaction(cur: Cursor, seconds: float) -> None:
    """From now on in this transaction, no statement, lock wait or idle gap may run past
    ``seconds`` (plus ``SERVER_SLACK_S``). A unit with its own deadline (the catalogue refresh)
    calls this as it goes, so even a process that stalls cannot keep its locks past it."""
    ms = str(_ms(seconds + SERVER_SLACK_S))
    cur.execute(
        "SELECT set_config('statement_timeout', %(ms)s, true), set_config('lock_timeout', %(ms)s, true), "
        "set_config('idle_in_transaction_session_timeout', %(ms)s, true)",
        {"ms": ms},
    )


class _Watchdog:
    """Cuts the socket of a unit of work that outlived its bound.

    Shutting the socket down (not closing it) wakes libpq's blocked read or write with an error
    at once. The descriptor is duplicated when the unit begins: if libpq closes its own first,
    the number cannot be reused by another socket under us.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[int, tuple[float, int]] = {}  # token -> (monotonic due time, duplicate fd)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    def arm(self, conn: Connection, seconds: float) -> int:
        fd = os.dup(conn.fileno())
        due = time.monotonic() + seconds
        with self._changed:
            token = next(self._tokens)
            self._due[token] = (due, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="database-watchdog", daemon=True)
                self._thread.start()
            if due < self._wake_at:  # only an earlier due time needs the watchdog woken
                self._changed.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Forget the unit; True when its socket was cut."""
        with self._changed:
            _, fd = self._due.pop(token)
            fired = token in self._fired
            self._fired.discard(token)
        os.close(fd)
        return fired

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                pending = []
                for token, (due, fd) in self._due.items():
                    if token in self._fired:
                        continue
                    if due <= now:
                        self._fired.add(token)
                        _cut(fd)
                    else:
                        pending.append(due)
                self._wake_at = min(pending, default=float("inf"))
                self._changed.wait(None if not pending else self._wake_at - now)


def _cut(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut by the other end
    finally:
        sock.detach()  # the descriptor stays the watchdog's, closed on disarm


_watchdog = _Watchdog()


def _rollback(conn: Connection) -> None:
    """End the unit's transaction; a connection that cannot is closed, never pooled."""
    if conn.closed != 0 or conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return
    try:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")
    except psycopg2.Error:
        with contextlib.suppress(psycopg2.Error):
            conn.close()


@contextmanager
def _watched(conn: Connection, seconds: float) -> Iterator[None]:
    """The enclosed unit of work on ``conn``, cut off by the watchdog after ``seconds``."""
    token = _watchdog.arm(conn, seconds)
    try:
        yield
    except psycopg2.Error as error:
        if _watchdog.disarm(token):
            conn.close()
            log.warning("database did not answer within %g s; connection closed", seconds)
            raise DatabaseTimeout("the database did not answer in time (no answer)") from error
        raise
    except BaseException:
        if _watchdog.disarm(token):
            conn.close()
        raise
    else:
        if _watchdog.disarm(token):
            conn.close()  # cut just as the work ended: that socket is gone


class _Pool:
    """Idle connections, at most ``keep`` of them (psycopg2's pool keeps ``minconn`` too).

    Connects outside its lock: with psycopg2's pool, one connect to a server that does not
    answer held every other request behind it for the whole connect timeout.
    """

    def __init__(self, connect: Callable[[], Connection], keep: int) -> None:
        self._connect = connect
        self._keep = keep
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            for _ in range(keep):
                self._idle.append(connect())
        except BaseException:
            self.close()
            raise

    def get(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def put(self, conn: Connection, *, close: bool) -> None:
        idle = conn.closed == 0 and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        if idle and not close:
            with self._lock:
                if not self._closed and len(self._idle) < self._keep:
                    self._idle.append(conn)
                    return
        with contextlib.suppress(psycopg2.Error):
            conn.close()

    def discard_idle(self) -> int:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        return len(idle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.discard_idle()


class Database:
    """A bounded pool. ``acquire`` waits at most ``pool_timeout_s`` for a free connection."""

    def __init__(self, settings: DatabaseSettings) -> None:
        if not settings.configured:
            raise DatabaseUnavailable("database is not configured (POSTGRES_HOST is not set)")
        self.settings = settings
        self.limits = Limits.of(settings)
        # The pool connects on demand; the semaphore bounds the connections in use and makes
        # callers wait for one instead of failing at once.
        self._slots = threading.BoundedSemaphore(settings.pool_max)
        self._in_use = 0
        self._count_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        try:
            self._pool = _Pool(self._connect, settings.pool_min)
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
            # Data sent and never acknowledged (a network path that died): the connection fails.
            "tcp_user_timeout": _ms(self.limits.client_s),
        }

    def _connect(self) -> Connection:
        conn = psycopg2.connect(**self._connect_kwargs())
        conn.autocommit = True  # run() sends BEGIN itself, with the unit's limits in the same round trip
        return conn

    # --- connections ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=self.settings.pool_timeout_s):
            raise DatabaseUnavailable("database is busy (connection pool exhausted); try again",
                                      headers={"Retry-After": "1"})
        conn = None
        broken = lost = False
        try:
            with self._count_lock:
                self._in_use += 1
            try:
                conn = self._pool.get()
            except psycopg2.Error as error:
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
                self._pool.put(conn, close=broken)
            if lost:
                # The server went away (restart, failover, crash) or stopped answering: the
                # idle connections went with it. Dropping them now lets the retry, and the
                # requests after it, connect afresh instead of each failing on another one.
                dropped = self._pool.discard_idle()
                if dropped:
                    log.warning("database connection lost; dropped %d idle connections", dropped)
            with self._count_lock:
                self._in_use -= 1
            self._slots.release()

    def run(self, work: Callable[[Cursor], T], *, ensure_schema: bool = True,
            timeout_s: float | None = None) -> T:
        """Run ``work`` in one transaction and commit. Retried once on a dead connection.

        A connection that died while idle in the pool (server restart, failover, PgBouncer
        recycling) fails as the transaction begins, before the work ran: it is run again on a
        fresh connection. A connection lost once the work began is not retried (the unit has
        already spent its time, and a stalled one was ended by the server on purpose).

        Bounded by the ``POSTGRES_*_TIMEOUT_S`` settings (see the module docstring), or, for a
        unit that may legitimately take long, by ``timeout_s`` for all of it. Past the bound:
        ``DatabaseTimeout`` (a 503), never retried.
        """
        if ensure_schema:
            self.ensure_schema()
        limits = self.limits if timeout_s is None else Limits.lasting(timeout_s)
        for attempt in (1, 2):
            conn = None
            began = False
            # (connection still open, unusable), judged while the connection is held: once it is
            # back, the pool may have closed it as surplus, which says nothing about the error.
            verdict: tuple[bool, bool] | None = None
            try:
                with self._connection() as conn, _watched(conn, limits.client_s):
                    try:
                        with conn.cursor(cursor_factory=Cursor) as cur:
                            try:
                                cur.execute(limits.begin_sql)
                                began = True
                                result = work(cur)
                                cur.execute("COMMIT")
                            except BaseException:
                                _rollback(conn)
                                raise
                    except psycopg2.Error as error:
                        verdict = (conn.closed == 0, _unusable(error, conn))
                        raise
                    return result
            except psycopg2.Error as error:
                still_open, unusable = verdict or (conn is None or conn.closed == 0, _unusable(error, conn))
                reason = _CANCELLED.get(type(error))
                if reason is not None and still_open:
                    raise DatabaseTimeout(f"the database did not answer in time ({reason})") from error
                if not unusable:
                    raise
                if began:
                    raise DatabaseUnavailable("the database connection was lost during the transaction") from error
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
        self._pool.close()

    # --- schema --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                applied = self.run(migrate, ensure_schema=False, timeout_s=MIGRATION_TIMEOUT_S)
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


def get_database() -> Database:
    """The process-wide pool (built by ``shared.container`` on first use)."""
    from shared.container import get_container

    return get_container().database
