"""Header helpers every HTTP module shares."""

from __future__ import annotations

import azure.functions as func

JSON = "application/json"


def add_vary(response: func.HttpResponse, name: str) -> None:
    present = [v.strip() for v in (response.headers.get("Vary") or "").split(",") if v.strip()]
    if name.lower() not in (v.lower() for v in present):
        response.headers["Vary"] = ", ".join([*present, name])
