"""The in-memory catalogue: an immutable ``Snapshot`` of the stored markets, searched, sorted and
paged without I/O, and the opaque cursors its pages hand out.

A stored row that cannot be served (an unreadable date, a number no float holds) is left out,
counted and named in the log: one row never stops the catalogue from loading.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from shared.core import paging
from shared.core.display import PRICE_RULE_NONE, PRICE_RULE_OUTCOME_PRICES, PRICE_RULE_RESOLVED, display_price
from shared.core.paging import SortKey, slug

if TYPE_CHECKING:  # service.py imports this module; only the type is needed here
    from shared.markets.query import MarketQuery

log = logging.getLogger("polymarket_api.markets")

MAX_ROW_WARNINGS = 20  # per refresh or load: the first rows skipped are named, the rest counted



_SERIALS = itertools.count(1)

class Unloadable(ValueError):
    """A stored row that cannot be served (an unreadable date, a number no float holds)."""


def number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float)):
        raise Unloadable("not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (a huge numeric inside JSON)
        raise Unloadable("number out of range") from None
    if not math.isfinite(number):
        raise Unloadable("number out of range")
    return number


def _date(value: Any) -> datetime | None:
    if value is not None and not isinstance(value, datetime):  # store.UNREADABLE
        raise Unloadable("unreadable timestamp")
    return value


def _resolution(row: dict[str, Any], closed: bool) -> tuple[str, int | None]:
    """(open | closed | resolved, the winning outcome's index): settled only when closed with
    outcome prices exactly 1 for one outcome and 0 for every other (the contract's rule)."""
    if not closed:
        return "open", None
    if not row["closed"]:
        # Left the open set, and Gamma has not said it closed: its last prices may read 1 and 0
        # while it still trades, which is no settlement.
        return "closed", None
    prices = [o["price"] for o in row["outcomes"]]
    if len(prices) >= 2 and all(p is not None for p in prices):
        ones = [i for i, p in enumerate(prices) if Decimal(str(p)) == 1]
        if len(ones) == 1 and all(Decimal(str(p)) == 0 for i, p in enumerate(prices) if i != ones[0]):
            return "resolved", ones[0]
    return "closed", None


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    number(value)  # the same rule as every other number: finite, a float holds it
    return value if isinstance(value, Decimal) else Decimal(str(value))


def outcome_prices(row: dict[str, Any], status: str, winner: int | None) -> list[tuple[float | None, str]]:
    """Each outcome's (display price, rule): settled prices once resolved; Polymarket's rule
    (``shared.core.display``) on Gamma's best bid, best ask and last trade of the first outcome
    while open, the second outcome of a binary market being its complement; else Gamma's
    ``outcomePrices``."""
    outcomes = row["outcomes"]
    if status == "resolved":
        return [(1.0 if i == winner else 0.0, PRICE_RULE_RESOLVED) for i in range(len(outcomes))]
    gamma = [(number(o["price"]), PRICE_RULE_OUTCOME_PRICES if o["price"] is not None else PRICE_RULE_NONE)
             for o in outcomes]
    if status != "open" or len(outcomes) != 2:
        return gamma
    bid, ask, last = _decimal(row["best_bid"]), _decimal(row["best_ask"]), _decimal(row["last_trade_price"])
    midpoint = spread = None
    if bid is not None and ask is not None and bid <= ask:
        midpoint, spread = (bid + ask) / 2, ask - bid
    price, rule = display_price(midpoint, spread, last)
    if price is None:
        return gamma
    return [(float(price), rule), (float(1 - price), rule)]


def market_json(row: dict[str, Any]) -> dict[str, Any]:
    active = bool(row["in_active_set"]) and not row["closed"]
    closed = bool(row["closed"]) or not row["in_active_set"]
    status, winner = _resolution(row, closed)
    prices = outcome_prices(row, status, winner)
    closed_time = _date(row["closed_time"])
    winner_outcome = row["outcomes"][winner] if winner is not None else None
    out = {
        "condition_id": row["condition_id"],
        "gamma_id": row["gamma_id"],
        "slug": row["slug"],
        "question": row["question"],
        "category": row["category"],
        "tags": list(row["tags"] or []),
        "event": {"id": row["event_id"], "slug": row["event_slug"], "title": row["event_title"]}
        if row["event_id"]
        else None,
        "tag_labels": list(row["tag_labels"] or []),
        "group_item_title": row["group_item_title"],
        "neg_risk_other": row["neg_risk_other"],
        "image": row["image"],
        "icon": row["icon"],
        "end_date": end_date.isoformat() if (end_date := _date(row["end_date"])) else None,
        "active": active,
        "closed": closed,
        "status": status,
        "closed_time": closed_time.isoformat() if closed_time else None,
        "resolution": {
            "status": status,
            "winner_outcome": winner_outcome["outcome"] if winner_outcome else None,
            "winner_token_id": winner_outcome["token_id"] if winner_outcome else None,
            "resolved_at": closed_time.isoformat() if closed_time and status == "resolved" else None,
            "uma_statuses": list(row["uma_statuses"] or []),
        },
        "accepting_orders": row["accepting_orders"],
        "volume": number(row["volume"]),
        "volume_24h": number(row["volume_24h"]),
        "liquidity": number(row["liquidity"]),
        "best_bid": number(row["best_bid"]),
        "best_ask": number(row["best_ask"]),
        "last_trade_price": number(row["last_trade_price"]),
        "spread": number(row["spread"]),
        "one_day_price_change": number(row["one_day_price_change"]),
        "outcomes": [
            {
                "outcome": o["outcome"],
                "token_id": o["token_id"],
                "price": price,
                "price_rule": rule,
                "outcome_price": number(o["price"]),
            }
            for o, (price, rule) in zip(row["outcomes"], prices, strict=True)
        ],
        "updated_at": _updated_at(row["updated_at"]),
    }
    return out


def compact_market(market: dict[str, Any]) -> dict[str, Any]:
    """A market as the events list and the resolver show it, from its list JSON (``market_json``)."""
    return {
        "condition_id": market["condition_id"],
        "question": market["question"],
        "group_item_title": market.get("group_item_title"),
        "status": market["status"],
        "outcomes": [
            {"token_id": o["token_id"], "outcome": o["outcome"], "price": o["price"], "price_rule": o["price_rule"]}
            for o in market["outcomes"]
        ],
    }


def _updated_at(value: Any) -> str:
    updated_at = _date(value)
    if updated_at is None:  # NOT NULL in the schema: a row without one is not ours to serve
        raise Unloadable("no updated_at")
    return updated_at.isoformat()


class BodySource(Protocol):
    """Where a market's list JSON is until first served (``shared.markets.compact``)."""

    def body_text(self, slot: int, condition_id: str) -> bytes: ...


class Item:
    """One market: its list JSON and what search and sorting read. Not changed once built.

    From a compact snapshot the JSON stays in its source (a compressed block) until the market
    is first served: a new instance then inflates and parses the few its first pages show."""

    __slots__ = ("_body", "_slot", "_source", "active", "condition_id", "facets", "sort_values", "text")

    def __init__(self, condition_id: str, body: dict[str, Any] | None, text: str, facets: frozenset[str],
                 active: bool, sort_values: dict[str, float | None], source: BodySource | None = None,
                 slot: int = 0) -> None:
        self.condition_id = condition_id
        self._body = body
        self._source = source
        self._slot = slot
        self.text = text  # lower-cased question + slug, for search
        self.facets = facets  # what filters and counts read (the *_FACET prefixes below)
        self.active = active
        self.sort_values = sort_values

    @property
    def json(self) -> dict[str, Any]:
        # Two threads may both decode it: the same value, and the source stays readable.
        body = self._body
        if body is None:
            source = self._source
            if source is None:
                raise RuntimeError("an item without a body or a source")  # not built by this package
            body = self._body = json.loads(source.body_text(self._slot, self.condition_id))
            self._source = None
        return body


def item_from_json(body: dict[str, Any], end_ts: float | None, sorts: Mapping[str, str]) -> Item:
    """The searchable, sortable item for a market's list JSON; ``end_ts``: its end date as a
    POSIX timestamp (kept apart so a compact snapshot need not parse dates again)."""
    tags = [t.lower() for t in body["tags"]]
    facets = {f"{TAG_FACET}{t}" for t in tags}
    facets.update(f"{LABEL_FACET}{t}{LABEL_SEPARATOR}{label}"
                  for t, label in zip(tags, body["tag_labels"], strict=False) if label)
    if body["category"]:
        facets.add(f"{CATEGORY_FACET}{slug(body['category'])}")
    if event := body["event"]:
        facets.add(f"{EVENT_FACET}{event['id']}")
        if event["slug"]:
            facets.add(f"{EVENT_SLUG_FACET}{event['slug'].lower()}")
    facets.add(f"{STATUS_FACET}{body['status']}")
    sort_values = {name: body[column] for name, column in sorts.items() if name not in TIME_SORTS}
    sort_values["end_date"] = end_ts
    if "closed_time" in sorts:
        closed_time = body["closed_time"]
        sort_values["closed_time"] = datetime.fromisoformat(closed_time).timestamp() if closed_time else None
    return Item(
        condition_id=body["condition_id"],
        body=body,
        text=f"{body['question']} {body['slug'] or ''}".lower(),
        facets=frozenset(facets),
        active=body["active"],
        sort_values=sort_values,
    )


def _item(row: dict[str, Any], sorts: Mapping[str, str]) -> Item:
    body = market_json(row)
    return item_from_json(body, row["end_date"].timestamp() if row["end_date"] else None, sorts)  # checked above


# Facets: what filters and counts read without a market's JSON (which a new instance holds
# compressed). Each kind has its prefix, so no value of one can pass for another.
TAG_FACET = "tag:"  # a tag slug
LABEL_FACET = "label:"  # a tag slug, LABEL_SEPARATOR, its label in upstream's casing (for /api/tags)
LABEL_SEPARATOR = "\x1f"  # a control character: upstream text never keeps one (rows.clean_text)
CATEGORY_FACET = "category:"
EVENT_FACET = "event:"  # the event id
EVENT_SLUG_FACET = "event-slug:"
STATUS_FACET = "status:"
TIME_SORTS = ("end_date", "closed_time")  # sorted by timestamp, not by a JSON number


def _sort_key(item: Item, sort: str, descending: bool) -> SortKey:
    return paging.sort_key(item.sort_values[sort], item.condition_id, descending)


@dataclass
class Selection:
    items: list[Item]
    keys: list[SortKey]
    # Parallel lists for filtering (ordered selections only): scanning a list of strings is
    # several times faster than reaching each item's attribute.
    texts: list[str] = field(default_factory=list)
    facets: list[frozenset[str]] = field(default_factory=list)


class Snapshot:
    """An immutable view of the catalogue, with memoised selections per query.

    A stored row that cannot be served is left out, counted in ``skipped`` and named in the log:
    one row never stops the catalogue from loading."""

    MAX_SELECTIONS = 64

    def __init__(self, items: list[Item], skipped_ids: list[str], *, version: str, last_change: datetime | None,
                 state: dict[str, Any] | None) -> None:
        self.items = items
        self.skipped_ids = skipped_ids
        self.by_id = dict(zip(map(operator.attrgetter("condition_id"), items), items, strict=True))
        self.last_change = last_change
        # Without a recorded refresh (a state row lost or never written) the data's own last
        # change is the honest "as of": never an infinite age.
        self.as_of: datetime | None = (state or {}).get("refreshed_at") or last_change
        self.version = version
        self.serial = next(_SERIALS)  # unique in this process: a body key (Answer.body_key) never outlives it
        self.loaded_at = time.monotonic()
        self._selections: dict[tuple[Any, ...], Selection] = {}
        self._filtered: OrderedDict[tuple[Any, ...], Selection] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], state: dict[str, Any] | None,
                  sorts: Mapping[str, str]) -> Snapshot:
        """Built from ``store.load_markets`` rows; ``sorts``: sort name -> the JSON field it orders by."""
        items: list[Item] = []
        skipped_ids: list[str] = []
        for row in rows:
            try:
                items.append(_item(row, sorts))
            except (Unloadable, TypeError, ValueError, AttributeError, KeyError) as error:
                skipped_ids.append(str(row.get("condition_id")))
                if len(skipped_ids) <= MAX_ROW_WARNINGS:
                    log.warning("stored market %s left out of the catalogue: %s", row.get("condition_id"),
                                error if isinstance(error, Unloadable) else type(error).__name__)
        if len(skipped_ids) > MAX_ROW_WARNINGS:
            log.warning("%d more stored markets left out of the catalogue", len(skipped_ids) - MAX_ROW_WARNINGS)
        last_change = max((row["updated_at"] for row in rows if isinstance(row["updated_at"], datetime)),
                          default=None)
        # Changes only when stored data changes (upserts skip identical rows), so ETags hold.
        version = hashlib.sha1(f"{last_change}|{len(rows)}".encode()).hexdigest()[:16]
        return cls(items, skipped_ids, version=version, last_change=last_change, state=state)

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)

    def age_seconds(self) -> float:
        if self.as_of is None:
            return float("inf")
        return max(0.0, (datetime.now(UTC) - self.as_of).total_seconds())

    def _ordered(self, sort: str, descending: bool, active_only: bool) -> Selection:
        """Every (active) item in one sort order; sorted once per snapshot, then only filtered."""
        key = ("ordered", sort, descending, active_only)
        with self._lock:
            found = self._selections.get(key)
        if found is not None:
            return found
        items = [i for i in self.items if i.active or not active_only]
        keyed = sorted(((_sort_key(i, sort, descending), i) for i in items), key=lambda pair: pair[0])
        ordered_items = [i for _, i in keyed]
        ordered = Selection(
            items=ordered_items,
            keys=[k for k, _ in keyed],
            texts=[i.text for i in ordered_items],
            facets=[i.facets for i in ordered_items],
        )
        with self._lock:
            self._selections[key] = ordered  # at most 20 of these: 5 sorts x 2 orders x 2 scopes
        return ordered

    def adopt_order(self, sort: str, descending: bool, active_only: bool, ordered_items: list[Item],
                    keys: list[SortKey]) -> None:
        """Take a stored result of ``_ordered`` (so a new instance's first page needs no sort):
        ``keys`` are the items' sort keys, built by the caller from the same values as the items.
        Checked to be that result: strictly increasing keys (so no item twice) over exactly the
        items the scope holds. Raises ValueError otherwise."""
        if len(keys) != len(ordered_items) or not all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
            raise ValueError("stored order not sorted")
        # map() with attrgetter: no Python frame per item, on a new instance's first answer.
        active = operator.attrgetter("active")
        in_scope = sum(map(active, self.items)) if active_only else len(self.items)
        if (active_only and not all(map(active, ordered_items))) or len(ordered_items) != in_scope:
            raise ValueError("stored order not the scope's items")
        ordered = Selection(items=ordered_items, keys=keys, texts=list(map(operator.attrgetter("text"), ordered_items)),
                            facets=list(map(operator.attrgetter("facets"), ordered_items)))
        with self._lock:
            self._selections[("ordered", sort, descending, active_only)] = ordered

    def select(self, query: MarketQuery) -> Selection:
        # Closed and resolved markets are never in the active set: asking for them widens the scope.
        active_only = query.active_only and query.status not in ("closed", "resolved")
        ordered = self._ordered(query.sort, query.order == "desc", active_only)
        if not query.q and not query.tag and not query.event and not query.status:
            return ordered
        now = time.time()
        # closing_soon moves with the clock: its selections are kept for a minute at most.
        minute = int(now // 60) if query.status == "closing_soon" else None
        key = (active_only, query.q, query.tag, query.event, query.status, query.closing_within_h, minute,
               query.sort, query.order)
        with self._lock:
            found = self._filtered.get(key)
            if found is not None:
                self._filtered.move_to_end(key)
                return found
        # Filtering an already sorted list keeps its order: no sort per query.
        items, keys, texts, facets = ordered.items, ordered.keys, ordered.texts, ordered.facets
        positions: list[int] | None = None
        for term in query.q.lower().split() if query.q else []:
            if positions is None:
                positions = [p for p, text in enumerate(texts) if term in text]
            else:
                positions = [p for p in positions if term in texts[p]]
        wanted: list[tuple[str, ...]] = []  # each: the facets of which a market must have one
        if query.tag:
            tag = slug(query.tag)
            wanted.append((f"{TAG_FACET}{tag}", f"{CATEGORY_FACET}{tag}"))
        if query.event:
            event = query.event.strip().lower()
            wanted.append((f"{EVENT_FACET}{event}", f"{EVENT_SLUG_FACET}{event}"))
        if query.status:
            wanted.append((f"{STATUS_FACET}{'open' if query.status == 'closing_soon' else query.status}",))
        for either in wanted:
            candidates = range(len(items)) if positions is None else positions
            positions = [p for p in candidates if not facets[p].isdisjoint(either)]
        positions = positions or []
        if query.status == "closing_soon":
            until = now + query.closing_within_h * 3600
            positions = [p for p in positions if (end := items[p].sort_values["end_date"]) is not None
                         and now <= end <= until]
        selection = Selection(items=[items[p] for p in positions], keys=[keys[p] for p in positions])
        with self._lock:
            self._filtered[key] = selection
            while len(self._filtered) > self.MAX_SELECTIONS:
                self._filtered.popitem(last=False)
        return selection


# --- cursors ---------------------------------------------------------------------------------

CURSOR_PARAMETERS = "q, tag, event, status, sort, order, active_only or min_volume_24h"


def encode_cursor(query: MarketQuery, key: SortKey) -> str:
    return paging.encode_cursor(query.fingerprint(), key)


def decode_cursor(query: MarketQuery, cursor: str) -> SortKey:
    return paging.decode_cursor(query.fingerprint(), cursor, CURSOR_PARAMETERS)
