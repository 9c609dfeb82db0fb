"""An embedded PostgreSQL (pgserver) for local runs when no database is configured (dev-only).

``devtools/`` is kept out of the deployed package (.funcignore); in Azure, POSTGRES_HOST is
always set. pgserver ships its own PostgreSQL binaries, listens on a unix socket only (no TCP
port to clash with) and, when run as root, runs the server as a ``pgserver`` system user.
Data lives under ``<root>/.devdata/pg`` (git-ignored), so it survives restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("devtools.embedded_db")

DATA_DIR = Path(".devdata") / "pg"


@dataclass
class EmbeddedDatabase:
    """A running pgserver instance and the settings the app needs to reach it."""

    data_dir: Path
    socket_dir: Path
    port: int
    _server: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def env(self) -> dict[str, str]:
        return {
            "POSTGRES_HOST": str(self.socket_dir),
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_DATABASE": "postgres",
            "POSTGRES_SSLMODE": "disable",
        }

    def stop(self) -> None:
        """Stop the server (idempotent). pgserver's atexit hook does the same at exit."""
        if self._stopped:
            return
        self._stopped = True
        self._server.cleanup()


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR in containers; pgserver falls back to /tmp.
        warnings.simplefilter("ignore")
        import pgserver
    # pgserver logs every step at INFO; only its problems are worth showing.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


def _forget_dead_handles(pgserver: Any, data_dir: Path) -> None:
    """Drop pids of processes that died without cleanup from pgserver's handle list.

    pgserver stops the server when the last process holding it exits; a stale pid (a
    SIGKILLed run) would otherwise keep the next run from ever stopping it.
    """
    import psutil  # a pgserver dependency

    handles = data_dir / ".handle_pids.json"
    if not handles.exists():
        return
    lock = getattr(pgserver.postgres_server.PostgresServer, "_lock", None) or contextlib.nullcontext()
    with lock:
        try:
            pids = pgserver.utils.DiskList(handles).get()
        except ValueError:
            pids = []
        alive = [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]
        if alive != pids:
            pgserver.utils.DiskList(handles).put(alive)


def start_embedded(data_dir: Path) -> EmbeddedDatabase:
    """Start (or attach to) the pgserver instance whose data lives in ``data_dir``."""
    pgserver = _import_pgserver()
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgserver, data_dir)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    return EmbeddedDatabase(
        data_dir=data_dir, socket_dir=Path(info.socket_dir), port=int(info.port or 5432), _server=server
    )


def ensure_database(
    root: Path, environ: MutableMapping[str, str] | None = None
) -> EmbeddedDatabase | None:
    """Start an embedded PostgreSQL and export its POSTGRES_* settings, unless POSTGRES_HOST is set.

    A blank POSTGRES_HOST counts as unset (local.settings.json.example ships it empty).
    """
    env = os.environ if environ is None else environ
    if env.get("POSTGRES_HOST", "").strip():
        return None
    database = start_embedded(root / DATA_DIR)
    env.update(database.env())
    log.info(
        "POSTGRES_HOST is not set: using an embedded PostgreSQL (pgserver), data in %s, socket in %s",
        database.data_dir, database.socket_dir,
    )
    return database
