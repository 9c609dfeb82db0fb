"""Gamma market rows -> our market records: a pydantic model at the boundary, with the
contract's traps handled in one place.

Traps (``docs/polymarket-api.md`` section 4): ``outcomes``, ``outcomePrices`` and
``clobTokenIds`` are JSON arrays inside strings (the prices inside are strings too);
``volume``/``liquidity`` are decimal strings while ``volumeNum``/``volume24hr``/``bestBid``...
are numbers; null fields are omitted, not null; ``active`` stays true on closed markets.

Rules (``GammaMarket``): a row that breaks one is not a market we store. ``parse_market``
raises ``BadMarketRow``; the refresh skips the row, counts it and logs its id.

* Ids: ``conditionId`` 0x + 64 hex (required), Gamma ``id`` and event ``id`` decimal digits,
  token ids decimal (at most 78 digits), never the same token twice in one row.
* Text: control characters (NUL included; tab, newline and carriage return are kept) and lone
  surrogates are **removed**, not rejected: they carry no meaning, PostgreSQL cannot store them,
  and the rest of the row is sound. Then each field has a length cap (``MAX_*``), far above
  real rows; a longer value rejects the row. The question must not be empty.
* Numbers: finite, at most ``MAX_NUMBER_CHARS`` characters, and in range: prices, bid, ask,
  last trade and spread in [0, 1]; price change in [-1, 1]; tick size in (0, 1]; volume and
  liquidity in [0, ``MAX_AMOUNT``).
* Dates: timezone-aware, within [``EARLIEST_DATE``, ``LATEST_DATE``] (so PostgreSQL and Python
  both hold them, at any offset).
* Absent, null and empty values are null, as before; a value that is present must be valid.
  Non-boolean flags are null (``closed`` is true only when it is ``true``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from shared.core.ids import CONDITION_ID_RE, TOKEN_ID_RE
from shared.core.json_depth import deeper_than

GAMMA_ID_RE = re.compile(r"^[0-9]{1,20}$")

MAX_QUESTION = 1_000
MAX_DESCRIPTION = 20_000
MAX_SLUG = 300
MAX_SHORT_TEXT = 300  # category, tag, event slug, outcome label
MAX_TITLE = 1_000  # event title
MAX_TAGS = 100
MAX_URL = 2_000  # image, icon
MAX_UMA_STATUSES = 20
MAX_OUTCOMES = 100
MAX_NUMBER_CHARS = 64
MAX_JSON_STRING = 65_536  # outcomes, outcomePrices, clobTokenIds: JSON arrays inside strings
MAX_AMOUNT = Decimal("1e15")  # USDC; the largest real market is below 1e10
EARLIEST_DATE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)

# C0 and C1 controls except \t \n \r, DEL, and UTF-16 surrogates (only lone ones reach a str).
_UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class BadMarketRow(ValueError):
    """A row that cannot be a market (missing condition id, mismatched outcome arrays...)."""


@dataclass(frozen=True)
class Outcome:
    index: int
    label: str
    token_id: str | None
    price: Decimal | None


@dataclass(frozen=True)
class EventRecord:
    """A market's parent event, as the market row carries it (``events[0]``)."""

    id: str
    slug: str | None
    title: str | None
    description: str | None
    image: str | None
    icon: str | None
    start_date: datetime | None
    end_date: datetime | None
    volume: Decimal | None
    volume_24h: Decimal | None
    liquidity: Decimal | None
    open_interest: Decimal | None
    competitive: Decimal | None
    neg_risk: bool | None
    closed: bool
    tags: tuple[str, ...]
    tag_labels: tuple[str, ...]

    def content_hash(self) -> str:
        return hashlib.sha1(repr(self).encode()).hexdigest()


