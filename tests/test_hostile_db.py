"""A bounded database, through the HTTP API against the hostile Polymarket (issue 11, breaks 8
and 13): a refresh that stalls cannot hold the refresh lock past its deadline, and a frozen
PostgreSQL costs a request a bounded wait, then recovers with no app restart.

Everything is real: PostgreSQL (pgserver; a private server for the test that freezes it), the
app on the local host over HTTP, the hostile upstream (``devtools.hostile``) in front of the
stand-in, and, for the stalled process, a second app instance in its own process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shared.db.database import get_database
from shared.markets.store import REFRESH_LOCK_KEY
from tests.conftest import REPORT_LINES, ROOT, PostgresServer, reset_app, reset_services
from tests.test_faults import (  # noqa: F401 - fixtures: the private server a test may freeze
    RestartablePostgres,
    assert_documented_error,
    private_db,
    private_pg,
    start_instance,
    wait_for,
    writer_stats,
)

KEYSET = "/markets/keyset"
REFRESH_DEADLINE_S = 3.0
SLACK_S = 3.0  # asserted bounds are generous: the machine is shared
TRICKLE = {"then": "trickle", "bytes_per_s": 20}  # a 100-market page would take hours


# --- the app over HTTP, in front of the hostile upstream ---------------------------------------


@pytest.fixture
def serve(hostile_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., httpx.Client]]:
    """``serve(**env)``: the app on the local host, over real HTTP, against the hostile upstream."""
    import function_app
    from devtools.funchost import LocalHost

    started: list[tuple[Any, httpx.Client]] = []

    def start(client_timeout_s: float = 30.0, **env: str) -> httpx.Client:
        for key, value in {"MARKETS_REFRESH_MIN_INTERVAL_S": "0", "UPSTREAM_RETRY_BACKOFF_S": "0",
                           "PRICE_REFRESH_MIN_INTERVAL_S": "0", **env}.items():
            monkeypatch.setenv(key, value)
        reset_services()
        reset_app()
        host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
        http = httpx.Client(base_url=host.url, timeout=client_timeout_s, trust_env=False)
        started.append((host, http))
        return http

    yield start
    for host, http in started:
        http.close()
        host.stop()
    reset_services()


def ok(http: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    response = http.get(path, params=params)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def timed(http: httpx.Client, path: str, **params: str) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = http.get(path, params=params)
    return response, time.monotonic() - began


# --- what PostgreSQL sees ------------------------------------------------------------------------


class Observer:
    """An admin connection to the app's database: locks and sessions as the server sees them."""

    def __init__(self, server: PostgresServer, dbname: str) -> None:
        self.dbname = dbname
        self._conn = server.connect(dbname)

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]

    def refresh_lock_held(self) -> bool:
        # A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
        return self._one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (REFRESH_LOCK_KEY,),
        ) > 0

    def can_take_refresh_lock(self) -> bool:
        with self._conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (REFRESH_LOCK_KEY,))
                return bool(cur.fetchone()[0])
            finally:
                cur.execute("ROLLBACK")

    def idle_in_transaction(self) -> int:
        """Sessions sitting idle inside a transaction (for a second: not one between two statements)."""
        return self._one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%'"
            " AND state_change < now() - interval '1 second'",
            (self.dbname,),
        )

    def questions_like(self, text: str) -> int:
        return self._one("SELECT count(*) FROM markets WHERE question = %s", (text,))

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def observer(database_env: dict[str, str], postgres: PostgresServer) -> Iterator[Observer]:
    watcher = Observer(postgres, database_env["POSTGRES_DATABASE"])
    yield watcher
    watcher.close()


# --- break 8: a stalled refresh and the refresh lock ---------------------------------------------


