"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json``.

Built here in Python from the same constants the code validates with (limits, enums, id
patterns), so it cannot drift from them silently; ``tests/test_openapi.py`` checks that every
registered route is documented and that real responses validate against it, and
``tests/test_fuzz.py`` fuzzes the API against it.

Schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect): nullable fields are
``type: [X, "null"]``; response objects do not allow undocumented properties. In ``make demo``
mode every JSON body also carries ``"simulated": true`` (see ``shared.api.http.json_response``).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from shared import __version__
from shared.core.ids import CONDITION_ID_PATTERN, TOKEN_ID_PATTERN
from shared.markets.service import DEFAULT_LIMIT, MAX_LIMIT, SORTS
from shared.prices.quotes import (
    DEFAULT_INTERVAL,
    INTERVALS,
    MAX_FIDELITY,
    MIN_FIDELITY,
    PRICE_RULE_LAST_KNOWN,
    PRICE_RULE_LAST_TRADE,
    PRICE_RULE_MIDPOINT,
    PRICE_RULE_NONE,
)
from shared.prices.service import DEFAULT_DEPTH, MAX_BATCH, MAX_DEPTH, MAX_TOKEN_IDS_CHARS
from shared.sentiment.service import HISTORY_LIMIT, SERVED_FLAGS, SUMMARY_WITHHELD
from shared.sentiment.verdict import (
    CONTRADICTION_MIN_CONFIDENCE,
    CONTRADICTS_PRICE_TREND,
    MAX_SUMMARY_CHARS,
    SENTIMENTS,
    TREND_MIN_CHANGE,
)

API_PREFIX = "/api"  # host.json extensions.http.routePrefix
JSON = "application/json"

Schema = dict[str, Any]


# --- schema helpers --------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    """``schema`` or null: ``type: [X, "null"]`` where there is a type, else ``anyOf``."""
    if "type" not in schema or "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [schema["type"], "null"] if isinstance(schema["type"], str) else [*schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), description: str | None = None,
         simulated: bool = False) -> Schema:
    """A closed object: every property required unless listed in ``optional``."""
    props = dict(properties)
    if simulated:
        props["simulated"] = {
            "const": True,
            "description": "Only in `make demo` mode: the data comes from the simulated Polymarket stand-in.",
        }
    out: Schema = {"type": "object"}
    if description:
        out["description"] = description
    out["properties"] = props
    out["required"] = [name for name in properties if name not in optional]
    out["additionalProperties"] = False
    return out


def _str(description: str | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "string", **extra}
    if description:
        out["description"] = description
    return out


def _datetime(description: str | None = None) -> Schema:
    return _str(description, format="date-time")


def _int(minimum: int | None = 0, maximum: int | None = None, description: str | None = None) -> Schema:
    out: Schema = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if description:
        out["description"] = description
    return out


