"""Any id a user has -> the stored market(s) and their event.

Inputs (``parse_reference``): a polymarket.com event or market URL, an event or market slug, a
numeric Gamma id (market or event), a condition id or a token id. Only the *path* of a URL is
read, and only for the hosts polymarket.com and www.polymarket.com: nothing a user sends is ever
fetched. Another host, a port, userinfo or any other scheme is a 400 before any I/O.

The store answers first (one query per reference). Only what it lacks is asked of Gamma, through
the Gamma client (deadlines, size caps, breaker), each read cached in a bounded TTL cache, a
"not there" answer included, and shared by concurrent callers. What Gamma gives is validated
(``rows.parse_market``: a bad row is skipped and counted) and stored outside the active set, so
old ids keep answering from the store.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field

from shared.core.cache import SingleFlight, TTLCache
from shared.core.config import CacheSettings
from shared.core.errors import (
    BadRequest,
    NotFound,
    ServiceUnavailable,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamNotFound,
)
from shared.core.etag import etag as make_etag
from shared.core.freshness import Answer, Freshness, Source
from shared.core.ids import is_condition_id, is_gamma_id, is_slug
from shared.core.query import Query
from shared.db.database import Cursor, Database
from shared.markets import store
from shared.markets.rows import BadMarketRow, MarketRecord, parse_market, row_label
from shared.markets.snapshot import Unloadable, compact_market, market_json

if TYPE_CHECKING:  # the client (and httpx) is imported with the first upstream read
    from shared.upstream.polymarket import GammaApi

log = logging.getLogger("polymarket_api.markets")

Kind = Literal["event_url", "market_url", "event_slug", "market_slug", "market_id", "event_id", "condition_id",
               "token_id"]
KINDS: tuple[Kind, ...] = ("event_url", "market_url", "event_slug", "market_slug", "market_id", "event_id",
                           "condition_id", "token_id")

MAX_Q = 600  # a URL with a long event and market slug fits; anything longer is not a reference
GAMMA_ID_DIGITS = 20  # ids.GAMMA_ID_PATTERN; longer digit strings can only be token ids
HOSTS = frozenset({"polymarket.com", "www.polymarket.com"})
_LOCALE = re.compile(r"^[a-z]{2}(?:-[a-z]{2,4})?$")  # /es/event/..., /pt-br/event/...
MAX_CACHED = 2048
ANSWER_TTL_S = 10  # a made resolve answer is reused this long (the store changes per refresh)
MAX_ROWS = 500  # rows read from one Gamma answer (an event's markets); beyond are not ours
REF_RULE = ("a polymarket.com event or market URL, an event or market slug, a numeric Gamma id, a condition id "
            "or a token id")


class ResolveQuery(Query):
    """The query of ``GET /api/resolve``."""

    q: str = Field(max_length=MAX_Q, description=f"What to look up: {REF_RULE}.",
                   examples=["https://polymarket.com/event/presidential-election-winner-2028"])


@dataclass(frozen=True)
class Reference:
    """What the input is, before anything is looked up. ``form``: url_event, url_market, slug,
    number, condition_id, token_id; ``event_slug`` / ``market_slug`` from a URL or a slug."""

    form: str
    value: str
    event_slug: str | None = None


def _bad(message: str, parameter: str) -> BadRequest:
    return BadRequest(f"parameter '{parameter}' {message}", parameter=parameter)


def _url_reference(text: str, parameter: str) -> Reference:
    if "//" not in text:
        text = "https://" + text  # "polymarket.com/event/..." without a scheme
    try:
        parts = urlsplit(text)
    except ValueError:
        raise _bad("is not a URL this API can read", parameter) from None
    # The netloc must be exactly one of the hosts: no userinfo (polymarket.com@evil.com), no port,
    # no look-alike (polymarket.com.evil.com); nothing of it is ever used to make a request.
    if parts.scheme.lower() not in ("http", "https") or parts.netloc.lower() not in HOSTS:
        raise _bad("must be a polymarket.com URL (only its path is read; no other host is accepted)", parameter)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments and segments[0] not in ("event", "market") and _LOCALE.fullmatch(segments[0]):
        segments = segments[1:]
    match segments:
        case ["event", event] if is_slug(event):
            return Reference("url_event", event, event)
        case ["event", event, market] if is_slug(event) and is_slug(market):
            return Reference("url_market", market, event)
        case ["market", market] if is_slug(market):
            return Reference("url_market", market)
    raise _bad("must be a polymarket.com URL of the form /event/{slug}, /event/{slug}/{market-slug} or "
               "/market/{slug}", parameter)


def parse_reference(raw: str | None, parameter: str = "q") -> Reference:
    """The form of ``raw``, or a 400 naming ``parameter``; no I/O."""
    text = (raw or "").strip()
    if not text:
        raise _bad(f"is required: {REF_RULE}", parameter)
    if len(text) > MAX_Q:
        raise _bad(f"must be at most {MAX_Q} characters", parameter)
    lowered = text.lower()
    if "://" in text or lowered.startswith(tuple(f"{host}/" for host in HOSTS)) or lowered in HOSTS:
        return _url_reference(text, parameter)
    if is_condition_id(text):
        return Reference("condition_id", text)
    if text.isascii() and text.isdigit():
        return Reference("number" if len(text) <= GAMMA_ID_DIGITS else "token_id", text)
    if is_slug(text):
        return Reference("slug", text)
    raise _bad(f"must be {REF_RULE}", parameter)


def market_reference_kind(value: str) -> str:
    """What a checked market path id (``ids.validate_market_ref``) is: condition_id, market_id or
    market_slug."""
    if is_condition_id(value):
        return "condition_id"
    return "market_id" if is_gamma_id(value) else "market_slug"


@dataclass(frozen=True)
class EventRef:
    id: str
    slug: str | None
    title: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "title": self.title}


@dataclass(frozen=True)
class Found:
    """What a reference matched: ``kind``, the event if any, the markets (condition ids, stored),
    and where they came from."""

    kind: Kind
    event: EventRef | None
    condition_ids: tuple[str, ...]
    source: Literal["store", "upstream"]


@dataclass(frozen=True)
class _Match:
    """One candidate answer before ambiguity is decided."""

    kind: Kind
    event: EventRef | None
    condition_ids: tuple[str, ...]


_MISSING: Any = object()  # a cached "Gamma has no such thing"
_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class _Made:
    """A resolve answer as made: body, tag, as-of time, and the key that fixes its JSON."""

    body: dict[str, Any]
    etag: str
    as_of: datetime | None
    key: str


def _as_of(rows: list[dict[str, Any]], state: dict[str, Any] | None) -> datetime | None:
    """When stored rows were last known current: the catalogue's last refresh for markets in the
    open set (it rewrites only what changed), else the newest row change."""
    refreshed = (state or {}).get("refreshed_at")
    if refreshed is not None and any(row["in_active_set"] for row in rows):
        return refreshed
    changed = [row["updated_at"] for row in rows if isinstance(row["updated_at"], datetime)]
    return max(changed, default=None)


class Lookup:
    """Resolves references; ``database`` / ``gamma`` are providers (built on first use)."""

    def __init__(self, cache: CacheSettings, database: Callable[[], Database], gamma: Callable[[], GammaApi]) -> None:
        self._database = database
        self._gamma = gamma
        self._reads: TTLCache[Any] = TTLCache(MAX_CACHED, cache.markets_ttl_s)
        self._answers: TTLCache[_Made] = TTLCache(MAX_CACHED, min(ANSWER_TTL_S, cache.markets_ttl_s))
        self._flight: SingleFlight[Any] = SingleFlight()
        self._lock = threading.Lock()
        self.skipped_rows = 0  # Gamma rows that failed validation
        self.stored = 0  # markets fetched and stored on demand

    # --- public ----------------------------------------------------------------------------

    def answer(self, q: str | None, ttl_s: int) -> Answer:
        """``/api/resolve``: what ``q`` names, with each market's outcomes and display prices.

        An answer is kept ANSWER_TTL_S (stored rows change only with a refresh, every few minutes),
        so a repeated reference costs no query and its JSON is made once (``body_key``)."""
        ref = parse_reference(q)
        kept = self._answers.get(ref)
        if kept is not None:
            made, _age = kept
            age = (datetime.now(UTC) - made.as_of).total_seconds() if made.as_of else 0.0
            return Answer(made.body, Freshness("cache", made.as_of, max(0.0, age)), made.etag, ttl_s, made.key)
        found = self.resolve(ref)

        def read(cur: Cursor) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            return store.get_markets(cur, found.condition_ids), store.read_state(cur)

        rows, state = self._database().run(read)
        markets = []
        for row in rows:
            try:
                markets.append(_compact(market_json(row)))
            except Unloadable as error:  # one stored row that cannot be served is left out
                log.warning("stored market %s left out of a resolve answer: %s", row["condition_id"], error)
        if not markets:
            raise NotFound(f"{ref.value!r} matched {found.kind.replace('_', ' ')}, but none of its markets can be "
                           "served")
        now = datetime.now(UTC)
        as_of = _as_of(rows, state) if found.source == "store" else now
        body = {
            "q": ref.value,
            "kind": found.kind,
            "source": found.source,
            "event": found.event.as_dict() if found.event else None,
            "markets": markets,
        }
        etag = make_etag("resolve", found.kind, ref.value, *(f"{r['condition_id']}@{r['updated_at']}" for r in rows))
        made = _Made(body, etag, as_of, f"resolve:{next(_SERIALS)}:{etag}")
        self._answers.put(ref, made)
        age = (now - as_of).total_seconds() if as_of else 0.0
        source: Source = "live" if found.source == "upstream" else "cache"
        return Answer(body, Freshness(source, as_of, max(0.0, age)), etag, ttl_s, made.key)

    def resolve(self, ref: Reference) -> Found:
        """The markets ``ref`` names, from the store, else from Gamma (then stored); NotFound with
        what was tried when nothing (or more than one thing) matches."""
        found = self._from_store(ref)
        if found is not None:
            return found
        with _upstream_unavailable(ref):
            return self._from_upstream(ref)

    def market(self, kind: str, value: str) -> str:
        """The condition id of a market by Gamma id or slug (``market_reference_kind``), fetched
        and stored when only Gamma has it."""
        ref = Reference("number" if kind == "market_id" else "slug", value)
        with _upstream_unavailable(ref):
            return self._market_only(ref).condition_ids[0]

    # --- the store ---------------------------------------------------------------------------

    def _from_store(self, ref: Reference) -> Found | None:
        rows = self._database().run(lambda cur: _candidates(cur, ref))
        matches = _matches(ref, rows)
        if not matches:
            return None
        return _one(ref, matches, "store")

    def _market_only(self, ref: Reference) -> Found:
        """A market by Gamma id or slug (never an event): /api/markets/{market}."""
        column = "gamma_id" if ref.form == "number" else "slug"
        rows = self._database().run(lambda cur: _rows_where(cur, f"m.{column} = %s", (ref.value,)))
        if rows:
            return Found("market_id" if ref.form == "number" else "market_slug", _event_of(rows[0]),
                         (rows[0]["condition_id"],), "store")
        path = f"/markets/{ref.value}" if ref.form == "number" else f"/markets/slug/{ref.value}"
        records = self._records(self._one_row(path))
        if not records:
            raise NotFound(f"no market {ref.value}: not stored, and Polymarket Gamma has none ({path})")
        self._store(records)
        return Found("market_id" if ref.form == "number" else "market_slug", _record_event(records[0]),
                     (records[0].condition_id,), "upstream")

    # --- Gamma --------------------------------------------------------------------------------

    def _from_upstream(self, ref: Reference) -> Found:
        tried: list[str] = ["the store"]
        matches: list[_Match] = []
        records: list[MarketRecord] = []

        def add(kind: Kind, found: list[MarketRecord], event: EventRef | None = None) -> None:
            if found:
                records.extend(found)
                matches.append(_Match(kind, event or _record_event(found[0]), tuple(r.condition_id for r in found)))

        if ref.form in ("condition_id", "token_id"):
            key = "condition_ids" if ref.form == "condition_id" else "clob_token_ids"
            for closed in (False, True):
                params = {key: ref.value, **({"closed": "true"} if closed else {})}
                tried.append(f"/markets?{'&'.join(f'{k}={v}' for k, v in params.items())}")
                found = self._records(self._list("/markets", params))
                if found:
                    add(ref.form, found[:1])  # type: ignore[arg-type]  # form is the kind here
                    break
        elif ref.form == "number":
            tried.append(f"/markets/{ref.value}")
            add("market_id", self._records(self._one_row(f"/markets/{ref.value}")))
            tried.append(f"/events/{ref.value}")
            event, found = self._event(f"/events/{ref.value}")
            if event is not None:
                add("event_id", found, event)
        elif ref.form in ("slug", "url_event"):
            tried.append(f"/events/slug/{ref.value}")
            event, found = self._event(f"/events/slug/{ref.value}")
            if event is not None:
                add("event_url" if ref.form == "url_event" else "event_slug", found, event)
            if ref.form == "slug":
                tried.append(f"/markets/slug/{ref.value}")
                add("market_slug", self._records(self._one_row(f"/markets/slug/{ref.value}")))
        elif ref.form == "url_market":
            if ref.event_slug is not None:
                tried.append(f"/events/slug/{ref.event_slug}")
                event, found = self._event(f"/events/slug/{ref.event_slug}")
                mine = [r for r in found if r.slug == ref.value]
                if event is not None and mine:
                    add("market_url", mine, event)
            if not matches:
                tried.append(f"/markets/slug/{ref.value}")
                add("market_url", self._records(self._one_row(f"/markets/slug/{ref.value}")))
        if not matches:
            raise NotFound(f"nothing matches {ref.value!r}; tried {', '.join(tried)}")
        found_one = _one(ref, matches, "upstream")
        self._store(records)
        return found_one

    def _read(self, path: str, params: dict[str, str] | None) -> Any:
        """One Gamma read, cached (a 404 too) and shared by concurrent callers; errors are not cached."""
        key = (path, tuple(sorted((params or {}).items())))
        hit = self._reads.get(key)
        if hit is not None:
            return hit[0]

        def fetch() -> Any:
            try:
                value = self._gamma().get(path, params, about_id=True)
            except UpstreamNotFound:
                value = _MISSING
            self._reads.put(key, value)
            return value

        return self._flight.run(key, fetch)

    def _list(self, path: str, params: dict[str, str]) -> list[Any]:
        body = self._read(path, params)
        if body is _MISSING:
            return []
        if not isinstance(body, list):
            raise UpstreamBadResponse("gamma", f"{path}: not a list of markets")
        return body[:MAX_ROWS]

    def _one_row(self, path: str) -> list[Any]:
        """A market by id or slug, with its event: Gamma's single-market form has no ``events``,
        so its list form is asked once for the same id (closed or not, as the row says)."""
        body = self._read(path, None)
        if body is _MISSING:
            return []
        if not isinstance(body, dict) or isinstance(body.get("events"), list):
            return [body]
        gamma_id, closed = body.get("id"), body.get("closed")
        if not isinstance(gamma_id, str) or not is_gamma_id(gamma_id) or not isinstance(closed, bool):
            return [body]  # parse_market decides what it is
        listed = self._list("/markets", {"id": gamma_id, **({"closed": "true"} if closed else {})})
        same = [row for row in listed if isinstance(row, dict) and row.get("conditionId") == body.get("conditionId")
                and isinstance(row.get("events"), list)]
        return same[:1] or [body]

    def _event(self, path: str) -> tuple[EventRef | None, list[MarketRecord]]:
        """An event and its markets, each row given its event (the event endpoints' market rows
        carry none) so it is stored with it; an event that is not an object is skipped."""
        body = self._read(path, None)
        if body is _MISSING:
            return None, []
        if not isinstance(body, dict) or not isinstance(body.get("id"), (str, int)) or isinstance(
                body.get("id"), bool):
            self._skipped(f"{path}: not an event")
            return None, []
        records = self._records(event_rows(body))
        event = EventRef(str(body["id"]), _text(body.get("slug")), _text(body.get("title")))
        if records and records[0].event_id is not None:  # validated: the record's values win
            event = _record_event(records[0]) or event
        return event, records

    def fetch_event(self, ref: str) -> bool:
        """An event by Gamma id or slug, fetched from Gamma (cached, a miss too) and its markets
        stored as every on-demand fetch stores them; whether Gamma had it with a readable market."""
        event, records = self._event(f"/events/{ref}" if is_gamma_id(ref) else f"/events/slug/{ref}")
        self._store(records)
        return event is not None and bool(records)

    def _records(self, rows: Iterable[Any]) -> list[MarketRecord]:
        records: list[MarketRecord] = []
        seen: set[str] = set()
        for row in rows:
            try:
                record = parse_market(row)
            except BadMarketRow as error:
                self._skipped(f"{row_label(row)}: {error}")
                continue
            if record.condition_id not in seen:
                seen.add(record.condition_id)
                records.append(record)
        return records

    def _skipped(self, what: str) -> None:
        with self._lock:
            self.skipped_rows += 1
        log.warning("Gamma row skipped on lookup (%s)", what)

    def _store(self, records: list[MarketRecord]) -> None:
        """Store what Gamma gave: only markets not stored yet, outside the active set
        (``store.insert_new_markets``)."""
        if not records:
            return
        rejected: list[str] = []
        written = self._database().run(lambda cur: store.insert_new_markets(cur, records, rejected))
        with self._lock:
            self.stored += written - len(rejected)
        if rejected:
            log.warning("%d markets fetched on demand were refused by the database", len(rejected))


def event_rows(event: dict[str, Any]) -> list[Any]:
    """The market rows of a Gamma event object (``/events/{id}``), each given the event as the
    list endpoints' rows carry it (and the event's tags when the row has none: ``/events`` rows
    carry tags on the event only); at most ``MAX_ROWS``."""
    markets = event.get("markets")
    parent = {key: value for key, value in event.items() if key != "markets"}
    rows: list[Any] = []
    for row in markets[:MAX_ROWS] if isinstance(markets, list) else []:
        if isinstance(row, dict):
            row = {**row, "events": [parent]}
            if "tags" not in row and isinstance(parent.get("tags"), list):
                row["tags"] = parent["tags"]
        rows.append(row)
    return rows


@contextlib.contextmanager
def _upstream_unavailable(ref: Reference) -> Iterator[None]:
    """Gamma failed (errors are never cached): the documented 503, with Gamma's Retry-After."""
    try:
        yield
    except UpstreamError as error:
        raise ServiceUnavailable(f"{ref.value!r} is not stored, and Polymarket {error.upstream} could not be asked "
                                 f"({error.summary()})",
                                 headers=error.retry_after()) from error


