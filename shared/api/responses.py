"""JSON answers: serialisation, the demo label, error bodies, and cached answers (Cache-Control
from the TTL, ETag, 304 to a matching If-None-Match)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.api.compression import GZIP_ETAG_SUFFIX, accepts_gzip, encode
from shared.api.headers import JSON
from shared.core import observability
from shared.core.cache import TTLCache, derived_cache
from shared.core.config import get_settings
from shared.core.errors import AppError, BadRequest, ConfigError


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(body: Any) -> str:
    # allow_nan=False: a NaN or an infinity that got past validation raises (a 500 with an
    # incident id) instead of going out as ``NaN``/``Infinity``, which is not JSON.
    return json.dumps(body, default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def simulated() -> bool:
    try:
        return get_settings().polymarket.simulated
    except ConfigError:
        return False


class JsonResponse(func.HttpResponse):
    """A JSON response that knows how many leading bytes of its body its content fixes: all but
    the ``freshness`` object and the ``simulated`` flag, which come last. For a given ETag those
    bytes repeat from request to request, so gzip can reuse their compression (see _gzip)."""

    def __init__(self, body: bytes, stable: int, *, status_code: int = 200,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body, status_code=status_code, headers=headers, mimetype=JSON)
        self.stable = stable


# Where the use case gives a key that fixes an answer's body in this process (Answer.body_key: a
# markets page of one in-memory snapshot), its JSON is made once per (path, key): a cached
# 50-market page then costs no serialisation (0.24 ms of ~1.5 ms). Never keyed by ETag alone: a
# tag built from stored rows can outlive a change to them (a row edited in place, a summary a
# later check withholds). Bounded: at most HEAD_CACHE_ENTRIES heads of at most
# HEAD_CACHE_MAX_BYTES each (32 MB).
HEAD_CACHE_ENTRIES = 128
HEAD_CACHE_MAX_BYTES = 256 * 1024
_heads: TTLCache[bytes] = derived_cache(HEAD_CACHE_ENTRIES, ttl_s=300.0)


def _serialise(body: dict[str, Any], tail: dict[str, Any], key: tuple[str, str] | None = None) -> tuple[bytes, int]:
    """The JSON of ``{**body, **tail}``, and the length of its prefix that depends on body alone
    (all of it when the two cannot be told apart: then nothing is reused, but nothing is wrong).
    ``key``: what fixes ``body`` (path and ETag), when something does."""
    if not tail or not body or tail.keys() & body.keys():
        data = dumps({**body, **tail}).encode()
        return data, len(data)
    hit = _heads.get(key) if key is not None else None
    if hit is not None:
        head = hit[0]
    else:
        head = dumps(body).encode()  # '{...}'
        if key is not None and len(head) <= HEAD_CACHE_MAX_BYTES:
            _heads.put(key, head)
    return head[:-1] + b"," + dumps(tail).encode()[1:], len(head) - 1


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return _json_response(body, {}, status, headers)


def _json_response(
    body: dict[str, Any], tail: dict[str, Any], status: int, headers: dict[str, str] | None,
    key: tuple[str, str] | None = None,
) -> JsonResponse:
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    if simulated():
        # make demo runs against the stand-in: no response may pass for real market data.
        tail = {**tail, "simulated": True}
        all_headers["X-Data-Simulated"] = "true"
    data, stable = _serialise(body, tail, key)
    return JsonResponse(data, stable, status_code=status, headers=all_headers)


def error_response(error: AppError) -> func.HttpResponse:
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, BadRequest) and error.parameter:
        payload["parameter"] = error.parameter
    return json_response({"error": payload}, error.status, error.headers)


def _held_tag(header: str | None, etag: str, prefer_gzip: bool) -> str | None:
    """The tag of the copy an If-None-Match says the client holds: identity or gzip, preferring
    the one this request would get; ``"*"`` for a wildcard; None when nothing matches."""
    if not header:
        return None
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    plain, gzipped = f'"{etag}"', f'"{etag}{GZIP_ETAG_SUFFIX}"'
    for tag in (gzipped, plain) if prefer_gzip else (plain, gzipped):
        if tag in candidates:
            return tag
    return "*" if "*" in candidates else None


def cache_headers(freshness: dict[str, Any], etag: str, ttl_s: int) -> dict[str, str]:
    """ETag and Cache-Control of a cached answer (JSON or CSV): max-age is what is left of the TTL."""
    fresh = freshness.get("source") != "stale"
    max_age = max(0, int(ttl_s - freshness.get("age_seconds", 0))) if fresh else 0
    return {
        "ETag": f'"{etag}"',
        # Browsers and CDNs may keep using a copy while revalidating, or while we are failing.
        "Cache-Control": f"public, max-age={max_age}, stale-while-revalidate={ttl_s}, stale-if-error=86400",
    }


def held_tag(req: func.HttpRequest, etag: str) -> str | None:
    """The tag If-None-Match says the client holds of an answer never gzipped (see _held_tag)."""
    return _held_tag(req.headers.get("If-None-Match"), etag, False)


def cached_json(
    req: func.HttpRequest,
    body: dict[str, Any],
    *,
    freshness: dict[str, Any],
    etag: str,
    ttl_s: int,
    body_key: str | None = None,
) -> func.HttpResponse:
    """A cacheable response: freshness in the body, Cache-Control from the TTL, ETag/304.

    A 304 carries the tag of the copy the client revalidated (identity or gzip), which is the one
    a cache must freshen. ``body_key``: what fixes ``body`` in this process, if anything (see _heads).
    """
    headers = cache_headers(freshness, etag, ttl_s)
    held = _held_tag(req.headers.get("If-None-Match"), etag, accepts_gzip(req.headers.get("Accept-Encoding")))
    if held is None:
        observability.note_cache(str(freshness.get("source")))
        key = (urlsplit(req.url).path, body_key) if body_key is not None else None
        return _json_response(body, {"freshness": freshness}, 200, headers, key)
    observability.note_cache("not_modified")
    if held == "*":  # any current copy: the tag of the one this request would get
        held = encode(req, _json_response(body, {"freshness": freshness}, 200, headers)).headers["ETag"]
    return func.HttpResponse(status_code=304, headers={**headers, "ETag": held})
