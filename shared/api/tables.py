"""CSV answers (``format=csv``): the one CSV writer, with the caching of the JSON answers.

A header row, then one row per point; times are ISO 8601 UTC, numbers as the JSON has them (so
a CSV parses back to the JSON's values), an unknown value is an empty field. The ETag differs
from the JSON's (derived from it): the two are different representations. Never gzipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

import azure.functions as func

from shared.api.responses import cache_headers, held_tag, simulated
from shared.core import observability
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer

CSV = "text/csv"


def _text(value: Any) -> Any:
    return "" if value is None else value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    writer.writerows([_text(v) for v in row] for row in rows)
    return out.getvalue()


def cached_csv(req: func.HttpRequest, answer: Answer, header: Sequence[str], rows: Iterable[Sequence[Any]],
               filename: str) -> func.HttpResponse:
    """``answer`` as a CSV attachment named ``filename``: ETag/304 and Cache-Control as
    ``cached_json``; its freshness in ``X-Freshness-Source`` (and ``X-Stale-Reason``)."""
    freshness = answer.freshness.as_dict()
    tag = make_etag(answer.etag, "csv")
    headers = cache_headers(freshness, tag, answer.ttl_s)
    if held_tag(req, tag) is not None:
        observability.note_cache("not_modified")
        return func.HttpResponse(status_code=304, headers=headers)
    observability.note_cache(str(freshness.get("source")))
    headers.update({"Content-Type": f"{CSV}; charset=utf-8",
                    "Content-Disposition": f'attachment; filename="{filename}"',
                    "X-Content-Type-Options": "nosniff", "X-Freshness-Source": str(freshness["source"])})
    if freshness.get("stale_reason"):
        # A header value is one line of latin-1: the reason is ours, plain ASCII.
        headers["X-Stale-Reason"] = str(freshness["stale_reason"]).encode("ascii", "replace").decode()
    if simulated():
        headers["X-Data-Simulated"] = "true"
    return func.HttpResponse(csv_text(header, rows).encode(), status_code=200, headers=headers)