# --- SQL -------------------------------------------------------------------------------------

_CANDIDATE_SQL = """
SELECT m.condition_id, m.gamma_id, m.slug, m.event_id, m.event_slug, m.event_title, {match} AS matched
  FROM markets m
 WHERE {where}
 ORDER BY length(m.gamma_id), m.gamma_id, m.condition_id
 LIMIT %(limit)s
"""


def _candidates(cur: Cursor, ref: Reference) -> list[dict[str, Any]]:
    """Stored markets the reference may name, each with what it matched (market, event, token)."""
    params: dict[str, Any] = {"v": ref.value, "e": ref.event_slug, "limit": MAX_ROWS}
    if ref.form == "condition_id":
        match, where = "'market'", "m.condition_id = %(v)s"
    elif ref.form == "token_id":
        match, where = "'token'", "m.condition_id IN (SELECT condition_id FROM outcome_tokens WHERE token_id = %(v)s)"
    elif ref.form == "number":
        match = ("CASE WHEN m.gamma_id = %(v)s THEN 'market' WHEN m.event_id = %(v)s THEN 'event' "
                 "ELSE 'token' END")
        where = ("m.gamma_id = %(v)s OR m.event_id = %(v)s OR m.condition_id IN "
                 "(SELECT condition_id FROM outcome_tokens WHERE token_id = %(v)s)")
    elif ref.form in ("slug", "url_event"):
        match = "CASE WHEN m.event_slug = %(v)s THEN 'event' ELSE 'market' END"
        where = "m.event_slug = %(v)s" if ref.form == "url_event" else "m.slug = %(v)s OR m.event_slug = %(v)s"
    else:  # url_market
        match, where = "'market'", "m.slug = %(v)s"
    cur.execute(_CANDIDATE_SQL.format(match=match, where=where), params)
    return [dict(row) for row in cur.fetchall()]


