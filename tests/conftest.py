"""Shared fixtures: a real PostgreSQL (pgserver) for the session, a fresh database per test,
and a clean app environment (settings, pool and clients re-created from the test's env)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from shared.config import reset_settings
from shared.database import reset_database
from shared.polymarket_client import reset_clients

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Variables the app reads; tests start from none of them set, so the host's env cannot leak in.
APP_ENV_PREFIXES = ("POSTGRES_", "POLYMARKET_", "AZURE_OPENAI_", "GPT5_", "UPSTREAM_", "MARKETS_",
                    "PRICE_", "BOOK_", "SENTIMENT_", "HEALTH_", "LOG_LEVEL")


@functools.cache
def registered_functions() -> dict[str, Any]:
    """function_app's functions by name; the SDK lets ``get_functions()`` run only once."""
    import function_app

    return {fn.get_function_name(): fn for fn in function_app.app.get_functions()}


def handler(name: str) -> Any:
    return registered_functions()[name].get_user_function()


def reset_app() -> None:
    reset_clients()
    reset_database()
    reset_settings()


@pytest.fixture(autouse=True)
def clean_app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(APP_ENV_PREFIXES):
            monkeypatch.delenv(name)
    reset_app()
    yield
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
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("pg"))
    yield server
    server.stop()


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
