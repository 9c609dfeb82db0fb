"""``/api/tags``: the tags of the active catalogue with market and event counts, from the
in-memory markets snapshot (no SQL per request), counted once per snapshot."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer
from shared.markets.service import MarketsService
from shared.markets.snapshot import Snapshot


def count_tags(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Each tag slug of an active market: its label (upstream's casing, the first seen), how many
    active markets and distinct events carry it; most markets first, then by slug."""
    markets: Counter[str] = Counter()
    events: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    for item in snapshot.items:
        if not item.active:
            continue
        body = item.json
        event = body.get("event")
        event_id = event["id"] if event else None
        tags = body["tags"]
        given = body["tag_labels"]  # parallel to tags
        for index, slug in enumerate(dict.fromkeys(tags)):
            markets[slug] += 1
            if event_id is not None:
                events.setdefault(slug, set()).add(event_id)
            if slug not in labels and index < len(given) and given[index]:
                labels[slug] = given[index]
    return [
        {"slug": slug, "label": labels.get(slug, slug), "market_count": count,
         "event_count": len(events.get(slug, ()))}
        for slug, count in sorted(markets.items(), key=lambda pair: (-pair[1], pair[0]))
    ]


class Tags:
    """The tag counts of the snapshot the markets service serves, made once per snapshot."""

    def __init__(self, markets: Callable[[], MarketsService]) -> None:
        self._markets = markets
        self._lock = threading.Lock()
        self._made: tuple[int, list[dict[str, Any]]] | None = None

    def answer(self, ttl_s: int) -> Answer:
        snapshot, freshness = self._markets().current()
        made = self._made
        if made is None or made[0] != snapshot.serial:
            with self._lock:
                made = self._made
                if made is None or made[0] != snapshot.serial:
                    made = self._made = (snapshot.serial, count_tags(snapshot))
        tags = made[1]
        etag = make_etag("tags", snapshot.version)
        body = {"tags": tags, "total": len(tags)}
        return Answer(body, freshness, etag, ttl_s, f"tags:{snapshot.serial}:{etag}")
