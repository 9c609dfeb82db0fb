"""HTTP helpers: JSON responses, caching, compression, CORS, query-parameter parsing, and the one
error mapper.

Every handler in ``function_app.py`` is wrapped in :func:`endpoint`, so any failure becomes a
``{"error": {"code", "message"}}`` body with the right status, and nothing internal leaks. The
wrapper also gzips JSON bodies a client accepts compressed (Azure Functions does not compress
for us), labels every answer in demo mode, and adds the CORS headers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.core import deadline, observability
from shared.core.config import get_settings
from shared.core.errors import AppError, BadRequest, ConfigError, UpstreamError

log = logging.getLogger("polymarket_api.http")

JSON = "application/json"
DEFAULT_REQUEST_DEADLINE_S = 5.0  # when the settings themselves are broken
Handler = Callable[[func.HttpRequest], func.HttpResponse]

# Every response header this app sets that a browser frontend must read and that is not
# CORS-safelisted (Cache-Control, Content-Type and Content-Length are): without
# Access-Control-Expose-Headers, ``response.headers.get("ETag")`` is null in JavaScript. The
# local host exposes the same list on the answers it makes itself (devtools/funchost/cors.py).
EXPOSED_HEADERS = ("ETag", "Retry-After", "X-Data-Simulated", "Content-Encoding")

# gzip: JSON bodies from 1 KB (below that the header costs about what it saves). Level 5: on a
# 500 KB markets page it gives 27.1% of the size in 6.5 ms, where 6 gives 26.8% in 7.6 ms and 9
# gives 26.6% in 11.4 ms (measured on this project's 2-core machine).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5
# The gzip representation of an answer is another representation: its own tag (If-None-Match
# accepts either, so a copy of each revalidates).
GZIP_ETAG_SUFFIX = "-gzip"


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


def _simulated() -> bool:
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


def _serialise(body: dict[str, Any], tail: dict[str, Any]) -> tuple[bytes, int]:
    """The JSON of ``{**body, **tail}``, and the length of its prefix that depends on body alone
    (all of it when the two cannot be told apart: then nothing is reused, but nothing is wrong)."""
    if not tail or not body or tail.keys() & body.keys():
        data = dumps({**body, **tail}).encode()
        return data, len(data)
    head = dumps(body).encode()  # '{...}'
    return head[:-1] + b"," + dumps(tail).encode()[1:], len(head) - 1


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return _json_response(body, {}, status, headers)


def _json_response(
    body: dict[str, Any], tail: dict[str, Any], status: int, headers: dict[str, str] | None
) -> JsonResponse:
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    if _simulated():
        # make demo runs against the stand-in: no response may pass for real market data.
        tail = {**tail, "simulated": True}
        all_headers["X-Data-Simulated"] = "true"
    data, stable = _serialise(body, tail)
    return JsonResponse(data, stable, status_code=status, headers=all_headers)


def error_response(error: AppError) -> func.HttpResponse:
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, BadRequest) and error.parameter:
        payload["parameter"] = error.parameter
    return json_response({"error": payload}, error.status, error.headers)


def endpoint(handler: Handler) -> Handler:
    """Wrap a handler: one error mapper, compression, the demo label, CORS headers, and a
    structured log line per request.

    The wrapper declares ``context`` so Azure passes the invocation context (its id goes into
    the log); it stays optional, so tests can call handlers with a request alone. Its
    annotations are the handler's real classes (copied below), and ``context`` carries none:
    the worker checks what it finds there, and this module's annotations are only strings.
    """

    def wrapper(req, context=None):
        observability.setup()
        invocation_id = getattr(context, "invocation_id", None)
        path = urlsplit(req.url).path
        with observability.request_scope(handler.__name__, path, req.method, invocation_id) as scope:
            response = _encode(req, _handle(handler, req))
            if _simulated():
                response.headers["X-Data-Simulated"] = "true"  # 304s and non-JSON answers too
            _add_cors(req, response)
            observability.log_request(scope, response.status_code)
        return response

    functools.update_wrapper(wrapper, handler)  # name, docstring and the handler's annotations
    del wrapper.__wrapped__  # Azure must see the wrapper's parameters (req, context), not the handler's
    return wrapper


def _request_deadline_s() -> float:
    try:
        return get_settings().app.request_deadline_s
    except ConfigError:
        return DEFAULT_REQUEST_DEADLINE_S


def _handle(handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
    try:
        with deadline.within(_request_deadline_s()):
            return handler(req)
    except AppError as error:
        if isinstance(error, UpstreamError):
            log.warning("upstream failure %s %s: %s", error.upstream, error.kind, error.detail)
        elif error.status >= 500:
            log.error("%s: %s", error.code, error.message)
        return error_response(error)
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error, incident %s", incident)
        return error_response(AppError(f"internal error (incident {incident})"))


def _add_vary(response: func.HttpResponse, name: str) -> None:
    present = [v.strip() for v in (response.headers.get("Vary") or "").split(",") if v.strip()]
    if name.lower() not in (v.lower() for v in present):
        response.headers["Vary"] = ", ".join([*present, name])


def _add_cors(req: func.HttpRequest, response: func.HttpResponse) -> None:
    """CORS headers from CORS_ALLOWED_ORIGINS; nothing at all when it is not set (Azure's default).

    A listed origin gets itself back in Access-Control-Allow-Origin, so every answer, with or
    without an Origin, allowed or not, says ``Vary: Origin``: a shared cache must not hand the
    copy made for one origin (or for none) to another. ``*`` is the same for everyone, so it is
    sent on every answer and needs no Vary.
    """
    try:
        allowed = get_settings().app.cors_origins
    except ConfigError:
        return
    if not allowed:
        return
    if "*" in allowed:
        response.headers["Access-Control-Allow-Origin"] = "*"
    else:
        _add_vary(response, "Origin")
        origin = req.headers.get("Origin")
        if not origin or origin.strip().rstrip("/").lower() not in allowed:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)


# --- compression -----------------------------------------------------------------------------


_QVALUE_RE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding allows gzip: ``gzip`` (or ``x-gzip``, or ``*`` when gzip is not
    named) with a q-value above 0. ``gzip;q=0`` refuses it; an unreadable q-value counts as 0."""
    if not header:
        return False  # no header: identity, as every server does in practice
    named: float | None = None
    star: float | None = None
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        coding = coding.lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE_RE.fullmatch(value) else 0.0
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q
    if named is not None:
        return named > 0
    return star is not None and star > 0


def _is_json(response: func.HttpResponse) -> bool:
    content_type = response.headers.get("Content-Type") or response.mimetype or ""
    return content_type.split(";")[0].strip().lower() == JSON


def _gzip_tag(tag: str) -> str:
    weak, _, opaque = tag.rpartition('"')[0].partition('"')
    return f'{weak}"{opaque}{GZIP_ETAG_SUFFIX}"'


def _encode(req: func.HttpRequest, response: func.HttpResponse) -> func.HttpResponse:
    """Gzip a JSON body of GZIP_MIN_BYTES or more when the request accepts it.

    Every JSON answer says ``Vary: Accept-Encoding`` (whether a URL's body reaches the threshold
    depends on its data, e.g. a page's ``limit``), and so does a 304, as its 200 would.
    """
    if response.status_code == 304:
        _add_vary(response, "Accept-Encoding")
        return response
    if not _is_json(response) or "Content-Encoding" in response.headers:
        return response
    _add_vary(response, "Accept-Encoding")
    body = response.get_body()
    # The part the content fixes decides, so one ETag always gets the same encoding.
    stable = response.stable if isinstance(response, JsonResponse) else len(body)
    if stable < GZIP_MIN_BYTES or not accepts_gzip(req.headers.get("Accept-Encoding")):
        return response
    headers = dict(response.headers)
    etag = response.headers.get("ETag")
    headers["Content-Encoding"] = "gzip"
    if etag:
        headers["ETag"] = _gzip_tag(etag)
    return func.HttpResponse(_gzip(body, stable, etag), status_code=response.status_code, headers=headers,
                             mimetype=response.mimetype, charset=response.charset)


@dataclass
class _Deflated:
    head: bytes  # the stable prefix of a body
    out: bytes  # gzip output for it so far
    state: Any  # the zlib compressor right after it (copied for each body that starts with head)

    @property
    def size(self) -> int:
        return len(self.head) + len(self.out) + _DEFLATE_STATE_BYTES


# A cached page's body changes from request to request only in its last bytes (freshness), so the
# compression of the rest is kept per ETag and reused when the same bytes come again: a 500 KB
# page then costs what its last few hundred bytes cost. A body whose prefix differs (another
# version under a reused tag) is compressed afresh, so the cache cannot serve wrong bytes.
_GZIP_CACHE_MIN_BYTES = 16 * 1024  # smaller bodies compress in well under 0.2 ms
_GZIP_CACHE_MAX_BYTES = 32 * 1024 * 1024
_DEFLATE_STATE_BYTES = 320 * 1024  # zlib's window, hash chains and pending buffer at memLevel 8
_gzip_cache: OrderedDict[str, _Deflated] = OrderedDict()
_gzip_cache_bytes = 0
_gzip_lock = threading.Lock()


def _compressor() -> Any:
    return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip wrapper, mtime 0


def _gzip(body: bytes, stable: int, key: str | None) -> bytes:
    global _gzip_cache_bytes
    if key is None or stable < _GZIP_CACHE_MIN_BYTES:
        compressor = _compressor()
        return compressor.compress(body) + compressor.flush()
    head = body[:stable]
    with _gzip_lock:
        entry = _gzip_cache.get(key)
        if entry is not None:
            _gzip_cache.move_to_end(key)
    if entry is None or entry.head != head:
        compressor = _compressor()
        entry = _Deflated(head, compressor.compress(head), compressor)
        with _gzip_lock:
            old = _gzip_cache.pop(key, None)
            _gzip_cache_bytes -= old.size if old else 0
            _gzip_cache[key] = entry
            _gzip_cache_bytes += entry.size
            while _gzip_cache_bytes > _GZIP_CACHE_MAX_BYTES and len(_gzip_cache) > 1:
                _gzip_cache_bytes -= _gzip_cache.popitem(last=False)[1].size
    rest = entry.state.copy()
    return entry.out + rest.compress(body[stable:]) + rest.flush()


# --- caching -------------------------------------------------------------------------------


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


def cached_json(
    req: func.HttpRequest,
    body: dict[str, Any],
    *,
    freshness: dict[str, Any],
    etag: str,
    ttl_s: int,
) -> func.HttpResponse:
    """A cacheable response: freshness in the body, Cache-Control from the TTL, ETag/304.

    A 304 carries the tag of the copy the client revalidated (identity or gzip), which is the one
    a cache must freshen.
    """
    fresh = freshness.get("source") != "stale"
    max_age = max(0, int(ttl_s - freshness.get("age_seconds", 0))) if fresh else 0
    headers = {
        "ETag": f'"{etag}"',
        # Browsers and CDNs may keep using a copy while revalidating, or while we are failing.
        "Cache-Control": f"public, max-age={max_age}, stale-while-revalidate={ttl_s}, stale-if-error=86400",
    }
    held = _held_tag(req.headers.get("If-None-Match"), etag, accepts_gzip(req.headers.get("Accept-Encoding")))
    if held is None:
        observability.note_cache(str(freshness.get("source")))
        return _json_response(body, {"freshness": freshness}, 200, headers)
    observability.note_cache("not_modified")
    if held == "*":  # any current copy: the tag of the one this request would get
        held = _encode(req, _json_response(body, {"freshness": freshness}, 200, headers)).headers["ETag"]
    return func.HttpResponse(status_code=304, headers={**headers, "ETag": held})


# --- query parameters ----------------------------------------------------------------------


_UINT_RE = re.compile(r"[0-9]{1,9}")


def is_uint(text: str) -> bool:
    """1 to 9 ASCII digits. Not ``str.isdigit()``: that also accepts ``"²"`` (which ``int()``
    rejects: a 500) and ``"١٢"``, and it accepts 5,000 digits (past ``int()``'s limit)."""
    return _UINT_RE.fullmatch(text) is not None


def parse_bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = (params.get(name) or "").strip().lower()
    if value == "":
        return default
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(f"parameter '{name}' must be true or false", parameter=name)


def bool_param(req: func.HttpRequest, name: str, default: bool) -> bool:
    return parse_bool(req.params, name, default)
