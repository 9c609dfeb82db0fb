"""The route table: every HTTP operation's facts, written once.

``function_app.py`` takes each trigger's route and methods from here, the handlers validate path
ids by the names here, and ``shared.api.openapi`` generates the document from here and the
models. The module stays light (no pydantic, no services): ``function_app`` imports it at cold
start, so models, query classes and one error class are named as ``"module:Name"`` and imported
only when the document is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from shared.core.errors import (
    AppError,
    BadRequest,
    ConfigError,
    DatabaseUnavailable,
    ModelError,
    NotConfigured,
    NotFound,
    ServiceUnavailable,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from shared.core.ids import validate_condition_id, validate_market_ref, validate_token_id
from shared.events.refs import validate_event_ref

API_PREFIX = "/api"  # host.json extensions.http.routePrefix
BOOK_CLOSED = "shared.prices.service:BookClosed"

# Path parameters: the one check of each id (shared/core/ids.py), and its documented parameter.
PATH_IDS: dict[str, Callable[[str | None], str]] = {
    "condition_id": validate_condition_id,
    "token_id": validate_token_id,
    "market": validate_market_ref,  # /api/markets/{market}: a slug or Gamma id too
    "event": validate_event_ref,
}


class Binding(TypedDict):
    """The keyword arguments of ``FunctionApp.route``."""

    route: str
    methods: list[str]


@dataclass(frozen=True)
class ErrorAnswer:
    """A documented error response: its status comes from its classes (they share one)."""

    description: str
    classes: tuple[type[AppError] | str, ...]
    retry_after: bool = False


ERRORS: dict[str, ErrorAnswer] = {
    "BadRequest": ErrorAnswer("A parameter is malformed or out of range; `parameter` names it", (BadRequest,)),
    "NotFound": ErrorAnswer("No such market or token", (NotFound,)),
    "EventNotFound": ErrorAnswer("No such event, stored or at Polymarket", (NotFound,)),
    "BookNotFound": ErrorAnswer(
        "Unknown token (`not_found`), or its order book is closed because the market closed or resolved "
        "(`book_closed`; `/api/price/{token_id}` has the last known price)", (NotFound, BOOK_CLOSED)),
    "ModelError": ErrorAnswer("The sentiment model gave no usable answer and no earlier analysis is stored",
                              (ModelError,), retry_after=True),
    "Unavailable": ErrorAnswer(
        "A dependency is down and nothing stored can answer; `Retry-After` when known",
        (ServiceUnavailable, DatabaseUnavailable, UpstreamUnavailable, UpstreamRateLimited), retry_after=True),
    "SentimentUnavailable": ErrorAnswer(
        "Sentiment analysis is not configured on this deployment, or a dependency is down",
        (NotConfigured, ServiceUnavailable, DatabaseUnavailable, UpstreamUnavailable, UpstreamRateLimited),
        retry_after=True),
    "InternalError": ErrorAnswer(
        "A setting is invalid (`config_error`, naming the variable, never its value) or a bug (`internal`, "
        "with an incident id that is in the log)", (AppError, ConfigError)),
}


@dataclass(frozen=True)
class Body:
    """A non-error response body: the model(s) it is one of, and what it means."""

    models: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Route:
    name: str  # the function's name and the operationId
    route: str  # Azure's route template, under API_PREFIX
    tag: str
    summary: str
    description: str
    ok: Body
    # "module:Class", a shared.core.query.Query; ``{NAME}`` in the description is that module's constant.
    query: str | None = None
    errors: tuple[str, ...] = ()  # ERRORS keys, besides InternalError (every route has it)
    bodies: dict[int, Body] = field(default_factory=dict)  # other non-error statuses
    # cached: ETag, Cache-Control from the TTL, 304 to If-None-Match; live: no-store;
    # static: the same bytes for a long time (the document, the docs page and its files).
    caching: str = "cached"
    media_type: str = "application/json"
    methods: tuple[str, ...] = ("GET",)
    csv: bool = False  # ``format=csv`` answers text/csv as well


    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.route}"

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.route.split("/") if part.startswith("{")]

    @property
    def binding(self) -> Binding:
        return Binding(route=self.route, methods=list(self.methods))


_SCHEMAS = "shared.api.schemas"

ROUTES: dict[str, Route] = {r.name: r for r in (
    Route(
        "health_check", "health", "health", "Liveness, or a deep check of every dependency",
        "Without `deep`: no I/O. With `deep=true`: the database and both Polymarket hosts, checked in parallel "
        "with a short timeout; 503 when the database does not answer.",
        ok=Body((f"{_SCHEMAS}.health:Health", f"{_SCHEMAS}.health:HealthDeep"),
                "Alive (and, with `deep=true`, able to serve)."),
        query="shared.api.queries:HealthQuery",
        errors=("BadRequest",),
        bodies={503: Body((f"{_SCHEMAS}.health:HealthDeep",),
                          "`deep=true` and the database does not answer: the app cannot serve.")},
        caching="live",
    ),
    Route(
        "list_markets", "markets", "markets", "Search, sort and page the active market catalogue",
        "Served from memory, backed by PostgreSQL, refreshed from Polymarket Gamma on a schedule. With no "
        "catalogue stored yet the first request waits for the first refresh.",
        ok=Body((f"{_SCHEMAS}.markets:MarketList",), "One page of markets."),
        query="shared.markets.query:MarketListQuery",
        errors=("BadRequest", "Unavailable"),
    ),
    Route(
        "get_market", "markets/{market}", "markets", "One market",
        "Every list field plus description and order-book settings, by condition id, Gamma id or slug. Markets "
        "stay stored after they close, so old ids keep answering; by Gamma id or slug, one this API never saw "
        "(an old link) is fetched from Polymarket Gamma once and stored (`/api/resolve` does it for any id).",
        ok=Body((f"{_SCHEMAS}.markets:MarketAnswer",), "The market."),
        errors=("BadRequest", "NotFound", "Unavailable"),
    ),
    Route(
        "list_events", "events", "events", "Search, sort and page the active events",
        "An event is one question with one or more candidate markets (an election's winner). Built from the "
        "market catalogue (no extra Polymarket calls), each with its markets in compact form and their display "
        "prices. Neg-risk events (one winner among candidates) list their candidates by price, with the prices' "
        "sum, the leading candidate and the \"Other\" placeholder.",
        ok=Body((f"{_SCHEMAS}.events:EventList",), "One page of events."),
        query="shared.events.query:EventListQuery",
        errors=("BadRequest", "Unavailable"),
    ),
    Route(
        "get_event", "events/{event}", "events", "One event, by Gamma id or slug",
        "The event with its markets in full (as the markets list shows them). An event never stored (an old "
        "link) is fetched from Polymarket once and stored; an unknown one is 404, remembered for a while.",
        ok=Body((f"{_SCHEMAS}.events:EventAnswer",), "The event."),
        errors=("BadRequest", "EventNotFound", "Unavailable"),
    ),
    Route(
        "resolve", "resolve", "markets", "Any Polymarket link or id -> its event, markets and outcome tokens",
        "`q` is a polymarket.com event or market URL (only its path is read, and only for polymarket.com and "
        "www.polymarket.com: the server never fetches a given URL), an event or market slug, a numeric Gamma id, "
        "a condition id or a token id. Answered from the store; what it lacks is fetched from Polymarket Gamma "
        "once (cached, a miss too) and stored, so old ids keep answering. Ambiguous or unknown input: 404 saying "
        "what was tried.",
        ok=Body((f"{_SCHEMAS}.resolve:ResolveAnswer",), "What `q` names."),
        query="shared.markets.lookup:ResolveQuery",
        errors=("BadRequest", "NotFound", "Unavailable"),
    ),
    Route(
        "list_tags", "tags", "markets", "The tags of the active catalogue, with market and event counts",
        "Counted from the in-memory catalogue (once per catalogue version), most markets first; `label` keeps "
        "Polymarket's casing, `slug` is what `/api/markets?tag=` takes.",
        ok=Body((f"{_SCHEMAS}.tags:TagList",), "Every tag of an active market."),
        errors=("Unavailable",),
    ),
    Route(
        "get_market_sentiment", "markets/{condition_id}/sentiment", "sentiment",
        "The market's sentiment, from a language model",
        "One stored analysis per market per TTL (one model call per market at a time); a model failure serves "
        "the last analysis marked stale, else 502.",
        ok=Body((f"{_SCHEMAS}.sentiment:SentimentAnswer",), "The newest analysis."),
        query="shared.sentiment.query:SentimentQuery",
        errors=("BadRequest", "NotFound", "ModelError", "SentimentUnavailable"),
    ),
    Route(
        "get_price", "price/{token_id}", "prices", "One token's quote, with its price history",
        "One order-book read gives the quote; history merges Polymarket's with stored samples. A failing "
        "Polymarket is answered from the last known quote, marked stale.",
        ok=Body((f"{_SCHEMAS}.prices:PriceAnswer",), "The quote (and history)."),
        query="shared.prices.query:PriceQuery",
        errors=("BadRequest", "NotFound", "Unavailable"),
        csv=True,
    ),
    Route(
        "get_price_candles", "price/{token_id}/candles", "prices",
        "Open, high, low and close of one token's price per period",
        "From the merged history: the catalogue refresh's captures of every open market where they cover a "
        "candle, elsewhere `/api/price` history (Polymarket's merged with stored samples). A period with no point "
        "is absent, never invented. `volume` is the market's (not the outcome's) traded volume in the period. "
        "At most {MAX_CANDLES} candles; `format=csv` for a table.",
        ok=Body((f"{_SCHEMAS}.prices:CandlesAnswer",), "The candles, ascending by time."),
        query="shared.prices.candles:CandleQuery",
        errors=("BadRequest", "NotFound", "Unavailable"),
        csv=True,
    ),
    Route(
        "get_prices", "prices", "prices", "Quotes of many tokens in one call",
        "Up to {MAX_BATCH} ids; one upstream round trip for every id not fresh in the cache. Each id is "
        "answered on its own (`status`); the call fails only when no id can be priced.",
        ok=Body((f"{_SCHEMAS}.prices:PricesAnswer",), "One item per distinct id."),
        query="shared.prices.query:QuotesQuery",
        errors=("BadRequest", "Unavailable"),
    ),
    Route(
        "get_book", "book/{token_id}", "prices", "One token's order book",
        "Best levels first, `depth` per side, with totals of the whole book.",
        ok=Body((f"{_SCHEMAS}.prices:BookAnswer",), "The order book."),
        query="shared.prices.query:BookQuery",
        errors=("BadRequest", "BookNotFound", "Unavailable"),
    ),
    Route(
        "get_openapi_document", "openapi.json", "meta", "This document", "The OpenAPI 3.1 description of this API.",
        ok=Body((), "The OpenAPI document (the same in demo mode, where only the header says so)."),
        caching="static",
    ),
    Route(
        "get_api_docs", "docs", "meta", "Interactive documentation",
        "Swagger UI for this document, served by the app itself (no CDN).",
        ok=Body((), "The Swagger UI page."),
        caching="static", media_type="text/html",
    ),
    Route(
        "get_api_docs_asset", "docs/{asset}", "meta", "A file of the interactive documentation",
        "Swagger UI's scripts, style sheet and icons.",
        ok=Body((), "The file."),
        errors=("NotFound",),
        caching="static", media_type="*/*",
    ),
)}
