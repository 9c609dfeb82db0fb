"""The in-memory events catalogue: every event with a market in the markets catalogue's window,
built from the stored ``events`` rows and the markets snapshot's items (search and sort need
none of their JSON; an event's JSON is made from its markets' when first served), searched,
sorted and paged without I/O, and the opaque cursors its pages hand out.

An event is what its markets say of it where its own row is silent: aggregates missing from the
row are summed over its markets, and an event row without tags takes the union of its markets'.
A market or event that cannot be served is left out and counted, never a failed build.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.core import paging
from shared.core.paging import SortKey
from shared.core.paging import slug as tag_slug
from shared.events.query import EventQuery
from shared.markets.snapshot import Unloadable, compact_market, number

log = logging.getLogger("polymarket_api.events")

MAX_WARNINGS = 20
MAX_SELECTIONS = 64  # filtered selections kept per catalogue (bounded: arbitrary q/tag values)
_SERIALS = itertools.count(1)
SUMMED = ("volume", "volume_24h", "liquidity")  # summed over the markets when the event row lacks one



def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise Unloadable("unreadable timestamp")
    return value.isoformat()


def _first_price(market: dict[str, Any]) -> float | None:
    outcomes = market["outcomes"]
    return outcomes[0]["price"] if outcomes else None


def order_candidates(markets: list[dict[str, Any]], neg_risk: bool) -> list[dict[str, Any]]:
    """Neg-risk candidates by their first outcome's display price, highest first (unpriced last);
    other events' markets by volume. Ties by condition id, so the order is stable."""
    def key(m: dict[str, Any]) -> SortKey:
        return paging.sort_key(_first_price(m) if neg_risk else m.get("volume"), m["condition_id"], True)

    return sorted(markets, key=key)


def neg_risk_summary(markets: list[dict[str, Any]], neg_risk: bool,
                     other_ids: list[str]) -> dict[str, Any]:
    """``price_sum``, ``leading`` and ``other_candidate`` of an event whose markets are in
    candidate order (``order_candidates``); all null for an event that is not neg-risk."""
    if not neg_risk:
        return {"price_sum": None, "leading": None, "other_candidate": None}
    priced = [m for m in markets if _first_price(m) is not None]
    placeholders = set(other_ids)
    leader = next((m for m in priced if m["condition_id"] not in placeholders), priced[0] if priced else None)
    others = sorted(other_ids)
    return {
        "price_sum": round(sum(_first_price(m) or 0.0 for m in priced), 6) if priced else None,
        "leading": {"condition_id": leader["condition_id"], "group_item_title": leader.get("group_item_title"),
                    "price": _first_price(leader)} if leader else None,
        "other_candidate": others[0] if others else None,
    }


def other_candidates(markets: list[dict[str, Any]]) -> list[str]:
    """The markets Gamma marks as an event's "Other" placeholder (``negRiskOther``)."""
    return [m["condition_id"] for m in markets if m.get("neg_risk_other")]


def event_json(row: dict[str, Any] | None, event_id: str, markets: list[dict[str, Any]],
               other_ids: list[str]) -> dict[str, Any]:
    """An event's JSON (without its markets): its stored row where it has one, else what its
    markets' rows say of it. ``markets``: its markets' list JSON, in candidate order."""
    row = row or {}
    first = (markets[0]["event"] or {}) if markets else {}
    neg_risk = bool(row.get("neg_risk"))
    out: dict[str, Any] = {
        "id": event_id,
        "slug": row.get("slug") or first.get("slug"),
        "title": row.get("title") or first.get("title"),
        "description": row.get("description"),
        "image": row.get("image"),
        "icon": row.get("icon"),
        "start_date": _iso(row.get("start_date")),
        "end_date": _iso(row.get("end_date")),
    }
    for name in SUMMED:
        value = number(row.get(name))
        if value is None:
            values = [v for m in markets if (v := m.get(name)) is not None]
            value = sum(values) if values else None
        out[name] = value
    out["open_interest"] = number(row.get("open_interest"))
    out["competitive"] = number(row.get("competitive"))
    out["neg_risk"] = neg_risk
    out["closed"] = bool(row.get("closed")) or all(m["status"] != "open" for m in markets)
    out["active"] = not out["closed"] and any(m["active"] for m in markets)
    tags, labels = list(row.get("tags") or []), list(row.get("tag_labels") or [])
    if not tags:
        union: dict[str, str] = {}
        for m in markets:
            for tag, label in itertools.zip_longest(m["tags"], m.get("tag_labels") or [], fillvalue=None):
                if tag is not None:
                    union.setdefault(tag, label or tag)
        tags, labels = list(union), list(union.values())
    out["tags"] = tags
    out["tag_labels"] = labels if len(labels) == len(tags) else tags
    out["market_count"] = len(markets)
    out.update(neg_risk_summary(markets, neg_risk, other_ids))
    return out