@dataclass(frozen=True)
class MarketRecord:
    condition_id: str
    gamma_id: str | None
    slug: str | None
    question: str
    description: str | None
    category: str | None
    tags: tuple[str, ...]
    event_id: str | None
    event_slug: str | None
    event_title: str | None
    end_date: datetime | None
    closed: bool
    accepting_orders: bool | None
    enable_order_book: bool | None
    neg_risk: bool | None
    volume: Decimal | None
    volume_24h: Decimal | None
    liquidity: Decimal | None
    best_bid: Decimal | None
    best_ask: Decimal | None
    last_trade_price: Decimal | None
    spread: Decimal | None
    one_day_price_change: Decimal | None
    tick_size: Decimal | None
    outcomes: tuple[Outcome, ...]
    group_item_title: str | None = None
    neg_risk_other: bool | None = None
    image: str | None = None
    icon: str | None = None
    closed_time: datetime | None = None
    uma_statuses: tuple[str, ...] = ()
    tag_labels: tuple[str, ...] = ()  # upstream's casing, one per entry of ``tags``
    event: EventRecord | None = None

    def content_hash(self) -> str:
        """Stable hash of every stored field: an unchanged market is not rewritten."""
        # The dataclass repr lists every field in a fixed order and is deterministic for the
        # types used here (str, Decimal, datetime, tuples); several times cheaper than asdict().
        return hashlib.sha1(repr(self).encode()).hexdigest()

    def token_ids(self) -> list[str]:
        return [o.token_id for o in self.outcomes if o.token_id is not None]


# --- value rules ---------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """``value`` without control characters (but tab, newline, CR) and lone surrogates."""
    return _UNWANTED.sub("", value)


