"""Fault injection across the API: the answer keeps coming, nothing is lost, staleness is said.

Everything is real: PostgreSQL (pgserver; a private server where a test stops and restarts
it, since the session's server is shared), the app served over HTTP by the local host, and
the real Polymarket and Azure OpenAI clients against their loopback stand-ins. Waits are
bounded (an HTTP client timeout turns a hang into a failure); no latency is asserted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from shared.db.database import get_database
from tests.conftest import ROOT, PostgresServer, Upstream, reset_app, reset_services

KEYSET = "/markets/keyset"
CLIENT_TIMEOUT_S = 30.0  # a request that takes longer than this is a hang
# Every 5xx the README documents; a 500 never answers a fault.
DOCUMENTED_5XX = {
    502: {"upstream_error", "model_error"},
    503: {"unavailable", "database_unavailable", "upstream_unavailable", "upstream_rate_limited"},
    504: {"upstream_timeout"},
}


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.1)


# --- PostgreSQL that a test may stop -----------------------------------------------------------


class RestartablePostgres(PostgresServer):
    """A private pgserver: ``halt`` stops the server (``immediate`` is a crash), ``resume``
    starts it again on the same socket, as a restart or failover would."""

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self._server.pgdata, user=self._server.system_user, timeout=60)

    @property
    def running(self) -> bool:
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._server.pgdata)
        return info is not None and info.is_running()

    def halt(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def resume(self) -> None:
        from pgserver.utils import PostmasterInfo

        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.host}", "-l", str(self._server.log), "start")
        # pgserver stops the server it knows of at exit: tell it about the new postmaster.
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self._server.pgdata)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[RestartablePostgres]:
    # Not under pytest's basetemp: a concurrent pytest run may rotate that away mid-run.
    root = Path(tempfile.mkdtemp(prefix="pgfaults-"))
    try:
        server = RestartablePostgres(root / "pg")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_db(private_pg: RestartablePostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartablePostgres]:
    """A fresh database on the private server, with the production pool size (5 kept open)."""
    if not private_pg.running:
        private_pg.resume()  # a failed test may have left it stopped
    name = private_pg.create_database()
    for key, value in {**private_pg.env(name), "POSTGRES_POOL_MIN": "5"}.items():
        monkeypatch.setenv(key, value)
    reset_app()
    yield private_pg
    reset_services()
    reset_app()
    if not private_pg.running:
        private_pg.resume()
    private_pg.drop_database(name)


# --- the app over HTTP -------------------------------------------------------------------------


@dataclass
class App:
    http: httpx.Client
    upstream: Upstream

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def ok(self, path: str, **params: str) -> dict[str, Any]:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def failed(self, path: str, status: int | None = None, **params: str) -> httpx.Response:
        response = self.get(path, **params)
        assert_documented_error(response)
        if status is not None:
            assert response.status_code == status, (path, response.text)
        return response

    def tokens(self, markets: list[dict[str, Any]], n: int) -> list[str]:
        ids = [m["outcomes"][0]["token_id"] for m in markets if m["outcomes"] and m["outcomes"][0]["token_id"]]
        return ids[:n]


def assert_documented_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in DOCUMENTED_5XX, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] in DOCUMENTED_5XX[response.status_code], error
    assert "Traceback" not in response.text and "psycopg2" not in response.text
    return error


def fault_env(monkeypatch: pytest.MonkeyPatch, upstream: Upstream) -> None:
    for key, value in {
        "POLYMARKET_HOST": upstream.clob_url,
        "POLYMARKET_GAMMA_HOST": upstream.gamma_url,
        "UPSTREAM_RETRY_BACKOFF_S": "0",
        "UPSTREAM_RETRY_ATTEMPTS": "1",  # retries are tested per client; here each fault fails once
        "UPSTREAM_READ_TIMEOUT_S": "1",
        "UPSTREAM_BREAKER_FAILURES": "1000",  # each fault shows as itself, not as an open circuit
        "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
        "PRICE_REFRESH_MIN_INTERVAL_S": "0",
        "PRICE_CACHE_TTL_S": "1",
        "BOOK_CACHE_TTL_S": "1",
        "PRICE_HISTORY_CACHE_TTL_S": "1",
        "POSTGRES_CONNECT_TIMEOUT_S": "2",
        "POSTGRES_POOL_TIMEOUT_S": "1",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., App]]:
    """``serve(**env)``: a small stand-in and the app on the local host, over real HTTP."""
    import function_app
    from devtools.funchost import LocalHost

    started: list[tuple[Any, httpx.Client, Upstream]] = []

    def start(markets: int = 120, **env: str) -> App:
        upstream = Upstream(markets=markets, seed=23)
        fault_env(monkeypatch, upstream)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_services()
        reset_app()
        host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
        http = httpx.Client(base_url=host.url, timeout=CLIENT_TIMEOUT_S, trust_env=False)
        started.append((host, http, upstream))
        return App(http, upstream)

    yield start
    for host, http, _upstream in started:
        http.close()
        host.stop()
    reset_services()
    for _, _, upstream in started:
        upstream.stop()


def move(upstream: Upstream, tokens: list[str], price: float) -> None:
    """Set these tokens' books now and hold them there (each market's other outcome mirrors)."""
    for token in tokens:
        upstream.standin.set_price(token, price, hold=True)


def writer_stats() -> dict[str, Any]:
    from shared.prices.service import get_prices_service

    return get_prices_service().writer.stats()


def stored_keys(tokens: list[str]) -> set[tuple[str, str]]:
    rows = get_database().query(
        "SELECT token_id, ts FROM price_samples WHERE token_id = ANY(%s) AND source = 'quote'", (tokens,))
    return {(row["token_id"], row["ts"].isoformat()) for row in rows}


# --- PostgreSQL stopped mid-run ----------------------------------------------------------------


def test_postgres_restarted_and_stopped_mid_run_recovers_without_an_app_restart(
    private_db: RestartablePostgres, serve: Callable[..., App]
) -> None:
    app = serve(MARKETS_CACHE_TTL_S="2")
    markets = app.ok("/api/markets", limit="500")["markets"]
    market = markets[0]
    cid = market["condition_id"]
    tokens = app.tokens(markets, 4)
    assert app.ok(f"/api/markets/{cid}")["market"]["description"]
    for token in tokens:
        app.ok(f"/api/price/{token}", history="false")
    wait_for(lambda: writer_stats()["pending"] == 0, what="samples written")

    # A quick restart (a failover): every pooled connection is dead, the first request after
    # it is still answered from the database.
    private_db.halt()
    private_db.resume()
    body = app.ok(f"/api/markets/{cid}")
    assert body["freshness"]["source"] != "stale" and body["market"]["description"]

    # Stopped (a crash), and left down for a while. The next request finds the pool's
    # connections dead without having been told: it is answered from memory.
    private_db.halt("immediate")
    crashed = app.ok(f"/api/markets/{cid}")
    assert crashed["freshness"]["source"] == "stale" and crashed["market"]["question"] == market["question"]
    seen: set[tuple[str, str]] = set()
    for price in (0.31, 0.47, 0.62):
        move(app.upstream, tokens, price)  # new book states: new samples to keep
        for token in tokens:
            quote = app.ok(f"/api/price/{token}", history="false", refresh="true")
            assert quote["freshness"]["source"] == "live"
            seen.add((token, quote["quote"]["book_timestamp"]))
        time.sleep(1.1)  # the next book change falls in a later second; quotes past their TTL
    move(app.upstream, tokens, 0.55)
    batch = app.ok("/api/prices", token_ids=",".join(tokens))
    assert {q["status"] for q in batch["quotes"]} == {"ok"}
    seen |= {(q["token_id"], q["quote"]["book_timestamp"]) for q in batch["quotes"]}
    assert app.ok(f"/api/book/{tokens[0]}")["book"]["bids"]
    assert app.ok(f"/api/price/{tokens[1]}")["quote"]["price"] is not None  # with history: upstream's

    # The catalogue is served from memory and says it is stale once past its TTL.
    single = app.ok(f"/api/markets/{cid}")
    assert single["market"]["question"] == market["question"]
    assert single["market"]["outcomes"] == market["outcomes"]
    assert single["freshness"]["source"] == "stale" and "database" in single["freshness"]["stale_reason"]

    def listed_stale() -> dict[str, Any] | None:
        body = app.ok("/api/markets", limit="500")
        return body if body["freshness"]["source"] == "stale" else None

    listed = wait_for(listed_stale, what="catalogue marked stale")
    assert "database" in listed["freshness"]["stale_reason"]
    assert [m["condition_id"] for m in listed["markets"]] == [m["condition_id"] for m in markets]
    error = assert_documented_error(app.get(f"/api/markets/0x{'ab' * 32}"))  # not in memory
    assert error["code"] == "database_unavailable"

    health = app.get("/api/health", deep="true")
    assert health.status_code == 503
    report = health.json()
    assert report["checks"]["database"]["error"] == "database_unavailable"
    wait_for(lambda: writer_stats()["failures"] > 0, what="writer retrying")
    assert writer_stats()["pending"] >= len(seen) and writer_stats()["dropped"] == 0

    # Back up: answered from the database again, without restarting the app.
    private_db.resume()
    body = app.ok(f"/api/markets/{cid}")
    assert body["freshness"]["source"] != "stale" and body["market"]["description"]
    wait_for(lambda: writer_stats()["pending"] == 0, timeout=45, what="samples of the outage written")
    assert writer_stats()["dropped"] == 0
    assert seen <= stored_keys(tokens)
    wait_for(lambda: app.ok("/api/markets", limit="1")["freshness"]["source"] != "stale",
             what="catalogue fresh again")
    report = app.ok("/api/health", deep="true")
    assert report["checks"]["database"]["status"] == "ok"
    assert report["datasets"]["prices"]["history_writer"]["dropped"] == 0


def test_upstream_and_database_down_together(private_db: RestartablePostgres, serve: Callable[..., App]) -> None:
    app = serve()
    markets = app.ok("/api/markets", limit="500")["markets"]
    cid = markets[0]["condition_id"]
    known, unseen = app.tokens(markets, 2), app.tokens(markets[10:], 1)[0]
    before = {t: app.ok(f"/api/price/{t}", history="false")["quote"] for t in known}
    app.ok(f"/api/book/{known[0]}")
    wait_for(lambda: writer_stats()["pending"] == 0, what="samples written")

    private_db.halt()
    app.upstream.stop()  # connection refused from now on
    time.sleep(1.1)  # quotes and books past their TTL

    listed = app.ok("/api/markets", limit="500", refresh="true")
    assert listed["freshness"]["source"] == "stale"
    assert [m["condition_id"] for m in listed["markets"]] == [m["condition_id"] for m in markets]
    single = app.ok(f"/api/markets/{cid}")
    assert single["freshness"]["source"] == "stale" and single["market"]["condition_id"] == cid
    for token in known:
        body = app.ok(f"/api/price/{token}")
        assert body["quote"] == before[token]
        assert body["freshness"]["source"] == "stale" and "network" in body["freshness"]["stale_reason"]
    batch = app.ok("/api/prices", token_ids=",".join([*known, unseen]))
    statuses = {q["token_id"]: q["status"] for q in batch["quotes"]}
    assert statuses == {known[0]: "ok", known[1]: "ok", unseen: "unavailable"}
    assert batch["freshness"]["source"] == "stale"
    book = app.ok(f"/api/book/{known[0]}")
    assert book["freshness"]["source"] == "stale"
    for path, params in ((f"/api/price/{unseen}", {}), (f"/api/book/{unseen}", {}),
                         ("/api/prices", {"token_ids": unseen})):
        assert app.failed(path, 503, **params).json()["error"]["code"] == "unavailable"
    health = app.get("/api/health", deep="true")
    assert health.status_code == 503
    assert {name: check["status"] for name, check in health.json()["checks"].items()} == {
        "database": "error", "polymarket_clob": "error", "polymarket_gamma": "error"}

    private_db.resume()  # the database comes back, Polymarket does not
    single = app.ok(f"/api/markets/{cid}")
    assert single["market"]["description"]  # read from the database again
    health = app.get("/api/health", deep="true")
    assert health.status_code == 200 and health.json()["status"] == "degraded"


# --- an exhausted pool -------------------------------------------------------------------------


class PoolHog:
    """Holds every pooled connection in open transactions until released."""

    def __init__(self, connections: int) -> None:
        self._release = threading.Event()
        self._holding = threading.Barrier(connections + 1)
        self._threads = [threading.Thread(target=self._hold) for _ in range(connections)]

    def _hold(self) -> None:
        def work(cur: Any) -> None:
            cur.execute("SELECT 1")
            self._holding.wait()
            self._release.wait(60)

        get_database().run(work)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        self._holding.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        for thread in self._threads:
            thread.join(10)


def test_an_exhausted_pool_answers_503_or_memory_after_a_bounded_wait(
    database_env: dict[str, str], serve: Callable[..., App]
) -> None:
    app = serve(POSTGRES_POOL_MAX="2", POSTGRES_POOL_TIMEOUT_S="0.5")
    get_database().ensure_schema()

    with PoolHog(2), ThreadPoolExecutor(8) as pool:
        # Nothing in memory yet: the catalogue cannot be loaded, and every request says so.
        responses = list(pool.map(lambda _: app.get("/api/markets"), range(8)))
        for response in responses:
            error = assert_documented_error(response)
            assert response.status_code == 503 and error["code"] == "database_unavailable"
            assert "pool exhausted" in error["message"]
            assert response.headers.get("Retry-After")
        health = app.get("/api/health", deep="true")
        assert health.status_code == 503
        assert health.json()["checks"]["database"]["error"] == "database_unavailable"
        assert health.json()["database_pool"] == {**health.json()["database_pool"], "in_use": 2, "max": 2}

    markets = app.ok("/api/markets", limit="500")["markets"]
    cid, token = markets[0]["condition_id"], app.tokens(markets, 1)[0]
    assert app.ok(f"/api/markets/{cid}")["freshness"]["source"] != "stale"

    with PoolHog(2), ThreadPoolExecutor(8) as pool:
        # With the catalogue in memory, nothing waits on the pool for long and nothing fails.
        paths = [f"/api/markets/{cid}", "/api/markets", f"/api/price/{token}", f"/api/book/{token}"] * 3
        bodies = list(pool.map(lambda path: app.ok(path), paths))
        single = bodies[0]
        assert single["market"]["condition_id"] == cid
        assert single["freshness"]["source"] == "stale" and "database" in single["freshness"]["stale_reason"]
        assert all(b["quote"]["price"] is not None for b in bodies[2::4])

    body = app.ok(f"/api/markets/{cid}")
    assert body["freshness"]["source"] != "stale" and body["market"]["description"]
    wait_for(lambda: writer_stats()["pending"] == 0, what="samples written")
    assert writer_stats()["dropped"] == 0


# --- Polymarket faults x endpoints -------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    kind: str  # the class named in stale_reason
    inject: Callable[[Upstream], None]
    clob: bool = True  # False: only the catalogue refresh is hit
    retry_after: str | None = None

    def __str__(self) -> str:
        return self.name


FAULTS = [
    Fault("5xx", "5xx", lambda u: u.fail("status", status=502)),
    Fault("429", "429", lambda u: u.fail("rate_limit", retry_after=30), retry_after="30"),
    Fault("reset", "network", lambda u: u.fail("reset")),
    Fault("non_json", "bad_body", lambda u: u.fail("garbage")),
    Fault("slow", "timeout", lambda u: u.fail("hang", seconds=4)),
    Fault("refused", "network", lambda u: u.stop()),
    Fault("halfway", "5xx", lambda u: u.fail("status", host="gamma", path=KEYSET, status=500, after=1),
          clob=False),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_every_polymarket_fault_on_every_endpoint_is_stale_data_or_a_documented_error(
    database_env: dict[str, str], postgres: PostgresServer, serve: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch, fault: Fault,
) -> None:
    app = serve(markets=250)
    markets = app.ok("/api/markets", limit="500")["markets"]
    cid = markets[0]["condition_id"]
    (a, b), cold = app.tokens(markets, 2), app.tokens(markets[20:], 1)[0]
    quotes = app.ok("/api/prices", token_ids=f"{a},{b}")["quotes"]
    app.ok(f"/api/price/{a}")
    book = app.ok(f"/api/book/{a}")["book"]
    stored = get_database().query("SELECT count(*) AS n, max(updated_at) AS t FROM markets")[0]

    fault.inject(app.upstream)
    time.sleep(1.1)  # quotes, books and histories past their TTL

    def stale(body: dict[str, Any]) -> None:
        assert body["freshness"]["source"] == "stale", body["freshness"]
        assert fault.kind in body["freshness"]["stale_reason"], body["freshness"]

    listed = app.ok("/api/markets", limit="500", refresh="true")
    stale(listed)
    assert [m["condition_id"] for m in listed["markets"]] == [m["condition_id"] for m in markets]
    stale(app.ok(f"/api/markets/{cid}"))
    assert get_database().query("SELECT count(*) AS n, max(updated_at) AS t FROM markets")[0] == stored

    price = app.ok(f"/api/price/{a}", refresh="true")
    batch = app.ok("/api/prices", token_ids=f"{a},{b}")
    book_now = app.ok(f"/api/book/{a}")
    if fault.clob:
        for body in (price, batch, book_now, *batch["quotes"]):
            stale(body)
        assert [q["quote"] for q in batch["quotes"]] == [q["quote"] for q in quotes]
        assert book_now["book"] == book
        assert price["history"]["stale_reason"]  # stored points only
        for path, params in ((f"/api/price/{cold}", {}), (f"/api/book/{cold}", {}),
                             ("/api/prices", {"token_ids": cold})):
            response = app.failed(path, **params)
            if fault.retry_after:
                assert response.headers.get("Retry-After") == fault.retry_after, path
    else:
        assert all(body["freshness"]["source"] != "stale" for body in (price, batch, book_now))
        assert app.ok(f"/api/price/{cold}")["quote"]["price"] is not None

    # A new instance on an empty database, started during the fault: nothing to serve yet.
    empty = postgres.create_database()
    monkeypatch.setenv("POSTGRES_DATABASE", empty)
    reset_services()
    reset_app()
    try:
        for path in ("/api/markets", f"/api/markets/{cid}"):
            response = app.failed(path, 503)
            assert fault.kind in response.json()["error"]["message"]
            if fault.retry_after:
                assert response.headers.get("Retry-After") == fault.retry_after, path
        assert get_database().query("SELECT count(*) AS n FROM markets")[0]["n"] == 0  # nothing half-written
    finally:
        reset_services()
        reset_app()
        postgres.drop_database(empty)


# --- two instances on one database -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Instance:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_instance(tmp_path: Path, name: str, env: dict[str, str]) -> Instance:
    root = tmp_path / name
    root.mkdir()
    shutil.copy(ROOT / "host.json", root / "host.json")
    port = _free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.funchost", "--port", str(port), "--root", str(root),
             "--no-timers"],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )
    return Instance(process, f"http://127.0.0.1:{port}", log)


def test_two_instances_write_price_samples_and_sentiment_concurrently(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    from devtools.openai_standin import OpenAIStandIn, Reply, verdict

    upstream = Upstream(markets=150, seed=29)
    model = OpenAIStandIn(api_key="sk-two-instances", deployment="gpt-5").start()
    model.default = Reply(verdict("bullish", 0.3, 0.6, "Rising.").content, delay_s=0.3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "POLYMARKET_", "AZURE_"))}
    env.update(database_env)
    env.update({
        "POLYMARKET_HOST": upstream.clob_url, "POLYMARKET_GAMMA_HOST": upstream.gamma_url,
        "AZURE_OPENAI_ENDPOINT": model.endpoint, "AZURE_OPENAI_API_KEY": "sk-two-instances",
        "GPT5_DEPLOYMENT_NAME": "gpt-5", "UPSTREAM_RETRY_BACKOFF_S": "0", "PRICE_CACHE_TTL_S": "1",
        "PRICE_REFRESH_MIN_INTERVAL_S": "0", "LOG_LEVEL": "warning",
    })
    instances = [start_instance(tmp_path, name, env) for name in ("a", "b")]
    http = httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False)
    try:
        def up(instance: Instance) -> bool:
            assert instance.process.poll() is None, instance.output()
            try:
                return http.get(f"{instance.url}/api/health").status_code == 200
            except httpx.TransportError:
                return False

        for instance in instances:
            wait_for(lambda instance=instance: up(instance), timeout=30, what="instance up")

        def get(instance: Instance, path: str, **params: str) -> dict[str, Any]:
            response = http.get(f"{instance.url}{path}", params=params)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        with ThreadPoolExecutor(2) as pool:
            catalogues = list(pool.map(lambda i: get(i, "/api/markets", limit="500")["markets"], instances))
        markets = catalogues[0]
        tokens = [o["token_id"] for m in markets[:50] for o in m["outcomes"] if o["token_id"]][:100]
        singles = tokens[:12]
        seen: set[tuple[str, str]] = set()
        jobs: list[tuple[Instance, str, dict[str, str]]] = []
        for instance, order in zip(instances, (tokens, tokens[::-1]), strict=True):
            jobs.append((instance, "/api/prices", {"token_ids": ",".join(order)}))
            jobs += [(instance, f"/api/price/{t}", {"refresh": "true"}) for t in singles]
        with ThreadPoolExecutor(16) as pool:
            for price in (0.35, 0.45, 0.55, 0.65):
                time.sleep(1.1)  # past the quote TTL in both instances; books change in a new second
                move(upstream, [t for t in (m["outcomes"][0]["token_id"] for m in markets[:50]) if t], price)
                for body in pool.map(lambda job: get(job[0], job[1], **job[2]), jobs):
                    quotes = body.get("quotes") or [body]
                    seen |= {(q.get("token_id") or q["token"]["token_id"], q["quote"]["book_timestamp"])
                             for q in quotes}

            # Sentiment for the same markets from both instances at once: one analysis each.
            cids = [m["condition_id"] for m in markets[:4]]
            sentiment_jobs = [(i, f"/api/markets/{c}/sentiment", {}) for c in cids for i in instances]
            answers = list(pool.map(lambda job: get(job[0], job[1]), sentiment_jobs))
        assert model.count() == len(cids)
        analyses = {(a["sentiment"]["condition_id"], a["sentiment"]["id"]) for a in answers}
        rows = get_database().query("SELECT condition_id, id FROM market_sentiment")
        assert analyses == {(row["condition_id"], row["id"]) for row in rows} and len(analyses) == len(cids)

        def drained(instance: Instance) -> dict[str, Any] | None:
            writer = get(instance, "/api/health", deep="true")["datasets"]["prices"]["history_writer"]
            return writer if writer["pending"] == 0 else None

        for instance in instances:
            writer = wait_for(lambda instance=instance: drained(instance), what="writer drained")
            assert writer["dropped"] == 0 and writer["failures"] == 0 and writer["last_error"] is None
        # Each book state read, by either instance or both, is stored once, under its own time.
        assert seen and stored_keys(tokens) == seen
    finally:
        http.close()
        for instance in instances:
            instance.process.terminate()
        for instance in instances:
            try:
                instance.process.wait(15)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait()
        model.stop()
        upstream.stop()
    for instance in instances:
        output = instance.output()
        for trouble in ("Traceback", "ERROR", "retrying once", "not written yet", "deadlock"):
            assert trouble not in output, (trouble, output[-3000:])


_REFRESH_ELSEWHERE = ("from shared.markets.service import get_markets_service; "
                      "get_markets_service().refresh(min_age_s=0)")


def test_an_instance_stops_saying_stale_once_another_instance_has_refreshed(
    database_env: dict[str, str], serve: Callable[..., App]
) -> None:
    app = serve(MARKETS_CACHE_TTL_S="3")
    app.ok("/api/markets", limit="5")
    fault = app.upstream.fail("status", host="gamma", status=503)
    failed = app.ok("/api/markets", limit="5", refresh="true")
    assert failed["freshness"]["source"] == "stale"
    app.upstream.standin.remove_fault(fault)

    # Another instance (its own process) refreshes the shared catalogue.
    subprocess.run([sys.executable, "-c", _REFRESH_ELSEWHERE], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True, capture_output=True, timeout=120)

    def newer() -> dict[str, Any] | None:
        body = app.ok("/api/markets", limit="5")
        as_of = datetime.fromisoformat(body["freshness"]["as_of"])
        return body if as_of > datetime.fromisoformat(failed["freshness"]["as_of"]) else None

    # Past its TTL this instance adopts the newer catalogue, and does not call it stale: the
    # failure it saw is older than what it now serves.
    adopted = wait_for(newer, what="newer catalogue adopted")
    assert adopted["freshness"]["source"] != "stale", adopted["freshness"]


def test_books_that_change_during_a_slow_read_are_stored_under_their_own_time(
    database_env: dict[str, str], serve: Callable[..., App]
) -> None:
    app = serve()
    tokens = app.tokens(app.ok("/api/markets", limit="500")["markets"], 60)
    app.upstream.fail("latency", host="clob", ms=600)  # books keep moving while each read is on its way
    seen: set[tuple[str, str]] = set()
    for _ in range(2):
        quotes = app.ok("/api/prices", token_ids=",".join(tokens))["quotes"]
        seen |= {(q["token_id"], q["quote"]["book_timestamp"]) for q in quotes}
        time.sleep(1.1)  # past the quote TTL
    wait_for(lambda: writer_stats()["pending"] == 0, what="samples written")
    # One row per book state read, keyed on the time the book took it (what the answer showed),
    # so the next read of the same state, here or by another instance, adds nothing.
    assert stored_keys(tokens) == seen