def _rows_where(cur: Cursor, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur.execute(f"SELECT condition_id, event_id, event_slug, event_title FROM markets m WHERE {where} LIMIT 1",
                params)
    return [dict(row) for row in cur.fetchall()]


def _event_of(row: dict[str, Any]) -> EventRef | None:
    return EventRef(row["event_id"], row["event_slug"], row["event_title"]) if row["event_id"] else None


def _record_event(record: MarketRecord) -> EventRef | None:
    if record.event_id is None:
        return None
    return EventRef(record.event_id, record.event_slug, record.event_title)


def _compact(market: dict[str, Any]) -> dict[str, Any]:
    """The resolve form of a market's list JSON: the events list's, with its Gamma id and slug."""
    return {**compact_market(market), "gamma_id": market["gamma_id"], "slug": market["slug"]}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _matches(ref: Reference, rows: list[dict[str, Any]]) -> list[_Match]:
    """The stored rows grouped into what they match: a market, an event (all its markets), a token."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["matched"], []).append(row)
    out: list[_Match] = []
    market_kind: Kind = {"condition_id": "condition_id", "number": "market_id", "slug": "market_slug",
                         "url_market": "market_url", "token_id": "token_id"}.get(ref.form, "market_slug")  # type: ignore[assignment]
    if ref.form == "url_market" and ref.event_slug is not None:
        # The market of the URL's event first, when two markets share a slug across events.
        rows = sorted(by_kind.get("market", []), key=lambda r: r["event_slug"] != ref.event_slug)
        by_kind["market"] = rows[:1]
    for row in by_kind.get("market", [])[:1]:
        out.append(_Match(market_kind, _event_of(row), (row["condition_id"],)))
    event_rows = by_kind.get("event", [])
    if event_rows:
        event_kind: Kind = "event_url" if ref.form == "url_event" else (
            "event_id" if ref.form == "number" else "event_slug")
        out.append(_Match(event_kind, _event_of(event_rows[0]), tuple(r["condition_id"] for r in event_rows)))
    for row in by_kind.get("token", [])[:1]:
        out.append(_Match("token_id", _event_of(row), (row["condition_id"],)))
    return out


def _name(match: _Match) -> str:
    if match.kind.startswith("event") and match.event is not None:
        return match.event.slug or match.event.id
    return match.condition_ids[0]


def _one(ref: Reference, matches: list[_Match], source: Literal["store", "upstream"]) -> Found:
    """The one answer, or NotFound naming the candidates. A market inside the event the same
    slug names is that event (a single-market event shares its slug with its market)."""
    if len(matches) == 2:
        market, event = sorted(matches, key=lambda m: m.kind.startswith("event"))
        if event.kind.startswith("event") and set(market.condition_ids) <= set(event.condition_ids):
            matches = [event]
    if len(matches) > 1:
        what = "; ".join(f"{m.kind.replace('_', ' ')} ({_name(m)})" for m in matches)
        raise NotFound(f"{ref.value!r} is ambiguous: it matches {what} (looked in the {source}); "
                       "send a polymarket.com URL or a condition id")
    match = matches[0]
    return Found(match.kind, match.event, match.condition_ids, source)