def test_a_trickling_page_cannot_hold_the_refresh_lock_past_the_refresh_deadline(
    observer: Observer, hostile_env: Any, serve: Callable[..., httpx.Client]
) -> None:
    http = serve(MARKETS_REFRESH_DEADLINE_S=str(REFRESH_DEADLINE_S))
    before = ok(http, "/api/markets", limit="500")
    ids = [m["condition_id"] for m in before["markets"]]
    assert len(ids) == 200

    # The first page of the next refresh changes a question (written inside the refresh's
    # transaction), the second page trickles: far longer than the deadline.
    changed = "Written by a refresh that never finished?"
    hostile_env.on("row_field", host="gamma", path=KEYSET, field="question", value=changed, rows=[0])
    trickle = hostile_env.on("later_pages", host="gamma", path=KEYSET, **TRICKLE)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        forced = pool.submit(ok, http, "/api/markets", limit="500", refresh="true")
        wait_for(observer.refresh_lock_held, timeout=REFRESH_DEADLINE_S, what="the refresh holding its lock")
        wait_for(lambda: hostile_env.fired(trickle) >= 1, timeout=REFRESH_DEADLINE_S, what="a later page trickling")
        assert observer.refresh_lock_held()
        listed = forced.result(timeout=30)

    # The refresh ended by its deadline: the lock is free, nothing sits idle in a transaction.
    wait_for(lambda: not observer.refresh_lock_held(), timeout=REFRESH_DEADLINE_S + SLACK_S,
             what="the refresh lock released")
    released_s = time.monotonic() - started
    assert released_s < REFRESH_DEADLINE_S + SLACK_S
    assert observer.can_take_refresh_lock()
    assert observer.idle_in_transaction() == 0
    assert observer.questions_like(changed) == 0  # the first page's write was rolled back
    REPORT_LINES.append(f"break 8: trickling keyset page, refresh deadline {REFRESH_DEADLINE_S:g} s: "
                        f"refresh lock free {released_s:.1f} s after refresh=true")

    # The previous catalogue is served, stale, saying why.
    assert [m["condition_id"] for m in listed["markets"]] == ids
    assert listed["freshness"]["source"] == "stale", listed["freshness"]
    assert "timeout" in listed["freshness"]["stale_reason"]  # the attempt that failed, as it failed
    again = ok(http, "/api/markets", limit="500")
    assert again["freshness"]["source"] == "stale" and "deadline" in again["freshness"]["stale_reason"]
    assert [m["condition_id"] for m in again["markets"]] == ids
    status = ok(http, "/api/health", deep="true")["datasets"]["markets"]
    assert not status["refreshing"] and "deadline" in status["last_error"]

    # Gamma well again: the next refresh takes the lock and finishes.
    # (A refresh=true within the failed refresh's backoff answers stale at once and starts
    # none; one after it takes the lock.)
    hostile_env.clear()
    wait_for(lambda: ok(http, "/api/markets", limit="500", refresh="true")["freshness"]["source"] != "stale",
             what="the catalogue refreshed")
    assert observer.idle_in_transaction() == 0 and not observer.refresh_lock_held()


