"""Interactive documentation at /api/docs: Swagger UI, served by the app from the files the pinned
``swagger-ui-py`` package ships (no CDN: the page works where only this API is reachable).

The package is read as files, never imported (its Python side pulls in Jinja2 and PyYAML).
"""

from __future__ import annotations

import functools
import html
import importlib.util
from pathlib import Path

from shared.api.routes import API_PREFIX

PACKAGE = "swagger_ui"
# What the page uses, and its type. Names are not content-hashed: a day of caching, not forever.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
PAGE_CACHE = "public, max-age=3600"  # as the document it shows
ASSET_CACHE = "public, max-age=86400"
TITLE = "polymarket-api: API documentation"


def _static() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {PACKAGE} (swagger-ui-py) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def asset(name: str) -> bytes | None:
    """A listed file's bytes, or None for any other name (nothing else under the package is served)."""
    return _read(name) if name in ASSETS else None  # checked first: the cache holds listed names only


@functools.cache
def _read(name: str) -> bytes:
    return (_static() / name).read_bytes()


@functools.cache
def page() -> str:
    base = f"{API_PREFIX}/docs"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(TITLE)}</title>
<link rel="stylesheet" href="{base}/swagger-ui.css">
<link rel="icon" type="image/png" href="{base}/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{base}/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{API_PREFIX}/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  validatorUrl: null}});
</script>
</body>
</html>
"""