def _text(value: Any) -> str | None:
    """Text or null: numbers become text (Gamma ids may come as numbers), cleaned and stripped."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("not text")  # not TypeError: pydantic reports a ValueError as a validation error
    text = clean_text(str(value)).strip()
    return text or None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError("not a number")  # not TypeError, as above
    text = str(value)
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    try:
        result = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise ValueError("not a number") from None
    if not result.is_finite():
        raise ValueError("not a finite number")
    return result


def decimal_or_none(value: Any) -> Decimal | None:
    """Lenient: a finite decimal, or None for anything else."""
    try:
        return _decimal(value)
    except ValueError:
        return None


def _datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NUMBER_CHARS:
        raise ValueError("not a date")
    text = value.strip().replace("Z", "+00:00")
    if re.match(r"^\d{4}-\d{2}-\d{2} ", text):
        text = text.replace(" ", "T", 1)  # closedTime's "2026-06-12 20:41:49+00"
    if re.search(r"[+-]\d{2}$", text):
        text += ":00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 date") from None
    if parsed.tzinfo is None:
        raise ValueError("a date without a time zone")  # ambiguous: better no row than a wrong date
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past datetime.max in UTC
        raise ValueError("date out of range") from None
    if not EARLIEST_DATE <= in_utc <= LATEST_DATE:
        raise ValueError("date out of range")
    return parsed


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.match(value):
            raise ValueError(f"malformed {what}")
        return value

    return AfterValidator(check)


# Written out, not built by a factory: mypy takes only a literal Annotated[...] as a type alias.
# Outer BeforeValidator cleans/parses; the inner Field holds the bound; None passes both.
Slug = Annotated[Annotated[str, Field(max_length=MAX_SLUG)] | None, BeforeValidator(_text)]
Description = Annotated[Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None, BeforeValidator(_text)]
ShortText = Annotated[Annotated[str, Field(max_length=MAX_SHORT_TEXT)] | None, BeforeValidator(_text)]
Title = Annotated[Annotated[str, Field(max_length=MAX_TITLE)] | None, BeforeValidator(_text)]
Price = Annotated[Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=1)] | None, BeforeValidator(_decimal)]
Amount = Annotated[
    Annotated[Decimal, Field(allow_inf_nan=False, ge=0, lt=MAX_AMOUNT)] | None, BeforeValidator(_decimal)
]
Change = Annotated[Annotated[Decimal, Field(allow_inf_nan=False, ge=-1, le=1)] | None, BeforeValidator(_decimal)]
Tick = Annotated[Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=1)] | None, BeforeValidator(_decimal)]
Date = Annotated[datetime | None, BeforeValidator(_datetime)]
Flag = Annotated[bool | None, BeforeValidator(_bool)]
Url = Annotated[Annotated[str, Field(max_length=MAX_URL)] | None, BeforeValidator(_text)]
Labels = Annotated[tuple[Annotated[str, Field(max_length=MAX_SHORT_TEXT)], ...], Field(max_length=MAX_TAGS)]
ConditionId = Annotated[
    str, BeforeValidator(lambda v: (_text(v) or "").lower()), _matching(CONDITION_ID_RE, "conditionId")
]
GammaId = Annotated[str | None, BeforeValidator(_text), _matching(GAMMA_ID_RE, "id")]
TokenId = Annotated[str | None, BeforeValidator(_text), _matching(TOKEN_ID_RE, "token id")]


def _json_list(row: dict[str, Any], key: str) -> list[Any]:
    value = row.get(key)
    if value is None:
        return []
    if isinstance(value, list):  # tolerate a real array should Gamma ever fix the encoding
        return value
    if not isinstance(value, str):
        raise BadMarketRow(f"{key} is neither a JSON string nor an array")
    flat = value.count("[") <= 1 and "{" not in value  # the usual '["Yes", "No"]', without a scan
    if len(value) > MAX_JSON_STRING or (not flat and deeper_than(value, 1)):
        # Checked before parsing: a deeply nested string crashes the parser (issue 11, break 1).
        raise BadMarketRow(f"{key} is not a flat JSON array of at most {MAX_JSON_STRING} characters")
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        raise BadMarketRow(f"{key} holds invalid JSON") from None
    if not isinstance(decoded, list):
        raise BadMarketRow(f"{key} does not hold a JSON array")
    return decoded


# --- the model -----------------------------------------------------------------------------


class GammaOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    label: Annotated[str, BeforeValidator(lambda v: _text(v) or ""), Field(max_length=MAX_SHORT_TEXT)]
    token_id: TokenId
    price: Price


def _tags(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(slugs lower-cased, labels in upstream's casing) of a ``tags`` array of tag objects,
    one pair per distinct slug; a tag without slug or label is left out."""
    if not isinstance(value, list):
        return (), ()
    if len(value) > MAX_TAGS:
        raise BadMarketRow("too many tags")
    pairs: dict[str, str] = {}
    for tag in value:
        if not isinstance(tag, dict):
            continue
        label = _text(tag.get("label")) if isinstance(tag.get("label"), str) else None
        slug = _text(tag.get("slug")) if isinstance(tag.get("slug"), str) else None
        name = slug or label
        if name:
            pairs.setdefault(name.lower(), label or name)
    return tuple(pairs), tuple(pairs.values())


