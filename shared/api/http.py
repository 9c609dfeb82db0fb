"""The HTTP layer's public names, from the modules that own them: ``responses`` (JSON, cached
answers, ETag/304), ``compression`` (gzip), ``cors``, and ``endpoint`` (the handler wrapper and the
one error mapper). Import from here or from those modules alike."""

from __future__ import annotations

from shared.api.compression import GZIP_ETAG_SUFFIX, GZIP_LEVEL, GZIP_MIN_BYTES, _gzip, accepts_gzip, encode
from shared.api.cors import EXPOSED_HEADERS, add_cors
from shared.api.endpoint import DEFAULT_REQUEST_DEADLINE_S, Handler, endpoint
from shared.api.headers import JSON, add_vary
from shared.api.responses import (
    JsonResponse,
    _serialise,
    cached_json,
    dumps,
    error_response,
    json_response,
    simulated,
)

__all__ = [
    "DEFAULT_REQUEST_DEADLINE_S", "EXPOSED_HEADERS", "GZIP_ETAG_SUFFIX", "GZIP_LEVEL", "GZIP_MIN_BYTES", "JSON",
    "Handler", "JsonResponse", "_gzip", "_serialise", "accepts_gzip", "add_cors", "add_vary", "cached_json",
    "dumps", "encode", "endpoint", "error_response", "json_response", "simulated",
]