class EventItem:
    """One event: what search and sorting read, built without its markets' JSON (which a new
    instance holds compressed until served), and its list JSON, made when first served from
    its stored row and its markets' list JSON. Not changed once built."""

    __slots__ = ("_body", "_markets", "_row", "active", "event_id", "market_ids", "slug", "sort_values", "tags",
                 "text")

    def __init__(self, event_id: str, row: dict[str, Any] | None, market_ids: tuple[str, ...],
                 markets: MarketSource, *, slug: str | None, title: str | None, tags: Iterable[str],
                 active: bool, sort_values: dict[str, float | None]) -> None:
        self.event_id = event_id
        self._row = row
        self._markets = markets
        self._body: dict[str, Any] | None = None
        self.market_ids = market_ids
        self.slug = slug
        self.text = f"{title or ''} {slug or ''}".lower()
        self.tags = frozenset(tags)
        self.active = active
        self.sort_values = sort_values

    def full_markets(self) -> list[dict[str, Any]]:
        """Its markets' list JSON, in candidate order (``order_candidates``)."""
        markets = [m for c in self.market_ids if (m := self._markets.market_json(c)) is not None]
        return order_candidates(markets, bool(self._row and self._row.get("neg_risk")))

    @property
    def json(self) -> dict[str, Any]:
        # Two threads may both build it: the same value.
        body = self._body
        if body is None:
            ordered = self.full_markets()
            body = event_json(self._row, self.event_id, ordered, other_candidates(ordered))
            body.update((name, self.sort_values[name]) for name in (*SUMMED, "competitive"))  # as sorted
            body["markets"] = [compact_market(m) for m in ordered]
            self._body = body
        return body


class MarketSource(Protocol):
    """Where an event's markets' list JSON is (the markets snapshot)."""

    def market_json(self, condition_id: str) -> dict[str, Any] | None: ...


def _sort_key(item: EventItem, sort: str, descending: bool) -> SortKey:
    return paging.sort_key(item.sort_values[sort], item.event_id, descending)


@dataclass
class Selection:
    items: list[EventItem]
    keys: list[SortKey]


class EventsCatalogue:
    """An immutable view of the events, with memoised (bounded) selections per query.

    ``source``: what it was built from (the markets snapshot's version and the events table's
    fingerprint), so an unchanged store is not read twice; ``version`` goes into ETags."""

    def __init__(self, items: list[EventItem], skipped: int, markets: MarketSource, *, source: tuple[str, str],
                 version: str, markets_serial: int) -> None:
        self.items = items
        self.markets = markets
        self.skipped = skipped
        self.source = source
        self.version = version
        self.markets_serial = markets_serial  # the markets snapshot last checked against
        self.serial = next(_SERIALS)  # unique in this process: a body key never outlives it
        self.by_id = {item.event_id: item for item in items}
        self.by_slug = {item.slug: item for item in items if item.slug}
        self._ordered: dict[tuple[str, bool, bool], Selection] = {}
        self._filtered: OrderedDict[tuple[Any, ...], Selection] = OrderedDict()
        self._lock = threading.Lock()

    def find(self, ref: str) -> EventItem | None:
        return self.by_id.get(ref) or self.by_slug.get(ref)

    def _order(self, sort: str, descending: bool, active_only: bool) -> Selection:
        key = (sort, descending, active_only)
        with self._lock:
            found = self._ordered.get(key)
        if found is not None:
            return found
        keyed = sorted((_sort_key(i, sort, descending), i) for i in self.items if i.active or not active_only)
        ordered = Selection([i for _, i in keyed], [k for k, _ in keyed])
        with self._lock:
            self._ordered[key] = ordered  # at most 5 sorts x 2 orders x 2 scopes
        return ordered

    def select(self, query: EventQuery) -> Selection:
        ordered = self._order(query.sort, query.order == "desc", query.active_only)
        if not query.q and not query.tag:
            return ordered
        key = (query.active_only, query.q, query.tag, query.sort, query.order)
        with self._lock:
            found = self._filtered.get(key)
            if found is not None:
                self._filtered.move_to_end(key)
                return found
        terms = query.q.lower().split() if query.q else []
        tag = tag_slug(query.tag) if query.tag else None
        positions = [p for p, item in enumerate(ordered.items)
                     if all(term in item.text for term in terms) and (tag is None or tag in item.tags)]
        selection = Selection([ordered.items[p] for p in positions], [ordered.keys[p] for p in positions])
        with self._lock:
            self._filtered[key] = selection
            while len(self._filtered) > MAX_SELECTIONS:
                self._filtered.popitem(last=False)
        return selection

    def page(self, query: EventQuery) -> tuple[list[EventItem], str | None, int]:
        """(the page's events, the next page's cursor or None, how many match)."""
        after = decode_cursor(query, query.cursor) if query.cursor else None
        selection = self.select(query)
        start = 0 if after is None else bisect.bisect_right(selection.keys, after)
        page = selection.items[start : start + query.limit]
        more = start + query.limit < len(selection.items)
        next_cursor = encode_cursor(query, selection.keys[start + len(page) - 1]) if more and page else None
        return page, next_cursor, len(selection.items)