class GammaEvent(BaseModel):
    """The parent event a market row carries (``events[0]``); Gamma sends its numbers as
    numbers here, unlike the market's own ``volume``/``liquidity`` strings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, BeforeValidator(lambda v: _text(v) or ""), _matching(GAMMA_ID_RE, "event id")]
    slug: Slug
    title: Title
    description: Description
    image: Url
    icon: Url
    start_date: Date
    end_date: Date
    volume: Amount
    volume_24h: Amount
    liquidity: Amount
    open_interest: Amount
    competitive: Annotated[Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=1)] | None,
                           BeforeValidator(_decimal)]
    neg_risk: Flag
    closed: bool
    tags: Labels
    tag_labels: Labels

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise BadMarketRow("an event is not an object")
        slugs, labels = _tags(row.get("tags"))
        return {
            "id": row.get("id"), "slug": row.get("slug"), "title": row.get("title"),
            "description": row.get("description"), "image": row.get("image"), "icon": row.get("icon"),
            "start_date": row.get("startDate"), "end_date": row.get("endDate"),
            "volume": row.get("volume"), "volume_24h": row.get("volume24hr"), "liquidity": row.get("liquidity"),
            "open_interest": row.get("openInterest"), "competitive": row.get("competitive"),
            "neg_risk": row.get("negRisk"), "closed": row.get("closed") is True, "tags": slugs, "tag_labels": labels,
        }

    def record(self) -> EventRecord:
        return EventRecord(
            id=self.id, slug=self.slug, title=self.title, description=self.description, image=self.image,
            icon=self.icon, start_date=self.start_date, end_date=self.end_date, volume=self.volume,
            volume_24h=self.volume_24h, liquidity=self.liquidity, open_interest=self.open_interest,
            competitive=self.competitive, neg_risk=self.neg_risk, closed=self.closed, tags=self.tags,
            tag_labels=self.tag_labels,
        )


class GammaMarket(BaseModel):
    """One Gamma market row, validated. ``model_validate`` takes the raw row: the ``before``
    step decodes the contract's shapes (JSON in strings, fallbacks, the first event, tags);
    the fields then hold the value rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    condition_id: ConditionId
    gamma_id: GammaId
    slug: Slug
    question: Annotated[str, BeforeValidator(lambda v: _text(v) or ""), Field(min_length=1, max_length=MAX_QUESTION)]
    description: Description
    category: ShortText
    tags: Annotated[tuple[Annotated[str, Field(max_length=MAX_SHORT_TEXT)], ...], Field(max_length=MAX_TAGS)]
    event_id: GammaId
    event_slug: Slug
    event_title: Title
    end_date: Date
    closed: bool
    accepting_orders: Flag
    enable_order_book: Flag
    neg_risk: Flag
    volume: Amount
    volume_24h: Amount
    liquidity: Amount
    best_bid: Price
    best_ask: Price
    last_trade_price: Price
    spread: Price
    one_day_price_change: Change
    tick_size: Tick
    outcomes: Annotated[tuple[GammaOutcome, ...], Field(max_length=MAX_OUTCOMES)]
    group_item_title: ShortText
    neg_risk_other: Flag
    image: Url
    icon: Url
    closed_time: Date
    uma_statuses: Annotated[tuple[Annotated[str, Field(max_length=MAX_SHORT_TEXT)], ...],
                            Field(max_length=MAX_UMA_STATUSES)]
    tag_labels: Labels
    event: GammaEvent | None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise BadMarketRow("a market row is not an object")
        labels = _json_list(row, "outcomes")
        prices = _json_list(row, "outcomePrices")
        token_ids = _json_list(row, "clobTokenIds")
        if len(labels) > MAX_OUTCOMES:
            raise BadMarketRow("too many outcomes")
        if token_ids and len(token_ids) != len(labels):
            raise BadMarketRow("clobTokenIds and outcomes differ in length")
        outcomes = [
            {
                "index": index,
                "label": label,
                "token_id": token_ids[index] if index < len(token_ids) else None,
                "price": prices[index] if index < len(prices) else None,
            }
            for index, label in enumerate(labels)
        ]
        events = row.get("events")
        if not isinstance(events, list):
            events = []
        event = events[0] if events and isinstance(events[0], dict) else {}
        tag_slugs, tag_labels = _tags(row.get("tags"))
        first_label = tag_labels[0] if tag_labels else None
        statuses = [] if row.get("umaResolutionStatuses") is None else _json_list(row, "umaResolutionStatuses")
        if not statuses and isinstance(row.get("umaResolutionStatus"), str):
            statuses = [row["umaResolutionStatus"]]
        if len(statuses) > MAX_UMA_STATUSES or not all(isinstance(x, str) for x in statuses):
            raise BadMarketRow("umaResolutionStatuses is not a short list of strings")
        end_date = row.get("endDate")
        if end_date in (None, "") and isinstance(row.get("endDateIso"), str) and row["endDateIso"]:
            end_date = row["endDateIso"] + "T00:00:00Z"
        return {
            "condition_id": row.get("conditionId"),
            "gamma_id": row.get("id"),
            "slug": row.get("slug"),
            "question": row.get("question"),
            "description": row.get("description"),
            "category": _text(row.get("category")) or first_label,
            "tags": tag_slugs,
            "tag_labels": tag_labels,
            "event": event if event.get("id") not in (None, "") else None,
            "event_id": event.get("id"),
            "event_slug": event.get("slug"),
            "event_title": event.get("title"),
            "end_date": end_date,
            "closed": row.get("closed") is True,
            "accepting_orders": row.get("acceptingOrders"),
            "enable_order_book": row.get("enableOrderBook"),
            "neg_risk": row.get("negRisk"),
            # volumeNum is the number; volume is the same value as a string (fallback only).
            "volume": row.get("volumeNum", row.get("volume")),
            "volume_24h": row.get("volume24hr"),
            "liquidity": row.get("liquidityNum", row.get("liquidity")),
            "best_bid": row.get("bestBid"),
            "best_ask": row.get("bestAsk"),
            "last_trade_price": row.get("lastTradePrice"),
            "spread": row.get("spread"),
            "one_day_price_change": row.get("oneDayPriceChange"),
            "tick_size": row.get("orderPriceMinTickSize"),
            "outcomes": outcomes,
            "group_item_title": row.get("groupItemTitle"),
            "neg_risk_other": row.get("negRiskOther"),
            "image": row.get("image"),
            "icon": row.get("icon"),
            "closed_time": row.get("closedTime"),
            "uma_statuses": tuple(clean_text(x).strip() for x in statuses if clean_text(x).strip()),
        }

    @model_validator(mode="after")
    def _distinct_tokens(self) -> GammaMarket:
        tokens = [o.token_id for o in self.outcomes if o.token_id is not None]
        if len(tokens) != len(set(tokens)):
            raise BadMarketRow("the same token id on two outcomes")
        return self

    def record(self) -> MarketRecord:
        return MarketRecord(
            condition_id=self.condition_id,
            gamma_id=self.gamma_id,
            slug=self.slug,
            question=self.question,
            description=self.description,
            category=self.category,
            tags=self.tags,
            event_id=self.event_id,
            event_slug=self.event_slug,
            event_title=self.event_title,
            end_date=self.end_date,
            closed=self.closed,
            accepting_orders=self.accepting_orders,
            enable_order_book=self.enable_order_book,
            neg_risk=self.neg_risk,
            volume=self.volume,
            volume_24h=self.volume_24h,
            liquidity=self.liquidity,
            best_bid=self.best_bid,
            best_ask=self.best_ask,
            last_trade_price=self.last_trade_price,
            spread=self.spread,
            one_day_price_change=self.one_day_price_change,
            tick_size=self.tick_size,
            outcomes=tuple(Outcome(o.index, o.label, o.token_id, o.price) for o in self.outcomes),
            group_item_title=self.group_item_title,
            neg_risk_other=self.neg_risk_other,
            image=self.image,
            icon=self.icon,
            closed_time=self.closed_time,
            uma_statuses=self.uma_statuses,
            tag_labels=self.tag_labels,
            event=self.event.record() if self.event is not None else None,
        )


def _problem(error: ValidationError) -> str:
    """The first rule broken, named by field: safe to log (never the value itself)."""
    first = error.errors(include_url=False, include_input=False, include_context=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_market(row: Any) -> MarketRecord:
    """A validated record, or ``BadMarketRow`` saying which rule the row broke."""
    try:
        return GammaMarket.model_validate(row).record()
    except ValidationError as error:
        raise BadMarketRow(_problem(error)) from None


def row_label(row: Any) -> str:
    """How a log line names a row: its condition id or Gamma id, cleaned and cut short."""
    if not isinstance(row, dict):
        return f"a {type(row).__name__} instead of a row"
    for key in ("conditionId", "id"):
        value = row.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return f"{key} {clean_text(str(value))[:80]!r}"
    return "a row without an id"
