"""The Gamma host (``gamma-api.polymarket.com``): routes and wire formats of ``docs/polymarket-api.md`` §4.

Choices where upstream behaviour is unconfirmed: ``limit`` defaults to 100 and is clamped to 100
on both list endpoints; ``active``/``archived`` filter as plain equality (every market is
``active: true, archived: false``, so the usual ``active=true&archived=false`` changes nothing);
``ascending`` defaults to true; without ``order`` rows come by id ascending; more than 100
``condition_ids`` or a malformed ``after_cursor`` answer 422. ``/events/keyset`` takes ``limit`` up to
500 (default 500) with ``/events``' filters; ``/events?closed=...`` matches an event's own ``closed``,
which is true once all its markets are. A market closed without settling (UMA "proposed") keeps its
last prices in ``outcomePrices``, never exactly 1 and 0.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .catalogue import DAY, Catalogue, Event, Market, Tag, iso, iso_ms, iso_us, pg_time, ymd
from .common import ApiError, Query, Response, first, json_response, not_found_page
from .market_data import MarketData, dec, tick_places

MAX_LIMIT = 100
MAX_OFFSET = 2250  # offsets at or beyond this are refused (2,000 works live, ~2,250 does not)
MAX_CONDITION_IDS = 100
MAX_EVENTS_KEYSET_LIMIT = 500  # /events/keyset pages up to 500 events (the issue; the contract leaves it open)
SCHEMA = "https://gamma-api.polymarket.com/schemas/Market.json"
CACHE_HEADERS = [("cache-control", "public, max-age=300")]
DEPRECATION_HEADERS = [("deprecation", "true"), ("sunset", "Fri, 01 May 2026 00:00:00 GMT"),
                       ("warning", '299 - "use /markets/keyset"')]
SUBMITTER = "0x91430CaD2d3975766499717fA0D66A78D814E5c5"
RESOLVER = "0x69c47De9D4D3Dad79590d61b9e05918E03775f24"

# camelCase names Gamma sorts by; anything else (snake_case included) is silently ignored.
ORDER_FIELDS: dict[str, Callable[[Market], float]] = {
    "id": lambda m: m.gamma_id,
    "volume": lambda m: m.volume, "volumeNum": lambda m: m.volume,
    "volume24hr": lambda m: 0.0 if m.closed else m.volume_24hr,
    "volume1wk": lambda m: m.volume_1wk, "volume1mo": lambda m: m.volume_1mo, "volume1yr": lambda m: m.volume_1yr,
    "liquidity": lambda m: m.liquidity, "liquidityNum": lambda m: m.liquidity,
    "endDate": lambda m: m.end_at, "startDate": lambda m: m.start_at, "createdAt": lambda m: m.created_at,
    "competitive": lambda m: m.competitive,
}
EVENT_ORDER_FIELDS: dict[str, Callable[[Event], float]] = {
    "id": lambda e: e.id, "volume": lambda e: sum(m.volume for m in e.markets),
    "liquidity": lambda e: sum(m.liquidity for m in e.markets if not m.closed),
    "volume24hr": lambda e: sum(m.volume_24hr for m in e.markets if not m.closed),
    "endDate": lambda e: e.end_at, "startDate": lambda e: e.start_at, "createdAt": lambda e: e.created_at,
    "competitive": lambda e: max((m.competitive for m in e.markets if not m.closed), default=0.0),
}


def gamma_error(status: int, kind: str, message: str) -> ApiError:
    return ApiError(json_response({"type": kind, "error": message}, status))


def invalid(message: str) -> ApiError:
    return gamma_error(422, "validation error", message)


def _bool(query: Query, name: str, default: bool | None) -> bool | None:
    value = first(query, name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid(f"invalid boolean value for '{name}'")


def _int(query: Query, name: str, default: int | None) -> int | None:
    value = first(query, name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(f"invalid integer value for '{name}'") from None


def _float(query: Query, name: str) -> float | None:
    value = first(query, name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise invalid(f"invalid number value for '{name}'") from None


def _date(query: Query, name: str) -> float | None:
    value = first(query, name)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 accepts "Z" and bare dates
    except ValueError:
        raise invalid(f"invalid date value for '{name}'") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _strings(query: Query, name: str) -> frozenset[str] | None:
    # Arrays are repeated keys (id=1&id=2); a comma-joined value is just one odd value.
    values = [v for v in query.get(name, []) if v != ""]
    return frozenset(values) if values else None


def _ints(query: Query, name: str) -> frozenset[int] | None:
    values = [int(v) for v in query.get(name, []) if v.isdigit()]
    return frozenset(values) if values else None


@dataclass(frozen=True, slots=True)
class MarketFilter:
    closed: bool | None = False
    active: bool | None = None
    archived: bool | None = None
    ids: frozenset[int] | None = None
    slugs: frozenset[str] | None = None
    condition_ids: frozenset[str] | None = None
    token_ids: frozenset[str] | None = None
    question_ids: frozenset[str] | None = None
    liquidity_min: float | None = None
    liquidity_max: float | None = None
    volume_min: float | None = None
    volume_max: float | None = None
    start_min: float | None = None
    start_max: float | None = None
    end_min: float | None = None
    end_max: float | None = None
    tag_id: int | None = None
    order: tuple[str, ...] = ()
    ascending: bool = True

    @classmethod
    def parse(cls, query: Query) -> MarketFilter:
        condition_ids = _strings(query, "condition_ids")
        # The cap counts the values sent, repeats included.
        if len([v for v in query.get("condition_ids", []) if v]) > MAX_CONDITION_IDS:
            raise invalid(f"too many condition_ids (max {MAX_CONDITION_IDS})")
        order = tuple(f for f in (first(query, "order") or "").split(",") if f in ORDER_FIELDS)
        return cls(
            # closed defaults to false: resolved markets stay invisible unless asked for.
            closed=_bool(query, "closed", False), active=_bool(query, "active", None),
            archived=_bool(query, "archived", None), ids=_ints(query, "id"), slugs=_strings(query, "slug"),
            condition_ids=condition_ids, token_ids=_strings(query, "clob_token_ids"),
            question_ids=_strings(query, "question_ids"),
            liquidity_min=_float(query, "liquidity_num_min"), liquidity_max=_float(query, "liquidity_num_max"),
            volume_min=_float(query, "volume_num_min"), volume_max=_float(query, "volume_num_max"),
            start_min=_date(query, "start_date_min"), start_max=_date(query, "start_date_max"),
            end_min=_date(query, "end_date_min"), end_max=_date(query, "end_date_max"),
            tag_id=_int(query, "tag_id", None), order=order, ascending=bool(_bool(query, "ascending", True)),
        )

    def accepts(self, m: Market) -> bool:
        if self.closed is not None and m.closed != self.closed:
            return False
        if self.active is False or self.archived is True:
            return False
        if self.ids is not None and m.gamma_id not in self.ids:
            return False
        if self.slugs is not None and m.slug not in self.slugs:
            return False
        if self.condition_ids is not None and m.condition_id not in self.condition_ids:
            return False
        if self.token_ids is not None and not any(t.token_id in self.token_ids for t in m.tokens):
            return False
        if self.question_ids is not None and m.question_id not in self.question_ids:
            return False
        liquidity = 0.0 if m.closed else m.liquidity
        if self.liquidity_min is not None and liquidity < self.liquidity_min:
            return False
        if self.liquidity_max is not None and liquidity > self.liquidity_max:
            return False
        if self.volume_min is not None and m.volume < self.volume_min:
            return False
        if self.volume_max is not None and m.volume > self.volume_max:
            return False
        if self.start_min is not None and m.start_at < self.start_min:
            return False
        if self.start_max is not None and m.start_at > self.start_max:
            return False
        if self.end_min is not None and m.end_at < self.end_min:
            return False
        if self.end_max is not None and m.end_at > self.end_max:
            return False
        return self.tag_id is None or any(t.id == self.tag_id for t in m.event.tags)

    def key(self, m: Market) -> tuple[float, ...]:
        sign = 1 if self.ascending else -1
        # The id tie-breaker makes the order total, which keyset paging needs.
        return (*(sign * ORDER_FIELDS[f](m) for f in self.order), m.gamma_id)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The ``/events`` and ``/events/keyset`` filters; rows come by id unless ``order`` says otherwise."""

    closed: bool | None = False
    ids: frozenset[int] | None = None
    slugs: frozenset[str] | None = None
    tag_id: int | None = None
    tag_slug: str | None = None
    order: tuple[str, ...] = ()
    ascending: bool = True

    @classmethod
    def parse(cls, query: Query) -> EventFilter:
        return cls(
            # closed defaults to false here too: an event is closed once all its markets are.
            closed=_bool(query, "closed", False), ids=_ints(query, "id"), slugs=_strings(query, "slug"),
            tag_id=_int(query, "tag_id", None), tag_slug=first(query, "tag_slug") or None,
            order=tuple(f for f in (first(query, "order") or "").split(",") if f in EVENT_ORDER_FIELDS),
            ascending=bool(_bool(query, "ascending", True)),
        )

    def accepts(self, e: Event) -> bool:
        return ((self.closed is None or e.closed == self.closed) and (self.ids is None or e.id in self.ids)
                and (self.slugs is None or e.slug in self.slugs)
                and (self.tag_id is None or any(t.id == self.tag_id for t in e.tags))
                and (self.tag_slug is None or any(t.slug == self.tag_slug for t in e.tags)))

    def key(self, e: Event) -> tuple[float, ...]:
        sign = 1 if self.ascending else -1
        return (*(sign * EVENT_ORDER_FIELDS[f](e) for f in self.order), e.id)


