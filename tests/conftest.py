"""Shared fixtures: a real PostgreSQL (pgserver) for the session, a fresh database per test,
and a clean app environment (settings, pool and clients re-created from the test's env)."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from shared.container import get_container, reset_container

ROOT = Path(__file__).resolve().parents[1]
# Figures tests report (load runs): printed in the session summary, never asserted.
REPORT_LINES: list[str] = []

# Distinctive secret values: tests that configure secrets use these, and every log record of
# the whole run is scanned for them (pytest_sessionfinish fails the run on a leak).
SECRET_CANARIES = {
    "POSTGRES_PASSWORD": "canary-pg-password-7f3a91",
    "POLYMARKET_PRIVATE_KEY": "0xcanary0private0key0b4d2e",
    "AZURE_OPENAI_API_KEY": "canary-aoai-key-c4d8e1",
}


class _SecretScanner(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not a leak
            text = str(record.msg)
        if record.exc_info and not record.exc_text:
            text += logging.Formatter().formatException(record.exc_info)
        text += record.exc_text or ""
        for name, secret in SECRET_CANARIES.items():
            if secret in text:
                self.leaks.append(f"{name} in a {record.levelname} record of {record.name}: {text[:200]}")


_scanner = _SecretScanner()


def pytest_configure(config: Any) -> None:
    logging.getLogger().addHandler(_scanner)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_scanner)
    if _scanner.leaks:
        print("\nSECRET LEAKED INTO LOGS:\n" + "\n".join(_scanner.leaks[:20]))
        session.exitstatus = 1
# The recorded Polymarket payloads the contract (docs/polymarket-api.md) describes, kept in the repo.
SAMPLES = ROOT / "tests" / "contract" / "samples"


def sample(name: str) -> Any:
    """A recorded payload, parsed; a missing one is an error, never a skip."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


# Variables the app reads; tests start from none of them set, so the host's env cannot leak in.
APP_ENV_PREFIXES = ("POSTGRES_", "POLYMARKET_", "AZURE_OPENAI_", "GPT5_", "UPSTREAM_", "MARKETS_",
                    "PRICE_", "BOOK_", "SENTIMENT_", "HEALTH_", "LOG_LEVEL", "REQUEST_DEADLINE", "STALE_IF_ERROR",
                    "CORS_")


@functools.cache
def registered_functions() -> dict[str, Any]:
    """function_app's functions by name; the SDK lets ``get_functions()`` run only once."""
    import function_app

    return {fn.get_function_name(): fn for fn in function_app.app.get_functions()}


def handler(name: str) -> Any:
    return registered_functions()[name].get_user_function()


def reset_app() -> None:
    """Forget everything the composition root built: settings, pool, clients, services."""
    reset_container()


def reset_services() -> None:
    """Forget the services, whose in-memory caches must not leak between tests (a new instance
    on the same database and clients)."""
    get_container().reset("sentiment", "events", "markets", "prices")


@pytest.fixture(autouse=True)
def clean_app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(APP_ENV_PREFIXES):
            monkeypatch.delenv(name)
    reset_services()
    reset_app()
    yield
    reset_services()
    reset_app()


class PostgresServer:
    """A pgserver instance; ``create_database`` gives each test its own empty database."""

    def __init__(self, root: Path) -> None:
        import pgserver

        self._server = pgserver.get_server(root, cleanup_mode="stop")
        info = self._server.get_postmaster_info()
        self.host = str(info.socket_dir)
        self.port = int(info.port or 5432)

    def connect(self, dbname: str = "postgres") -> Any:
        conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    def env(self, dbname: str) -> dict[str, str]:
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_DATABASE": dbname,
            "POSTGRES_SSLMODE": "disable",
            "POSTGRES_POOL_MIN": "1",
            "POSTGRES_POOL_MAX": "10",
        }

    def stop(self) -> None:
        self._server.cleanup()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's numbered temp folders: a second pytest run on the machine (another
    # checkout) rotates those away, server and all, while this run still uses it.
    root = Path(tempfile.mkdtemp(prefix="pytest-pg-"))
    server = PostgresServer(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_env(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh, empty database; the app's POSTGRES_* settings point at it."""
    name = postgres.create_database()
    env = postgres.env(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_app()
    yield env
    reset_app()
    postgres.drop_database(name)


class Upstream:
    """The Polymarket stand-in, with the few verbs the app's tests need."""

    def __init__(self, markets: int = 350, seed: int = 11) -> None:
        from devtools.standin import PolymarketStandIn

        self._frozen_at: float | None = None
        self.standin = PolymarketStandIn(markets=markets, seed=seed, clock=self._clock)
        self.standin.start()
        self.clob_url = self.standin.clob_url
        self.gamma_url = self.standin.gamma_url

    def _clock(self) -> float:
        return self._frozen_at if self._frozen_at is not None else time.time()

    def freeze_prices(self) -> None:
        """Stop the simulated clock, so prices and books stop moving."""
        self._frozen_at = time.time()

    def count(self, path: str, host: str | None = None, first_page_only: bool = False) -> int:
        if not first_page_only:
            return self.standin.count(host=host, path=path)
        return sum(
            1
            for r in self.standin.requests()
            if r.path == path and (host is None or r.host == host) and "after_cursor" not in r.query
        )

    def fail(self, kind: str, host: str | None = None, path: str | None = None, **params: Any) -> int:
        return self.standin.inject(kind, host=host, path=path, **params)

    def clear(self) -> None:
        self.standin.clear_faults()

    def open_markets(self) -> list[dict[str, Any]]:
        return [
            {
                "condition_id": m.condition_id,
                "question": m.question,
                "slug": m.slug,
                "token_ids": [t.token_id for t in m.tokens],
                "outcomes": [t.outcome for t in m.tokens],
                "gamma_id": str(m.gamma_id),
                "event_id": str(m.event.id),
                "event_slug": m.event.slug,
            }
            for m in self.standin.catalogue
            if not m.closed
        ]

    def close_market(self, condition_id: str) -> None:
        self.standin.close_market(condition_id)

    def stop(self) -> None:
        self.standin.stop()


@pytest.fixture
def upstream_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    """A fresh stand-in; the app's POLYMARKET_* settings point at it."""
    upstream = Upstream()
    monkeypatch.setenv("POLYMARKET_HOST", upstream.clob_url)
    monkeypatch.setenv("POLYMARKET_GAMMA_HOST", upstream.gamma_url)
    reset_app()
    yield upstream
    reset_app()
    upstream.stop()


@pytest.fixture
def app_env(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Upstream]:
    """The app on a real database and the stand-in, with no retry waits and no refresh interval,
    and a new markets service before and after (modules that need another setup define their own)."""
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("MARKETS_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    get_container().reset("markets")
    yield upstream_env
    get_container().reset("markets")


@pytest.fixture
def hostile_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The hostile Polymarket (``devtools.hostile``) over a fresh stand-in; the app's
    POLYMARKET_* settings point at it. Turn misbehaviours on with ``hostile_env.on(...)``."""
    from devtools.hostile import HostileUpstream
    from devtools.standin import PolymarketStandIn

    hostile = HostileUpstream(PolymarketStandIn(markets=200, seed=13)).start()
    monkeypatch.setenv("POLYMARKET_HOST", hostile.clob_url)
    monkeypatch.setenv("POLYMARKET_GAMMA_HOST", hostile.gamma_url)
    reset_app()
    yield hostile
    reset_app()
    hostile.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT_LINES:
        terminalreporter.section("figures")
        for line in REPORT_LINES:
            terminalreporter.write_line(line)
