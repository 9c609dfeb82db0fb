"""gzip for JSON answers (Azure Functions does not compress for us), with the compression of a
cached body's stable prefix reused per ETag."""

from __future__ import annotations

import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.api.headers import JSON, add_vary

# gzip: JSON bodies from 1 KB (below that the header costs about what it saves). Level 5: on a
# 500 KB markets page it gives 27.1% of the size in 6.5 ms, where 6 gives 26.8% in 7.6 ms and 9
# gives 26.6% in 11.4 ms (measured on this project's 2-core machine).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5
# The gzip representation of an answer is another representation: its own tag (If-None-Match
# accepts either, so a copy of each revalidates).
GZIP_ETAG_SUFFIX = "-gzip"


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


def encode(req: func.HttpRequest, response: func.HttpResponse) -> func.HttpResponse:
    """Gzip a JSON body of GZIP_MIN_BYTES or more when the request accepts it.

    Every JSON answer says ``Vary: Accept-Encoding`` (whether a URL's body reaches the threshold
    depends on its data, e.g. a page's ``limit``), and so does a 304, as its 200 would.
    """
    if response.status_code == 304:
        add_vary(response, "Accept-Encoding")
        return response
    if not _is_json(response) or "Content-Encoding" in response.headers:
        return response
    add_vary(response, "Accept-Encoding")
    body = response.get_body()
    # The part the content fixes decides, so one ETag always gets the same encoding.
    stable = getattr(response, "stable", len(body))  # a JsonResponse knows it (shared.api.responses)
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