@dataclass(frozen=True)
class Member:
    """A market as the catalogue is built from it: what its snapshot item holds unparsed."""

    condition_id: str
    active: bool
    open: bool
    sort_values: dict[str, float | None]


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise Unloadable("unreadable timestamp")
    return value.timestamp()


def build(event_rows: list[dict[str, Any]], grouped: dict[str, list[Member]], markets: MarketSource, *,
          source: tuple[str, str], version: str, markets_serial: int) -> EventsCatalogue:
    """The catalogue of these events (event id -> its markets in the markets catalogue)."""
    rows = {row["event_id"]: row for row in event_rows}
    items: list[EventItem] = []
    skipped = 0
    for event_id, members in grouped.items():
        row = rows.get(event_id)
        try:
            items.append(_event_item(event_id, row, members, markets))
        except (Unloadable, TypeError, ValueError, KeyError, AttributeError) as error:
            skipped += 1
            if skipped <= MAX_WARNINGS:
                log.warning("stored event %s left out of the events catalogue: %s", event_id,
                            error if isinstance(error, Unloadable) else type(error).__name__)
    if skipped > MAX_WARNINGS:
        log.warning("%d more stored events left out of the events catalogue", skipped - MAX_WARNINGS)
    return EventsCatalogue(items, skipped, markets, source=source, version=version, markets_serial=markets_serial)


def _event_item(event_id: str, row: dict[str, Any] | None, members: list[Member],
                markets: MarketSource) -> EventItem:
    """What search and sort need; the markets' JSON is read only for an event without a stored
    row or without tags of its own (its names and tags then come from its markets)."""
    sort_values: dict[str, float | None] = {}
    for name in SUMMED:
        value = number(row.get(name)) if row else None
        if value is None:
            values = [v for m in members if (v := m.sort_values.get(name)) is not None]
            value = sum(values) if values else None
        sort_values[name] = value
    sort_values["competitive"] = number(row.get("competitive")) if row else None
    sort_values["end_date"] = _timestamp(row.get("end_date")) if row else None
    if row:
        _timestamp(row.get("start_date"))  # an unreadable one fails here, not when served
    slug, title = (row.get("slug"), row.get("title")) if row else (None, None)
    tags = list(row.get("tags") or []) if row else []
    labels = list(row.get("tag_labels") or []) if row else []
    if not row or not (slug and title) or not tags:
        bodies = [b for m in members if (b := markets.market_json(m.condition_id)) is not None]
        first = (bodies[0]["event"] or {}) if bodies else {}
        slug, title = slug or first.get("slug"), title or first.get("title")
        if not tags:
            tags = list(dict.fromkeys(t for body in bodies for t in body["tags"]))
    closed = bool(row and row.get("closed")) or not any(m.open for m in members)
    return EventItem(
        event_id, row, tuple(m.condition_id for m in members), markets, slug=slug, title=title,
        tags=itertools.chain((t.lower() for t in tags), (tag_slug(label) for label in labels)),
        active=not closed and any(m.active for m in members), sort_values=sort_values,
    )


# --- cursors ---------------------------------------------------------------------------------

CURSOR_PARAMETERS = "q, tag, sort, order or active_only"


def encode_cursor(query: EventQuery, key: SortKey) -> str:
    return paging.encode_cursor(query.fingerprint(), key)


def decode_cursor(query: EventQuery, cursor: str) -> SortKey:
    return paging.decode_cursor(query.fingerprint(), cursor, CURSOR_PARAMETERS)
