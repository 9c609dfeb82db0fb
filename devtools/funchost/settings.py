"""What the host reads from the project folder: ``local.settings.json`` and ``host.json``.

``local.settings.json`` ``Values`` go into the environment without overwriting it (the process
environment wins); ``Host`` gives the CORS origins, CORSCredentials and LocalHttpPort. From
``host.json`` only ``extensions.http.routePrefix`` matters here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_ROUTE_PREFIX = "api"


class SettingsError(ValueError):
    """local.settings.json exists but cannot be used."""


@dataclass(frozen=True)
class LocalSettings:
    """What the host uses from ``local.settings.json``; ``path`` is None when there is none."""

    values: dict[str, str] = field(default_factory=dict)
    cors: str | None = None
    cors_credentials: bool = False
    local_http_port: int | None = None
    path: Path | None = None


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def load_local_settings(root: Path) -> LocalSettings:
    """Read ``<root>/local.settings.json``; a missing file means no settings."""
    path = root / "local.settings.json"
    if not path.is_file():
        return LocalSettings()
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise SettingsError(f"{path} is not valid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(document, dict):
        raise SettingsError(f"{path} must hold a JSON object")
    values: dict[str, str] = {}
    raw_values = document.get("Values") or {}
    if _truthy(document.get("IsEncrypted")):
        # Core Tools encrypts with a machine key we do not have; better no values than garbage.
        log.warning("%s is encrypted (IsEncrypted=true); its Values are ignored", path)
    elif isinstance(raw_values, dict):
        values = {str(k): _setting_text(v) for k, v in raw_values.items() if v is not None}
    host = document.get("Host") or {}
    cors = host.get("CORS")
    port = host.get("LocalHttpPort")
    return LocalSettings(
        values=values,
        cors=str(cors) if cors not in (None, "") else None,
        cors_credentials=_truthy(host.get("CORSCredentials")),
        local_http_port=int(port) if isinstance(port, int | str) and str(port).isdigit() else None,
        path=path,
    )


def apply_settings(
    values: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Copy settings into the environment without overwriting; returns (applied, kept) names."""
    env = os.environ if environ is None else environ
    applied: list[str] = []
    kept: list[str] = []
    for name, value in values.items():
        if name in env:
            kept.append(name)
        else:
            env[name] = value
            applied.append(name)
    return applied, kept


# --- host.json ------------------------------------------------------------------------------


def read_route_prefix(host_json: Path | Mapping[str, Any] | None) -> str:
    """``extensions.http.routePrefix`` from host.json (a path or parsed document); default ``api``."""
    if host_json is None:
        return DEFAULT_ROUTE_PREFIX
    if isinstance(host_json, Path):
        if not host_json.is_file():
            return DEFAULT_ROUTE_PREFIX
        host_json = json.loads(host_json.read_text(encoding="utf-8-sig"))
    http = ((host_json.get("extensions") or {}).get("http")) or {}
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    return DEFAULT_ROUTE_PREFIX if prefix is None else str(prefix).strip("/")
