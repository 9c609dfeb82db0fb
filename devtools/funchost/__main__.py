"""``python -m devtools.funchost``: the app served locally, like ``func start`` (dev-only).

    python -m devtools.funchost [--port 7071] [--host 127.0.0.1] [--app function_app:app]
                                [--no-timers] [--cors ORIGINS] [--cors-credentials] [--root DIR]

Loads local.settings.json, fills in the trigger settings Azure requires, chooses the CORS origins
(and hands them to the app), starts an embedded PostgreSQL unless POSTGRES_HOST is set, then
serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.funchost.cors import LOCAL_CORS_ORIGINS, CorsPolicy, resolve_cors
from devtools.funchost.functions import load_app
from devtools.funchost.routes import RouteError
from devtools.funchost.server import LocalHost
from devtools.funchost.settings import LocalSettings, apply_settings, load_local_settings

log = logging.getLogger("devtools.funchost")

DEFAULT_PORT = 7071


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.funchost",
        description="Serve the Azure Functions app locally, like `func start` (dev-only).",
    )
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: Host.LocalHttpPort from local.settings.json, else {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer triggers")
    parser.add_argument("--cors", default=None,
                        help="allowed origins, comma-separated, '*' or 'none' (overrides CORS_ALLOWED_ORIGINS "
                             "and Host.CORS; default: " + ", ".join(LOCAL_CORS_ORIGINS) + ")")
    parser.add_argument("--cors-credentials", action="store_true", default=None,
                        help="allow credentials in CORS requests (overrides Host.CORSCredentials)")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="project root with host.json, local.settings.json and .devdata (default: cwd)")
    return parser.parse_args(argv)


def _load_settings(root: Path) -> LocalSettings:
    settings = load_local_settings(root)
    if not settings.path:
        log.info("no local.settings.json in %s; using the process environment only", root)
        return settings
    applied, kept = apply_settings(settings.values)
    # Names only: values can be secrets.
    log.info("loaded %d settings from %s: %s", len(applied), settings.path, ", ".join(applied) or "-")
    if kept:
        log.info("kept from the process environment: %s", ", ".join(kept))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root: Path = args.root.resolve()

    # Installed first so a Ctrl+C during start-up still shuts down cleanly (and stops the db).
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        settings = _load_settings(root)
    except ValueError as error:
        log.error("%s", error)
        return 2

    # Azure requires these app settings (triggers reference them as %NAME%); deploy.sh sets them.
    from shared.core.config import TRIGGER_SETTING_DEFAULTS, ConfigError, parse_cors_origins, read_simulated

    for name, value in TRIGGER_SETTING_DEFAULTS.items():
        os.environ.setdefault(name, value)

    # One list of origins for the host's preflights and the app's own headers: the app reads it
    # from CORS_ALLOWED_ORIGINS, so the host hands it the list it answers preflights with.
    cors_spec, cors_source = resolve_cors(args.cors, os.environ, settings)
    try:
        parse_cors_origins(cors_spec)
        simulated = read_simulated()
    except ConfigError as error:
        log.error("%s", error)
        return 2
    os.environ["CORS_ALLOWED_ORIGINS"] = cors_spec

    from devtools.embedded_db import ensure_database

    try:
        database = ensure_database(root)
    except Exception:
        log.exception("could not start the embedded PostgreSQL; set POSTGRES_HOST to use another server")
        return 1

    try:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        credentials = args.cors_credentials if args.cors_credentials is not None else settings.cors_credentials
        port = args.port if args.port is not None else (settings.local_http_port or DEFAULT_PORT)
        try:
            app = load_app(args.app)
            from shared.api.cors import EXPOSED_HEADERS

            host = LocalHost(
                app, host=args.host, port=port, host_json=root / "host.json",
                cors=CorsPolicy.parse(cors_spec, credentials=credentials, expose_headers=EXPOSED_HEADERS),
                run_timers=not args.no_timers, root=root, simulated=simulated,
            )
        except RouteError as error:
            log.error("cannot serve %s: %s", args.app, error)
            return 2
        except Exception:
            log.exception("cannot load the functions of %s", args.app)
            return 1
        try:
            host.start(start_timers=False)
        except OSError as error:
            log.error("cannot listen on %s:%s: %s", args.host, port, error)
            return 1
        try:
            log.info("Functions:")
            for line in host.describe():
                log.info("    %s", line)
            if host.cors:
                origins = "*" if host.cors.any_origin else ", ".join(sorted(host.cors.origins))
                log.info("CORS allows %s (from %s)%s", origins, cors_source,
                         " (with credentials)" if host.cors.credentials else "")
            else:
                log.info("CORS is off (from %s)", cors_source)
            if simulated:
                log.info("demo mode: the host's own answers are labelled X-Data-Simulated too")
            log.info("listening on %s (Ctrl+C to stop)", host.url)
            host.start_timers()  # after the listing, so runOnStartup output follows it
            while not stopping.wait(0.5):
                pass
        finally:
            host.stop()
        log.info("stopped")
        return 0
    finally:
        if database is not None:
            database.stop()


if __name__ == "__main__":
    sys.exit(main())