def encode_after_cursor(key: tuple[float, ...]) -> str:
    raw = json.dumps({"v": 1, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_after_cursor(cursor: str) -> tuple[float, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = tuple(float(x) if isinstance(x, float) else int(x) for x in data["k"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid("invalid after_cursor") from None
    return key


class GammaViews:
    def __init__(self, catalogue: Catalogue, data: MarketData) -> None:
        self.catalogue = catalogue
        self.data = data
        self._lock = threading.Lock()
        # (filter, catalogue version) -> (markets, sort keys); a keyset crawl re-uses one entry.
        self._results: OrderedDict[tuple[MarketFilter, int], tuple[list[Market], list[tuple[float, ...]]]] = \
            OrderedDict()
        self._event_results: OrderedDict[tuple[EventFilter, int], tuple[list[Event], list[tuple[float, ...]]]] = \
            OrderedDict()

    def handle(self, method: str, path: str, query: Query, body: bytes) -> Response:
        try:
            response = self._route(method, path, query)
        except ApiError as e:
            response = e.response
        response.headers.extend(CACHE_HEADERS)
        return response

    def _route(self, method: str, path: str, query: Query) -> Response:
        if method != "GET":
            return not_found_page()
        if path == "/markets":
            return self.markets(query)
        if path == "/markets/keyset":
            return self.keyset(query)
        if path.startswith("/markets/slug/") and path.count("/") == 3:
            return self.market_by_slug(path[len("/markets/slug/"):], query)
        if path.startswith("/markets/") and path.count("/") == 2:
            return self.market_by_id(path[len("/markets/"):], query)
        if path == "/events":
            return self.events(query)
        if path == "/events/keyset":
            return self.events_keyset(query)
        if path.startswith("/events/slug/") and path.count("/") == 3:
            event = self.catalogue.events_by_slug.get(path[len("/events/slug/"):])
            if event is None:
                raise gamma_error(404, "not found error", "id not found")
            return json_response(self.event_row(event))
        if path.startswith("/events/") and path.count("/") == 2:
            return self.event_by_id(path[len("/events/"):])
        return not_found_page()

    # --- markets ------------------------------------------------------------------------------

    def _filtered(self, flt: MarketFilter) -> tuple[list[Market], list[tuple[float, ...]]]:
        cache_key = (flt, self.catalogue.version)
        with self._lock:
            hit = self._results.get(cache_key)
            if hit is not None:
                self._results.move_to_end(cache_key)
                return hit
        rows = [m for m in self.catalogue.markets if flt.accepts(m)]
        if flt.order:
            rows.sort(key=flt.key)
        keys = [flt.key(m) for m in rows]
        with self._lock:
            self._results[cache_key] = (rows, keys)
            while len(self._results) > 32:
                self._results.popitem(last=False)
        return rows, keys

    @staticmethod
    def _limit(query: Query) -> int:
        limit = _int(query, "limit", MAX_LIMIT)
        if limit is None or limit < 0:
            raise invalid("'limit' must be a non-negative integer")
        return min(limit, MAX_LIMIT)

    def markets(self, query: Query) -> Response:
        limit = self._limit(query)
        offset = _int(query, "offset", 0) or 0
        if offset < 0:
            raise invalid("'offset' must be a non-negative integer")
        if offset >= MAX_OFFSET:
            raise invalid("offset too large, use /markets/keyset for deeper pagination")
        rows, _keys = self._filtered(MarketFilter.parse(query))
        include_tag = bool(_bool(query, "include_tag", False))
        body = [self.market_row(m, events=True, include_tag=include_tag) for m in rows[offset:offset + limit]]
        return json_response(body, headers=list(DEPRECATION_HEADERS))

    def keyset(self, query: Query) -> Response:
        if "offset" in query:
            raise invalid("offset is not allowed on keyset endpoints")
        limit = self._limit(query)
        flt = MarketFilter.parse(query)
        rows, keys = self._filtered(flt)
        # Only after_cursor pages; cursor/next_cursor are not parameters here and are ignored.
        cursor = first(query, "after_cursor")
        start = bisect.bisect_right(keys, decode_after_cursor(cursor)) if cursor else 0
        page = rows[start:start + limit]
        include_tag = bool(_bool(query, "include_tag", False))
        body: dict[str, Any] = {"markets": [self.market_row(m, events=True, include_tag=include_tag) for m in page]}
        if page and start + len(page) < len(rows):
            body["next_cursor"] = encode_after_cursor(keys[start + len(page) - 1])
        return json_response(body)

    def market_by_id(self, raw_id: str, query: Query) -> Response:
        if not raw_id.isdigit():
            raise invalid(f"invalid id '{raw_id}': must be an integer")
        m = self.catalogue.by_gamma_id.get(int(raw_id))
        if m is None:
            raise gamma_error(404, "not found error", "id not found")
        return json_response(self.market_row(m, schema=True, include_tag=bool(_bool(query, "include_tag", False))))

    def market_by_slug(self, slug: str, query: Query) -> Response:
        m = self.catalogue.by_slug.get(slug)  # finds closed markets too, without closed=true
        if m is None:
            raise gamma_error(404, "not found error", "id not found")
        return json_response(self.market_row(m, schema=True, include_tag=bool(_bool(query, "include_tag", False))))

    # --- rendering ----------------------------------------------------------------------------

    def market_row(self, m: Market, *, events: bool = False, schema: bool = False,
                   include_tag: bool = False) -> dict[str, Any]:
        now = self.data.clock()
        denom, places = m.tick_denom, tick_places(m.tick_denom)
        closed = m.closed
        row: dict[str, Any] = {"$schema": SCHEMA} if schema else {}
        if m.settled:
            outcome_prices = ["1", "0"] if m.winner == 0 else ["0", "1"]
            updated = m.closed_at or now
        else:
            # Open: the current quote; closed but unsettled: the last one, frozen at the close.
            q = self.data.quote(m, m.closed_at if closed else None)
            outcome_prices = [dec((q.bid + q.ask) * 5, places + 1), dec((2 * denom - q.bid - q.ask) * 5, places + 1)]
            updated = (m.closed_at or now) if closed else max(m.created_at, self.data.step_time(m, q.step))
        row.update({
            "id": str(m.gamma_id), "question": m.question, "conditionId": m.condition_id, "slug": m.slug,
            "resolutionSource": "", "endDate": iso(m.end_at),
        })
        if not closed:
            row["liquidity"] = str(m.liquidity)
        row.update({
            "startDate": iso_ms(m.start_at), "image": m.image, "icon": m.image, "description": m.description,
            # JSON arrays inside strings, with Python's ", " separators as upstream sends them.
            "outcomes": json.dumps(list(m.outcomes)), "outcomePrices": json.dumps(outcome_prices),
            "volume": str(m.volume), "active": True, "closed": closed, "marketMakerAddress": "",
            "createdAt": iso_us(m.created_at), "updatedAt": iso_us(updated),
        })
        if closed:
            row["closedTime"] = pg_time(m.closed_at or now)
        row.update({
            "new": now - m.created_at < 2 * DAY, "featured": False, "submitted_by": SUBMITTER, "archived": False,
            "resolvedBy": RESOLVER, "restricted": True, "groupItemTitle": m.group_item_title,
            "groupItemThreshold": str(m.event.markets.index(m)) if m.neg_risk else "0",
            "questionID": m.question_id,
        })
        if m.settled:
            row["umaEndDate"] = iso(m.closed_at or now)
        row.update({"enableOrderBook": True, "orderPriceMinTickSize": m.tick_size, "orderMinSize": m.min_order_size})
        if closed:
            row["umaResolutionStatus"] = "resolved" if m.settled else "proposed"
        row["volumeNum"] = m.volume
        if not closed:
            row["liquidityNum"] = m.liquidity
        row.update({"endDateIso": ymd(m.end_at), "startDateIso": ymd(m.start_at), "hasReviewedDates": True})
        if not closed:
            row["volume24hr"] = m.volume_24hr
        row.update({"volume1wk": m.volume_1wk, "volume1mo": m.volume_1mo, "volume1yr": m.volume_1yr,
                    "clobTokenIds": json.dumps(list(m.token_ids)), "comboStatus": "disabled",
                    "umaBond": "500", "umaReward": "5"})
        if not closed:
            row["volume24hrClob"] = m.volume_24hr
        row.update({"volume1wkClob": m.volume_1wk, "volume1moClob": m.volume_1mo, "volume1yrClob": m.volume_1yr,
                    "volumeClob": m.volume})
        if not closed:
            row["liquidityClob"] = m.liquidity
        if m.fee_type:
            row.update({"makerBaseFee": m.maker_base_fee, "takerBaseFee": m.maker_base_fee})
        row.update({"customLiveness": 0, "acceptingOrders": not closed, "negRisk": m.neg_risk})
        if m.neg_risk:
            row["negRiskMarketID"] = m.neg_risk_market_id
        row["negRiskRequestID"] = m.neg_risk_request_id
        if events:
            row["events"] = [self.event_row(m.event, with_markets=False)]
        row.update({"ready": False, "funded": False, "acceptingOrdersTimestamp": iso(m.start_at), "cyom": False})
        if not closed:
            row["competitive"] = m.competitive
        row.update({"pagerDutyNotificationEnabled": False, "approved": True})
        if m.rewards_rate is not None:
            row["clobRewards"] = [{"id": str(m.gamma_id // 3), "conditionId": m.condition_id,
                                   "assetAddress": "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb",
                                   "rewardsAmount": 0, "rewardsDailyRate": m.rewards_rate,
                                   "startDate": ymd(m.start_at), "endDate": "2500-12-31"}]
        row.update({"rewardsMinSize": m.rewards_min_size, "rewardsMaxSpread": m.rewards_max_spread})
        row.update(self._price_fields(m, now))
        row.update({
            "automaticallyActive": True, "clearBookOnStart": True, "manualActivation": False,
            "negRiskOther": m.neg_risk_other,
            # A history list, JSON inside a string: proposed on close, resolved once settled.
            "umaResolutionStatuses": json.dumps(["proposed", "resolved"] if m.settled else ["proposed"] if closed
                                                else []),
            "pendingDeployment": False, "deploying": False, "deployingTimestamp": iso_us(m.start_at - 60),
            "rfqEnabled": False, "holdingRewardsEnabled": False, "feesEnabled": m.fee_type is not None,
            "requiresTranslation": False, "feeType": m.fee_type,
        })
        if m.fee_type:
            row["feeSchedule"] = {"exponent": 1, "rate": 0.04, "takerOnly": True, "rebateRate": 0.25}
        row["version"] = "v1"
        if include_tag:
            row["tags"] = [self.tag_row(t) for t in m.event.tags]
        return row

    def _price_fields(self, m: Market, now: float) -> dict[str, Any]:
        denom = m.tick_denom
        if m.settled:
            # Null fields are omitted: a resolved market has no bestBid, and a settled last trade.
            last = denom - 1 if m.winner == 0 else 1
            return {"spread": 1 / denom, "lastTradePrice": last / denom, "bestAsk": 1 / denom}
        if m.closed:
            # Closed, not settled: the book is gone; the last trade stays as it was at the close.
            q = self.data.quote(m, m.closed_at)
            return {"spread": (q.ask - q.bid) / denom, "lastTradePrice": q.last_trade / denom}
        q = self.data.quote(m)
        fields: dict[str, Any] = {"spread": (q.ask - q.bid) / denom}
        mid_now = (q.bid + q.ask) / (2 * denom)
        for name, ago in (("oneDayPriceChange", DAY), ("oneWeekPriceChange", 7 * DAY),
                          ("oneMonthPriceChange", 30 * DAY)):
            if now - ago >= m.created_at:
                fields[name] = round(mid_now - self.data.midpoint(m, 0, now - ago), 4)
        fields.update({"lastTradePrice": q.last_trade / denom, "bestBid": q.bid / denom, "bestAsk": q.ask / denom})
        return fields

    @staticmethod
    def tag_row(t: Tag) -> dict[str, Any]:
        return {"id": str(t.id), "label": t.label, "slug": t.slug, "forceShow": False,
                "requiresTranslation": False}

    def event_row(self, e: Event, *, with_markets: bool = True) -> dict[str, Any]:
        open_markets = [m for m in e.markets if not m.closed]
        liquidity = sum(m.liquidity for m in open_markets)
        row: dict[str, Any] = {
            "id": str(e.id), "ticker": e.ticker, "slug": e.slug, "title": e.title,
            "description": e.markets[0].description if e.markets else "", "resolutionSource": "",
            "startDate": iso_ms(e.start_at), "creationDate": iso_us(e.created_at), "endDate": iso(e.end_at),
            "image": e.image, "icon": e.image, "active": True, "closed": e.closed, "archived": False,
            "new": False, "featured": False, "restricted": True,
            # Event-level volume/liquidity are numbers, unlike the market fields of the same name.
            "liquidity": liquidity, "volume": sum(m.volume for m in e.markets),
            "openInterest": round(liquidity * 0.4, 6),
            "createdAt": iso_us(e.created_at), "updatedAt": iso_us(max(m.created_at for m in e.markets)
                                                                   if e.markets else e.created_at),
            "competitive": max((m.competitive for m in open_markets), default=0.0),
            "volume24hr": sum(m.volume_24hr for m in open_markets),
            "volume1wk": sum(m.volume_1wk for m in e.markets), "volume1mo": sum(m.volume_1mo for m in e.markets),
            "volume1yr": sum(m.volume_1yr for m in e.markets), "enableOrderBook": True, "liquidityClob": liquidity,
            "negRisk": e.neg_risk,
        }
        if e.neg_risk:
            row["negRiskMarketID"] = e.neg_risk_market_id
        row["commentCount"] = e.comment_count
        if with_markets:
            row["markets"] = [self.market_row(m) for m in e.markets]
        row.update({
            "cyom": False, "showAllOutcomes": True, "showMarketImages": True, "enableNegRisk": e.neg_risk,
            "automaticallyActive": True, "negRiskAugmented": e.neg_risk, "cumulativeMarkets": False,
            "pendingDeployment": False, "deploying": False, "requiresTranslation": False, "version": "v1",
            "tags": [self.tag_row(t) for t in e.tags],
        })
        return row

    # --- events -------------------------------------------------------------------------------

    def _events_filtered(self, flt: EventFilter) -> tuple[list[Event], list[tuple[float, ...]]]:
        cache_key = (flt, self.catalogue.version)
        with self._lock:
            hit = self._event_results.get(cache_key)
            if hit is not None:
                self._event_results.move_to_end(cache_key)
                return hit
        rows = sorted((e for e in self.catalogue.events if flt.accepts(e)), key=flt.key)
        keys = [flt.key(e) for e in rows]
        with self._lock:
            self._event_results[cache_key] = (rows, keys)
            while len(self._event_results) > 32:
                self._event_results.popitem(last=False)
        return rows, keys

    def events(self, query: Query) -> Response:
        limit = self._limit(query)
        offset = _int(query, "offset", 0) or 0
        if offset < 0:
            raise invalid("'offset' must be a non-negative integer")
        rows, _keys = self._events_filtered(EventFilter.parse(query))
        return json_response([self.event_row(e) for e in rows[offset:offset + limit]])

    def events_keyset(self, query: Query) -> Response:
        if "offset" in query:
            raise invalid("offset is not allowed on keyset endpoints")
        limit = _int(query, "limit", MAX_EVENTS_KEYSET_LIMIT)
        if limit is None or limit < 0:
            raise invalid("'limit' must be a non-negative integer")
        limit = min(limit, MAX_EVENTS_KEYSET_LIMIT)
        rows, keys = self._events_filtered(EventFilter.parse(query))
        cursor = first(query, "after_cursor")
        start = bisect.bisect_right(keys, decode_after_cursor(cursor)) if cursor else 0
        page = rows[start:start + limit]
        body: dict[str, Any] = {"events": [self.event_row(e) for e in page]}
        if page and start + len(page) < len(rows):
            body["next_cursor"] = encode_after_cursor(keys[start + len(page) - 1])
        return json_response(body)

    def event_by_id(self, raw_id: str) -> Response:
        if not raw_id.isdigit():
            raise invalid(f"invalid id '{raw_id}': must be an integer")
        event = self.catalogue.events_by_id.get(int(raw_id))
        if event is None:
            raise gamma_error(404, "not found error", "id not found")
        return json_response(self.event_row(event))
