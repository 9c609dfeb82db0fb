"""CORS headers from CORS_ALLOWED_ORIGINS (Azure's own CORS is off when the app sets them)."""

from __future__ import annotations

import azure.functions as func

from shared.api.headers import add_vary
from shared.core.config import get_settings
from shared.core.errors import ConfigError

# Every response header this app sets that a browser frontend must read and that is not
# CORS-safelisted (Cache-Control, Content-Type and Content-Length are): without
# Access-Control-Expose-Headers, ``response.headers.get("ETag")`` is null in JavaScript. The
# local host exposes the same list on the answers it makes itself (devtools/funchost/cors.py).
EXPOSED_HEADERS = ("ETag", "Retry-After", "X-Data-Simulated", "Content-Encoding")


def add_cors(req: func.HttpRequest, response: func.HttpResponse) -> None:
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
        add_vary(response, "Origin")
        origin = req.headers.get("Origin")
        if not origin or origin.strip().rstrip("/").lower() not in allowed:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