def _num(minimum: float | None = None, maximum: float | None = None, description: str | None = None) -> Schema:
    out: Schema = {"type": "number"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if description:
        out["description"] = description
    return out


def _probability(description: str | None = None) -> Schema:
    return _nullable(_num(0, 1, description))


CONDITION_ID = _str("Market id: 0x followed by 64 lower-case hex characters.", pattern=CONDITION_ID_PATTERN)
TOKEN_ID = _str("Outcome token id: a uint256 as 1 to 78 decimal digits (never a condition id).",
                pattern=TOKEN_ID_PATTERN)


# --- components.schemas ----------------------------------------------------------------------


def _error_schema() -> Schema:
    codes = [
        "bad_request", "not_found", "book_closed", "config_error", "internal", "upstream_error", "model_error",
        "unavailable", "database_unavailable", "not_configured", "upstream_unavailable",
        "upstream_rate_limited", "upstream_timeout",
    ]
    detail = _obj(
        {
            "code": _str("Stable machine-readable class of the failure.", enum=codes),
            "message": _str("What went wrong, for people; never a stack trace, DSN, key or upstream body."),
            "parameter": _str("The query or path parameter that was wrong (400 only)."),
        },
        optional=("parameter",),
    )
    return _obj({"error": detail}, simulated=True, description="Every error: `{\"error\": {\"code\", \"message\"}}`.")


def _freshness_schema() -> Schema:
    schema = _obj(
        {
            "source": _str(
                "`live`: fetched from Polymarket (or the model) for this request; `cache`: stored data within "
                "its TTL (or being revalidated); `stale`: the last fetch failed and this is the last good data.",
                enum=["cache", "live", "stale"],
            ),
            "as_of": _nullable(_datetime("When the data was fetched or observed.")),
            "age_seconds": _num(0, description="Seconds since `as_of`, rounded to 0.1."),
            "stale_reason": _str("What failed; present when (and only when) `source` is `stale`."),
        },
        optional=("stale_reason",),
        description="How fresh a cached answer is.",
    )
    schema["if"] = {"properties": {"source": {"const": "stale"}}}
    schema["then"] = {"required": ["stale_reason"]}
    schema["else"] = {"not": {"required": ["stale_reason"]}}
    return schema


def _market_properties() -> dict[str, Schema]:
    return {
        "condition_id": CONDITION_ID,
        "gamma_id": _nullable(_str("Gamma's market id.")),
        "slug": _nullable(_str()),
        "question": _str(),
        "category": _nullable(_str()),
        "tags": {"type": "array", "items": _str("Tag slug, lower case.")},
        "event": _nullable(_obj({"id": _str(), "slug": _nullable(_str()), "title": _nullable(_str())})),
        "end_date": _nullable(_datetime()),
        "active": {"type": "boolean", "description": "In Polymarket's open set and not closed."},
        "closed": {"type": "boolean", "description": "Closed, or no longer in the open set."},
        "accepting_orders": _nullable({"type": "boolean"}),
        "volume": _nullable(_num(0)),
        "volume_24h": _nullable(_num(0)),
        "liquidity": _nullable(_num(0)),
        "best_bid": _probability(),
        "best_ask": _probability(),
        "last_trade_price": _probability(),
        "spread": _probability(),
        "one_day_price_change": _nullable(_num(-1, 1, "One-day price change of the first outcome.")),
        "outcomes": {"type": "array", "items": _ref("Outcome"), "description": "In Polymarket's order."},
        "updated_at": _datetime("When the stored row last changed."),
    }


def _market_detail_schema() -> Schema:
    props = {
        **_market_properties(),
        "description": _nullable(_str()),
        "enable_order_book": _nullable({"type": "boolean"}),
        "neg_risk": _nullable({"type": "boolean"}),
        "tick_size": _nullable(_num(0, 1)),
    }
    return _obj(props, description="One market: the list fields plus description and order-book settings.")


def _quote_schema() -> Schema:
    return _obj(
        {
            "price": _probability(
                "Display price: the midpoint, or the last trade when the spread is wider than 0.10 "
                "(`price_rule`); the last known price for a closed book; null (`price_rule` `none`) "
                "when the book is one-sided or empty and has never traded."
            ),
            "price_rule": _str(
                "Which rule gave `price`: `midpoint`, `last_trade` (spread wider than 0.10 or a "
                "one-sided book), `last_known` (closed book), `none` (no price: `price` is null).",
                enum=[PRICE_RULE_MIDPOINT, PRICE_RULE_LAST_TRADE, PRICE_RULE_LAST_KNOWN, PRICE_RULE_NONE]),
            "midpoint": _probability(),
            "best_bid": _probability(),
            "best_ask": _probability(),
            "spread": _probability(),
            "last_trade_price": _probability(),
            "tick_size": _probability(),
            "book": _str("`closed`: the market closed or resolved; the price is the last known.",
                         enum=["open", "closed"]),
            "book_timestamp": _nullable(_datetime("When the order book last changed.")),
            "as_of": _datetime("When the quote was observed."),
        },
        description="One outcome token's price, from one order-book read.",
    )


def _token_schema() -> Schema:
    return _obj(
        {
            "token_id": TOKEN_ID,
            "condition_id": _nullable(_str("The market the token belongs to, when known.")),
            "outcome": _nullable(_str()),
            "outcome_index": _nullable(_int(0)),
        },
        description="What is known about a token from the market catalogue.",
    )


def _book_schema() -> Schema:
    level = _obj({"price": _num(0, 1), "size": _num(0)})
    side = _obj({"levels": _int(0), "size": _num(0), "notional": _num(0)})
    return _obj(
        {
            "token_id": TOKEN_ID,
            "condition_id": _nullable(_str()),
            "bids": {"type": "array", "items": level, "maxItems": MAX_DEPTH, "description": "Best (highest) first."},
            "asks": {"type": "array", "items": level, "maxItems": MAX_DEPTH, "description": "Best (lowest) first."},
            "depth": _int(1, MAX_DEPTH),
            "best_bid": _probability(),
            "best_ask": _probability(),
            "midpoint": _probability(),
            "spread": _probability(),
            "last_trade_price": _probability(),
            "totals": _obj({"bids": side, "asks": side}, description="Of the whole book, not only `depth`."),
            "tick_size": _probability(),
            "min_order_size": _nullable(_num(0)),
            "neg_risk": _nullable({"type": "boolean"}),
            "hash": _nullable(_str()),
            "timestamp": _nullable(_datetime("When the book last changed.")),
        },
        description="An order book, best levels first.",
    )


def _history_schema() -> Schema:
    return _obj(
        {
            "interval": _str(enum=list(INTERVALS)),
            "fidelity": _int(1, MAX_FIDELITY, "Minutes per point."),
            "start": _datetime(),
            "end": _datetime(),
            "points": {
                "type": "array",
                "items": _obj({"t": _int(0, description="Unix seconds."), "p": _num(0, 1)}),
                "description": "Ascending by time.",
            },
            "upstream_points": _int(0),
            "stored_points": _int(0, description="Points filled from stored samples where upstream had none."),
            "stale_reason": _str("Polymarket failed: the points are stored ones only."),
        },
        optional=("stale_reason",),
        description="Price history of one token, Polymarket's merged with stored samples.",
    )


def _sentiment_schema() -> Schema:
    usage = _nullable(_int(0))
    return _obj(
        {
            "id": _int(1),
            "condition_id": CONDITION_ID,
            "outcome": _nullable(_str("The outcome the verdict is about (the market's first).")),
            "token_id": _nullable(TOKEN_ID),
            "sentiment": _str(enum=list(SENTIMENTS)),
            "score": _num(-1, 1, "-1 strongly bearish .. 1 strongly bullish."),
            "confidence": _num(0, 1),
            "summary": _str(
                "Plain text: no control characters, markup or links (a reply with any is rejected, "
                "never stored).", minLength=1, maxLength=MAX_SUMMARY_CHARS),
            "flags": {
                "type": "array", "items": _str(enum=list(SERVED_FLAGS)), "uniqueItems": True,
                "description": (
                    "Empty unless something about this verdict must not be taken as fact. "
                    f"`{CONTRADICTS_PRICE_TREND}`: the verdict is {SENTIMENTS[0]} while the price it was given "
                    f"fell by at least {TREND_MIN_CHANGE} over `price_trend.window` ({SENTIMENTS[1]}: rose), "
                    f"at a confidence of at least {CONTRADICTION_MIN_CONFIDENCE}; it is kept, flagged. "
                    f"`{SUMMARY_WITHHELD}`: the stored summary did not pass today's plain-text check and "
                    "`summary` is a fixed text instead."),
            },
            "price_trend": _nullable(_obj(
                {
                    "change": _num(-1, 1, "Last minus first price over the window."),
                    "window": _str("`1w`: the week of price history the prompt carried; `1d`: the "
                                   "catalogue's one-day change (no history).", enum=["1w", "1d"]),
                },
                description="The price move the verdict was checked against; null when the prompt had none.",
            )),
            "analyzed_at": _datetime(),
            "display_price": _probability("The price the analysis saw."),
            "price_as_of": _nullable(_datetime()),
            "price_source": _str(enum=["quote", "catalogue", "none"]),
            "inputs_note": _nullable(_str("What the analysis was based on.")),
            "model": _str(),
            "deployment": _str(),
            "prompt_version": _str(),
            "usage": _obj({"prompt_tokens": usage, "completion_tokens": usage, "total_tokens": usage}),
        },
        description="One stored sentiment analysis of a market by the language model.",
    )


def _health_schemas() -> dict[str, Schema]:
    basic = {
        "status": _str(enum=["ok"]),
        "version": _str(),
        "time": _datetime(),
    }
    check = _obj(
        {
            "status": _str(enum=["ok", "error"]),
            "latency_ms": _num(0),
            "error": _str("Class of the failure: timeout, network, 5xx, 429, bad_body, 4xx, database_unavailable, "
                          "config_error, ..."),
        },
        optional=("error",),
    )
    stats = _obj(
        {
            "requests": _int(0),
            "failures": _int(0),
            "last_success_at": _nullable(_datetime()),
            "last_error_at": _nullable(_datetime()),
            "last_error_kind": _nullable(_str()),
        }
    )
    breaker = _obj(
        {
            "state": _str(enum=["closed", "open", "half_open"]),
            "consecutive_failures": _int(0),
            "retry_in_s": _nullable(_num()),
            "last_failure": _nullable(_str()),
            "opened_count": _int(0),
        }
    )
    markets = _obj(
        {
            "loaded": {"type": "boolean"},
            "as_of": _nullable(_datetime()),
            "age_seconds": _nullable(_num(0)),
            "markets": _int(0),
            "refreshing": {"type": "boolean"},
            "last_error": _nullable(_str()),
            "skipped_rows": _int(0, description="Gamma rows this instance's last refresh did not store: "
                                 "invalid (a value out of its rule), a duplicate id, or refused by the database."),
            "duplicate_rows": _int(0, description="Of `skipped_rows`: rows repeating a condition, Gamma or "
                                   "token id an earlier row had (the first row wins)."),
            "unloadable_rows": _int(0, description="Stored markets the last load could not serve (left out, "
                                    "rewritten from Gamma's next row for them)."),
            "failures_in_a_row": _int(0, description="Consecutive failed refreshes (or loads) of this instance."),
            "retry_in_s": _nullable(_num(0, description="Backoff after failures: no refresh (or load) that "
                                         "requests can start before this many seconds.")),
        }
    )
    writer = _obj(
        {
            "pending": _int(0),
            "written": _int(0),
            "dropped": _int(0),
            "failures": _int(0),
            "last_error": _nullable(_str()),
        }
    )
    rejected = _obj(
        {
            "books": _int(0, description="Books refused (a bad field of the book: only its token is affected)."),
            "book_levels": _int(0, description="Book levels left out (price outside [0, 1], bad size...)."),
            "history_bodies": _int(0),
            "history_points": _int(0, description="History points left out (bad time or price)."),
            "samples": _int(0, description="Samples not stored because they could not be served back."),
            "last": _nullable(_obj({"kind": _str(), "token_id": _nullable(_str()), "reason": _str(),
                                    "at": _datetime()})),
        },
        description="What Polymarket sent that failed validation and was left out, since the process started.",
    )
    prices = _obj(
        {
            "cached_quotes": _int(0),
            "cached_books": _int(0),
            "cached_histories": _int(0),
            "quote_ttl_s": _int(1),
            "history_writer": writer,
            "rejected": rejected,
        }
    )
    deep = {
        **basic,
        "status": _str(
            "`ok`: every dependency answers; `degraded`: the database answers but Polymarket does not "
            "(stored data is served, marked stale); `unavailable`: the database does not answer (HTTP 503).",
            enum=["ok", "degraded", "unavailable"],
        ),
        "checks": _obj({"database": check, "polymarket_clob": check, "polymarket_gamma": check}),
        "upstream_stats": _obj({"clob": stats, "gamma": stats}),
        "circuit_breakers": {"type": "object", "additionalProperties": breaker,
                             "propertyNames": {"enum": ["clob", "gamma"]}},
        "datasets": _obj({"markets": markets, "prices": prices}),
        "database_pool": _nullable(_obj({"in_use": _int(0), "max": _int(1), "min": _int(0)})),
    }
    return {
        "Health": _obj(basic, simulated=True, description="Liveness: no I/O."),
        "HealthDeep": _obj(deep, simulated=True, description="`?deep=true`: every dependency checked."),
    }


def _batch_item_schema() -> Schema:
    def error(code: str) -> Schema:
        return _obj({"code": {"const": code}, "message": _str()})

    base = {"token_id": TOKEN_ID, "token": {"type": "null"}, "quote": {"type": "null"}}
    return {
        "description": "One requested id; `status` says which shape it has.",
        "oneOf": [
            _obj({**base, "status": {"const": "ok"}, "quote": _ref("Quote"), "token": _ref("Token"),
                  "freshness": _nullable(_ref("Freshness"))}),
            _obj({**base, "status": {"const": "closed"}, "quote": _ref("Quote"), "token": _ref("Token"),
                  "freshness": _nullable(_ref("Freshness"))},
                 description="The order book is gone (market closed or resolved): the last known price."),
            _obj({**base, "status": {"const": "unknown"}, "error": error("not_found")},
                 description="Polymarket has no order book for it and nothing else knows the token."),
            _obj({**base, "status": {"const": "unavailable"}, "error": error("unavailable")},
                 description="Polymarket failed and no price is stored for it."),
            _obj({**base, "token_id": _str("The id as sent."), "status": {"const": "invalid"},
                  "error": error("bad_request")},
                 description="Not a token id (1 to 78 decimal digits)."),
        ],
    }


def _schemas() -> dict[str, Schema]:
    freshness = {"freshness": _ref("Freshness")}
    return {
        "Error": _error_schema(),
        "Freshness": _freshness_schema(),
        **_health_schemas(),
        "Outcome": _obj(
            {
                "outcome": _str(),
                "token_id": _nullable({**TOKEN_ID, "description": "Null for a market without an order book."}),
                "price": _probability(),
            }
        ),
        "Market": _obj(_market_properties(), description="A market as listed."),
        "MarketDetail": _market_detail_schema(),
        "MarketList": _obj(
            {
                "markets": {"type": "array", "items": _ref("Market"), "maxItems": MAX_LIMIT},
                "next_cursor": _nullable(_str("Pass as `cursor` for the next page; null on the last page.")),
                "total": _int(0, description="Every match of the query."),
                **freshness,
            },
            simulated=True,
        ),
        "MarketAnswer": _obj({"market": _ref("MarketDetail"), **freshness}, simulated=True),
        "Quote": _quote_schema(),
        "Token": _token_schema(),
        "History": _history_schema(),
        "Book": _book_schema(),
        "PriceAnswer": _obj(
            {"token": _ref("Token"), "quote": _ref("Quote"), "history": _ref("History"), **freshness},
            optional=("history",),
            simulated=True,
        ),
        "BatchItem": _batch_item_schema(),
        "PricesAnswer": _obj(
            {
                "quotes": {"type": "array", "items": _ref("BatchItem"), "maxItems": MAX_BATCH,
                           "description": "One per distinct id, in request order."},
                "count": _int(0, MAX_BATCH),
                "freshness": {**_ref("Freshness"), "description": "Of the oldest quote; stale if any quote is."},
            },
            simulated=True,
        ),
        "BookAnswer": _obj({"token": _ref("Token"), "book": _ref("Book"), **freshness}, simulated=True),
        "Sentiment": _sentiment_schema(),
        "SentimentAnswer": _obj(
            {
                "sentiment": _ref("Sentiment"),
                "history": {"type": "array", "items": _ref("Sentiment"), "maxItems": HISTORY_LIMIT,
                            "description": "With `history=true`: the newest analyses, newest first."},
                **freshness,
            },
            optional=("history",),
            simulated=True,
        ),
    }


# --- components.responses, headers and parameters --------------------------------------------


def _error_response(description: str, codes: list[str], *, retry_after: bool = False) -> Schema:
    headers: dict[str, Any] = {
        "Cache-Control": {"$ref": "#/components/headers/NoStore"},
        "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
    }
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    codes_text = ", ".join(f"`{code}`" for code in codes)
    schema = {
        "allOf": [
            _ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    return {
        "description": f"{description} (error code {codes_text}).",
        "headers": headers,
        "content": {JSON: {"schema": schema}},
    }


def _responses() -> dict[str, Any]:
    return {
        "NotModified": {
            "description": "The `If-None-Match` tag matches: the cached copy is current; no body.",
            "headers": {
                "ETag": {"$ref": "#/components/headers/ETag"},
                "Cache-Control": {"$ref": "#/components/headers/CacheControl"},
                "Vary": {"$ref": "#/components/headers/Vary"},
                "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
            },
        },
        "BadRequest": _error_response("A parameter is malformed or out of range; `parameter` names it",
                                      ["bad_request"]),
        "NotFound": _error_response("No such market or token", ["not_found"]),
        "BookNotFound": _error_response(
            "Unknown token (`not_found`), or its order book is closed because the market closed or resolved "
            "(`book_closed`; `/api/price/{token_id}` has the last known price)",
            ["not_found", "book_closed"],
        ),
        "ModelError": _error_response(
            "The sentiment model gave no usable answer and no earlier analysis is stored", ["model_error"],
            retry_after=True,
        ),
        "Unavailable": _error_response(
            "A dependency is down and nothing stored can answer; `Retry-After` when known",
            ["unavailable", "database_unavailable", "upstream_unavailable", "upstream_rate_limited"],
            retry_after=True,
        ),
        "SentimentUnavailable": _error_response(
            "Sentiment analysis is not configured on this deployment, or a dependency is down",
            ["not_configured", "unavailable", "database_unavailable", "upstream_unavailable",
             "upstream_rate_limited"],
            retry_after=True,
        ),
        "InternalError": _error_response(
            "A setting is invalid (`config_error`, naming the variable, never its value) or a bug (`internal`, "
            "with an incident id that is in the log)",
            ["internal", "config_error"],
        ),
    }


def _headers() -> dict[str, Any]:
    return {
        "ETag": {"description": "Tag of this answer, for `If-None-Match`; a gzip body has its own tag, the "
                                "same with `-gzip` appended.", "required": True,
                 "schema": _str(pattern='^"[0-9a-f]+(-gzip)?"$')},
        "CacheControl": {
            "description": "`public, max-age=<seconds left of the TTL>, stale-while-revalidate=<TTL>, "
                           "stale-if-error=86400`.",
            "required": True,
            "schema": _str(pattern="^public, max-age=[0-9]+, stale-while-revalidate=[0-9]+, stale-if-error=[0-9]+$"),
        },
        "NoStore": {"description": "Errors and live checks are not cached.", "schema": _str(enum=["no-store"])},
        "RetryAfter": {"description": "Seconds to wait before retrying, when known.",
                       "schema": _str(pattern="^[0-9]+$")},
        "Simulated": {"description": "`true` in `make demo` mode: simulated data.", "schema": _str(enum=["true"])},
        "ContentEncoding": {"description": "`gzip` when the request accepts it and the body is 1 KB or more.",
                            "schema": _str(enum=["gzip"])},
        "Vary": {"description": "`Accept-Encoding` on every JSON answer and 304; `Origin` too when CORS is "
                                "configured for listed origins.", "schema": _str()},
    }


def _bool_param(name: str, default: bool, description: str, location: str = "query") -> Schema:
    return {
        "name": name,
        "in": location,
        "required": False,
        "description": f"{description} (`true`/`false`; `1`/`0` and `yes`/`no` are accepted too).",
        "schema": {"type": "boolean", "default": default},
    }


def _parameters() -> dict[str, Any]:
    return {
        "ConditionId": {"name": "condition_id", "in": "path", "required": True, "schema": CONDITION_ID,
                        "description": "0x followed by 64 lower-case hex characters (400 otherwise)."},
        "TokenId": {"name": "token_id", "in": "path", "required": True, "schema": TOKEN_ID,
                    "description": "1 to 78 decimal digits (400 otherwise)."},
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An `ETag` from an earlier answer, identity or gzip (either matches): 304 with no "
                           "body while it is current.",
            "schema": _str(),
        },
        "Refresh": _bool_param("refresh", False, "Fetch from the source now instead of the cache, when allowed "
                                                 "(throttled; otherwise ignored)"),
    }


# --- paths -----------------------------------------------------------------------------------


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _response(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _ok(schema_name: str, description: str, *, cached: bool = True) -> Schema:
    headers: dict[str, Any] = {
        "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
        "Content-Encoding": {"$ref": "#/components/headers/ContentEncoding"},
        "Vary": {"$ref": "#/components/headers/Vary"},
    }
    if cached:
        headers = {
            "ETag": {"$ref": "#/components/headers/ETag"},
            "Cache-Control": {"$ref": "#/components/headers/CacheControl"},
            **headers,
        }
    return {"description": description, "headers": headers, "content": {JSON: {"schema": _ref(schema_name)}}}


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _cached(ok: Schema, **errors: Schema) -> dict[str, Any]:
    return {"200": ok, "304": _response("NotModified"), **errors, "500": _response("InternalError")}


def _operation(operation_id: str, tag: str, summary: str, description: str, parameters: list[Schema],
               responses: dict[str, Any]) -> Schema:
    return {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
    }


def _paths() -> dict[str, Any]:
    fidelity_floors = ", ".join(f"{interval}: {floor}" for interval, floor in MIN_FIDELITY.items())
    markets_query = [
        _query("q", _str(maxLength=200), "Text search: every word must appear in the question or slug "
                                         "(case-insensitive)."),
        _query("tag", _str(maxLength=100), "Only markets with this tag or category (slug or label)."),
        _query("category", _str(maxLength=100), "Same as `tag` (`tag` wins when both are given)."),
        _query("sort", _str(enum=list(SORTS), default="volume"), "Sort key; markets without a value come last."),
        _query("order", _str(enum=["asc", "desc"]), "`desc` by default (`asc` for `end_date`)."),
        _query("limit", _int(1, MAX_LIMIT) | {"default": DEFAULT_LIMIT}, "Page size."),
        _query("cursor", _str(maxLength=512), "`next_cursor` of the previous page, with the same q, tag, sort, "
                                              "order and active_only (400 otherwise)."),
        _bool_param("active_only", True, "`false` also lists markets that left the active set in the last 30 days"),
        _param("Refresh"),
        _param("IfNoneMatch"),
    ]
    return {
        f"{API_PREFIX}/health": {
            "get": _operation(
                "health_check", "health", "Liveness, or a deep check of every dependency",
                "Without `deep`: no I/O. With `deep=true`: the database and both Polymarket hosts, checked in "
                "parallel with a short timeout; 503 when the database does not answer.",
                [_bool_param("deep", False, "Check every dependency")],
                {
                    "200": {
                        "description": "Alive (and, with `deep=true`, able to serve).",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"},
                                    "X-Data-Simulated": {"$ref": "#/components/headers/Simulated"}},
                        "content": {JSON: {"schema": {"oneOf": [_ref("Health"), _ref("HealthDeep")]}}},
                    },
                    "400": _response("BadRequest"),
                    "503": {
                        "description": "`deep=true` and the database does not answer: the app cannot serve.",
                        "content": {JSON: {"schema": _ref("HealthDeep")}},
                    },
                    "500": _response("InternalError"),
                },
            )
        },
        f"{API_PREFIX}/markets": {
            "get": _operation(
                "list_markets", "markets", "Search, sort and page the active market catalogue",
                "Served from memory, backed by PostgreSQL, refreshed from Polymarket Gamma on a schedule. "
                "With no catalogue stored yet the first request waits for the first refresh.",
                markets_query,
                _cached(_ok("MarketList", "One page of markets."), **{
                    "400": _response("BadRequest"),
                    "503": _response("Unavailable"),
                }),
            )
        },
        f"{API_PREFIX}/markets/{{condition_id}}": {
            "get": _operation(
                "get_market", "markets", "One market",
                "Every list field plus description and order-book settings. Markets stay stored after they "
                "close, so old ids keep answering.",
                [_param("ConditionId"), _param("IfNoneMatch")],
                _cached(_ok("MarketAnswer", "The market."), **{
                    "400": _response("BadRequest"),
                    "404": _response("NotFound"),
                    "503": _response("Unavailable"),
                }),
            )
        },
        f"{API_PREFIX}/markets/{{condition_id}}/sentiment": {
            "get": _operation(
                "get_market_sentiment", "sentiment", "The market's sentiment, from a language model",
                "One stored analysis per market per TTL (one model call per market at a time); a model "
                "failure serves the last analysis marked stale, else 502.",
                [
                    _param("ConditionId"),
                    _bool_param("history", False, f"Add the newest {HISTORY_LIMIT} analyses"),
                    _param("Refresh"),
                    _param("IfNoneMatch"),
                ],
                _cached(_ok("SentimentAnswer", "The newest analysis."), **{
                    "400": _response("BadRequest"),
                    "404": _response("NotFound"),
                    "502": _response("ModelError"),
                    "503": _response("SentimentUnavailable"),
                }),
            )
        },
        f"{API_PREFIX}/price/{{token_id}}": {
            "get": _operation(
                "get_price", "prices", "One token's quote, with its price history",
                "One order-book read gives the quote; history merges Polymarket's with stored samples. A "
                "failing Polymarket is answered from the last known quote, marked stale.",
                [
                    _param("TokenId"),
                    _query("interval", _str(enum=list(INTERVALS), default=DEFAULT_INTERVAL),
                           "History range (`1m` is a month; `max` is everything kept)."),
                    _query("fidelity", _int(1, MAX_FIDELITY),
                           f"Minutes per history point; at least {fidelity_floors} (400 below), 1 otherwise. "
                           "Defaults to the interval's minimum."),
                    _bool_param("history", True, "Include the price history"),
                    _param("Refresh"),
                    _param("IfNoneMatch"),
                ],
                _cached(_ok("PriceAnswer", "The quote (and history)."), **{
                    "400": _response("BadRequest"),
                    "404": _response("NotFound"),
                    "503": _response("Unavailable"),
                }),
            )
        },
        f"{API_PREFIX}/prices": {
            "get": _operation(
                "get_prices", "prices", "Quotes of many tokens in one call",
                f"Up to {MAX_BATCH} ids; one upstream round trip for every id not fresh in the cache. Each id "
                "is answered on its own (`status`); the call fails only when no id can be priced.",
                [
                    _query("token_ids", _str(minLength=1, maxLength=MAX_TOKEN_IDS_CHARS),
                           f"Comma-separated token ids, at most {MAX_BATCH} distinct.", required=True),
                    _param("IfNoneMatch"),
                ],
                _cached(_ok("PricesAnswer", "One item per distinct id."), **{
                    "400": _response("BadRequest"),
                    "503": _response("Unavailable"),
                }),
            )
        },
        f"{API_PREFIX}/book/{{token_id}}": {
            "get": _operation(
                "get_book", "prices", "One token's order book",
                "Best levels first, `depth` per side, with totals of the whole book.",
                [
                    _param("TokenId"),
                    _query("depth", _int(1, MAX_DEPTH) | {"default": DEFAULT_DEPTH}, "Levels per side."),
                    _param("IfNoneMatch"),
                ],
                _cached(_ok("BookAnswer", "The order book."), **{
                    "400": _response("BadRequest"),
                    "404": _response("BookNotFound"),
                    "503": _response("Unavailable"),
                }),
            )
        },
        f"{API_PREFIX}/openapi.json": {
            "get": _operation(
                "get_openapi_document", "meta", "This document", "The OpenAPI 3.1 description of this API.", [],
                {
                    "200": {
                        "description": "The OpenAPI document (the same in demo mode, where only the header says so).",
                        "headers": {"X-Data-Simulated": {"$ref": "#/components/headers/Simulated"},
                                    "Content-Encoding": {"$ref": "#/components/headers/ContentEncoding"}},
                        "content": {JSON: {"schema": {"type": "object", "required": ["openapi", "info", "paths"]}}},
                    },
                    "500": _response("InternalError"),
                },
            )
        },
    }


def _build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polymarket-api",
            "version": __version__,
            "summary": "Polymarket markets, prices, order books and model sentiment, cached and fail-soft.",
            "description": (
                "All responses are JSON. Errors are `{\"error\": {\"code\", \"message\", \"parameter\"?}}`. "
                "Cached answers carry a `freshness` object, `ETag` and `Cache-Control`, and answer 304 to a "
                "matching `If-None-Match`. JSON bodies of 1 KB or more are gzip-compressed when the request's "
                "`Accept-Encoding` allows it. In demo mode every answer has `X-Data-Simulated: true` and every "
                "JSON body `\"simulated\": true`."
            ),
        },
        "servers": [{"url": "/", "description": "This deployment."}],
        "tags": [
            {"name": "health"}, {"name": "markets"}, {"name": "sentiment"}, {"name": "prices"}, {"name": "meta"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "parameters": _parameters(),
            "headers": _headers(),
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    return _build()


def openapi_document() -> dict[str, Any]:
    """The document (a copy: callers may change it)."""
    return copy.deepcopy(_document())


@functools.cache
def openapi_json() -> str:
    """The document serialised once, as served."""
    return json.dumps(_document(), separators=(",", ":"), ensure_ascii=False)