def test_a_stalled_instance_cannot_hold_the_refresh_lock_past_the_refresh_deadline(
    observer: Observer, database_env: dict[str, str], hostile_env: Any, tmp_path: Path
) -> None:
    """The app cannot enforce anything while its process is stopped: PostgreSQL ends the
    refresh's transaction (idle_in_transaction_session_timeout, set from the deadline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "POLYMARKET_", "MARKETS_"))}
    env.update(database_env)
    env.update({"POLYMARKET_HOST": hostile_env.clob_url, "POLYMARKET_GAMMA_HOST": hostile_env.gamma_url,
                "MARKETS_REFRESH_DEADLINE_S": str(REFRESH_DEADLINE_S), "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
                "LOG_LEVEL": "warning"})
    instance = start_instance(tmp_path, "stalled", env)
    http = httpx.Client(timeout=30, trust_env=False)
    process = psutil.Process(instance.process.pid)
    try:
        def up() -> bool:
            assert instance.process.poll() is None, instance.output()
            try:
                return http.get(f"{instance.url}/api/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=30, what="instance up")
        assert http.get(f"{instance.url}/api/markets", params={"limit": "1"}).status_code == 200
        hostile_env.on("later_pages", host="gamma", path=KEYSET, **TRICKLE)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(http.get, f"{instance.url}/api/markets", params={"refresh": "true"})
            wait_for(observer.refresh_lock_held, timeout=REFRESH_DEADLINE_S, what="the refresh holding its lock")
            process.suspend()  # the instance stalls (a stop-the-world pause, a frozen VM) mid-refresh
            stalled = time.monotonic()
            assert observer.refresh_lock_held()
            wait_for(lambda: not observer.refresh_lock_held(), timeout=REFRESH_DEADLINE_S + SLACK_S,
                     what="the stalled refresh's lock released")
            released_s = time.monotonic() - stalled
            assert observer.idle_in_transaction() == 0
            REPORT_LINES.append(f"break 8: instance stopped mid-refresh (deadline {REFRESH_DEADLINE_S:g} s): "
                                f"lock released by PostgreSQL {released_s:.1f} s after the stop")

            # Another instance (this process) refreshes while the stalled one is still stopped.
            hostile_env.clear()
            reset_services()
            reset_app()
            from shared.markets.service import get_markets_service

            assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
            process.resume()
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.resume()
        http.close()
        instance.process.terminate()
        try:
            instance.process.wait(15)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.wait()


# --- break 13: a frozen database ------------------------------------------------------------------


@contextlib.contextmanager
def frozen(server: RestartablePostgres) -> Iterator[None]:
    """Every process of the server stopped (SIGSTOP), as a stuck host would be; always continued."""
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server._server.pgdata)
    assert info is not None
    postmaster = psutil.Process(info.pid)
    stopped = [postmaster]
    try:
        os.kill(postmaster.pid, signal.SIGSTOP)  # first, so it forks no backend we would miss
        for child in postmaster.children(recursive=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGSTOP)
                stopped.append(child)
        yield
    finally:
        for process in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)


STATEMENT_TIMEOUT_S = 2.0
# What a unit of work may wait on a silent server: the statement timeout + 2 s (CLIENT_GRACE_S in
# shared/db/database.py, the documented bound).
BOUND_S = STATEMENT_TIMEOUT_S + 2.0


def test_a_frozen_database_costs_a_request_a_bounded_wait_and_recovers(
    request: pytest.FixtureRequest, hostile_env: Any, serve: Callable[..., httpx.Client]
) -> None:
    server: RestartablePostgres = request.getfixturevalue("private_db")
    http = serve(client_timeout_s=BOUND_S + 10, POSTGRES_STATEMENT_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
                 POSTGRES_CONNECT_TIMEOUT_S="2", POSTGRES_POOL_TIMEOUT_S="1")
    markets = ok(http, "/api/markets", limit="500")["markets"]
    cids = [m["condition_id"] for m in markets]
    token = markets[0]["outcomes"][0]["token_id"]
    assert ok(http, f"/api/markets/{cids[0]}")["market"]["description"]
    ok(http, f"/api/price/{token}", history="false")
    wait_for(lambda: writer_stats()["pending"] == 0, what="samples written")
    unknown = f"0x{'ab' * 32}"

    waits: dict[str, float] = {}
    with frozen(server):
        # Answered from this instance's memory, stale, after a bounded wait on the database.
        single, waits["single market"] = timed(http, f"/api/markets/{cids[0]}")
        assert single.status_code == 200, single.text
        body = single.json()
        assert body["freshness"]["source"] == "stale" and "database" in body["freshness"]["stale_reason"]
        assert body["market"]["condition_id"] == cids[0] and body["market"]["description"] is None

        # Not in memory: the documented 503.
        missing, waits["unknown market"] = timed(http, f"/api/markets/{unknown}")
        assert missing.status_code == 503 and assert_documented_error(missing)["code"] == "database_unavailable"

        # Eight at once, each on its own connection: none waits behind another's.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda cid: timed(http, f"/api/markets/{cid}"), cids[1:9]))
        assert all(response.status_code == 200 for response, _ in answers), [r.text for r, _ in answers]
        waits["8 concurrent single markets (slowest)"] = max(took for _, took in answers)

        listed, waits["markets list"] = timed(http, "/api/markets", limit="500")
        assert listed.status_code == 200 and len(listed.json()["markets"]) == len(cids)
        price, waits["price"] = timed(http, f"/api/price/{token}", history="false")
        assert price.status_code == 200 or assert_documented_error(price)
        health, waits["deep health"] = timed(http, "/api/health", deep="true")
        assert health.status_code == 503
        assert health.json()["checks"]["database"]["error"] == "database_unavailable"
        frozen_for = sum(waits.values())

    for what, took in waits.items():
        assert took < BOUND_S + SLACK_S, (what, took, waits)
    REPORT_LINES.append(
        f"break 13: PostgreSQL frozen (SIGSTOP), statement timeout {STATEMENT_TIMEOUT_S:g} s: "
        + ", ".join(f"{what} {took:.1f} s" for what, took in waits.items()))

    # Continued (SIGCONT): answered from the database again, no app restart.
    def from_database() -> dict[str, Any] | None:
        body = ok(http, f"/api/markets/{cids[0]}")
        return body if body["freshness"]["source"] != "stale" and body["market"]["description"] else None

    wait_for(from_database, timeout=15, what="single market from the database again")
    assert http.get(f"/api/markets/{unknown}").status_code == 404
    assert ok(http, "/api/health", deep="true")["checks"]["database"]["status"] == "ok"
    assert get_database().query("SELECT 1 AS one") == [{"one": 1}]
    assert frozen_for > 0
