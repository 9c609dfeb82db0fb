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
from shared.markets.snapshot import EVENT_FACET, LABEL_FACET, LABEL_SEPARATOR, TAG_FACET, Snapshot


def count_tags(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Each tag slug of an active market: its label (upstream's casing), how many active markets
    and distinct events carry it; most markets first, then by slug. From the markets' facets, not
    their JSON: a new instance holds that compressed, and counting must not inflate it all."""
    markets: Counter[str] = Counter()
    events: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    for item in snapshot.items:
        if not item.active:
            continue
        tags: list[str] = []
        event_id = None
        for facet in item.facets:
            if facet.startswith(TAG_FACET):
                tags.append(facet[len(TAG_FACET):])
            elif facet.startswith(EVENT_FACET):
                event_id = facet[len(EVENT_FACET):]
            elif facet.startswith(LABEL_FACET):
                tag, _, label = facet[len(LABEL_FACET):].partition(LABEL_SEPARATOR)
                labels.setdefault(tag, label)
        for tag in tags:
            markets[tag] += 1
            if event_id is not None:
                events.setdefault(tag, set()).add(event_id)
    return [
        {"slug": tag, "label": labels.get(tag, tag), "market_count": count, "event_count": len(events.get(tag, ()))}
        for tag, count in sorted(markets.items(), key=lambda pair: (-pair[1], pair[0]))
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
