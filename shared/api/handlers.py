"""The HTTP adapters: parse the path ids and the query into typed values, call the service,
serialise its answer. Imported on the first request (``function_app`` stays light at cold
start), so this is where the models and the services come in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from shared import health
from shared.api import docs
from shared.api.headers import JSON
from shared.api.params import parse_query
from shared.api.queries import HealthQuery
from shared.api.responses import cached_json, json_response
from shared.api.routes import PATH_IDS
from shared.api.tables import cached_csv
from shared.container import Container, get_container
from shared.core.errors import NotFound
from shared.core.freshness import Answer
from shared.events.query import EventListQuery
from shared.markets.query import MarketListQuery
from shared.prices.query import BookQuery, PriceQuery, QuotesQuery
from shared.sentiment.query import SentimentQuery


def _services() -> Container:
    return get_container()


def _path(req: func.HttpRequest, name: str) -> str:
    """A path id, checked once by its rule (shared/core/ids.py): a 400 naming it otherwise."""
    return PATH_IDS[name](req.route_params.get(name))


def _answer(req: func.HttpRequest, answer: Answer) -> func.HttpResponse:
    return cached_json(req, answer.body, freshness=answer.freshness.as_dict(), etag=answer.etag, ttl_s=answer.ttl_s,
                       body_key=answer.body_key)


def health_check(req: func.HttpRequest) -> func.HttpResponse:
    if not parse_query(HealthQuery, req.params).deep:
        return json_response(health.basic())
    report, can_serve = health.deep()
    return json_response(report, status=200 if can_serve else 503)


def list_markets(req: func.HttpRequest) -> func.HttpResponse:
    query = parse_query(MarketListQuery, req.params)
    return _answer(req, _services().markets.list(query, force_refresh=query.refresh))


def get_market(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, _services().markets.get(_path(req, "market")))


def resolve(req: func.HttpRequest) -> func.HttpResponse:
    from shared.markets.lookup import ResolveQuery

    services = _services()
    query = parse_query(ResolveQuery, req.params)
    return _answer(req, services.lookup.answer(query.q, services.settings.cache.markets_ttl_s))


def list_tags(req: func.HttpRequest) -> func.HttpResponse:
    services = _services()
    return _answer(req, services.tags.answer(services.settings.cache.markets_ttl_s))


def list_events(req: func.HttpRequest) -> func.HttpResponse:
    query = parse_query(EventListQuery, req.params)
    return _answer(req, _services().events.list(query, force_refresh=query.refresh))


def get_event(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, _services().events.get(_path(req, "event")))


def get_market_sentiment(req: func.HttpRequest) -> func.HttpResponse:
    condition_id = _path(req, "condition_id")
    query = parse_query(SentimentQuery, req.params)
    return _answer(req, _services().sentiment.get(condition_id, history=query.history, refresh=query.refresh))


def get_price(req: func.HttpRequest) -> func.HttpResponse:
    token = _path(req, "token_id")
    query = parse_query(PriceQuery, req.params)
    answer = _services().prices.price(token, history=query.history_query(), refresh=query.refresh)
    if query.format == "csv":
        points = answer.body["history"]["points"]
        rows = ([datetime.fromtimestamp(p["t"], UTC).isoformat(), p["t"], p["p"]] for p in points)
        return cached_csv(req, answer, ("time", "unix", "price"), rows,
                          f"price-{token}-{query.interval}-{query.fidelity}m.csv")
    return _answer(req, answer)


def get_price_candles(req: func.HttpRequest) -> func.HttpResponse:
    from shared.prices.candles import CSV_COLUMNS, CandleQuery, csv_rows

    token = _path(req, "token_id")
    query = parse_query(CandleQuery, req.params)
    answer = _services().candles.candles(token, query)
    if query.format == "csv":
        return cached_csv(req, answer, CSV_COLUMNS, csv_rows(answer.body), f"candles-{token}-{query.resolution}.csv")
    return _answer(req, answer)


def get_prices(req: func.HttpRequest) -> func.HttpResponse:
    query = parse_query(QuotesQuery, req.params)
    return _answer(req, _services().prices.quotes(query.token_ids))


def get_book(req: func.HttpRequest) -> func.HttpResponse:
    token = _path(req, "token_id")
    query = parse_query(BookQuery, req.params)
    return _answer(req, _services().prices.book(token, depth=query.depth))


def get_openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    from shared.api.openapi import openapi_json  # the response models load with the document, not before

    # Not json_response: the document is the same in every mode (no "simulated" flag in it).
    return func.HttpResponse(openapi_json(), mimetype=JSON, headers={"Cache-Control": "public, max-age=3600"})


def get_api_docs(req: func.HttpRequest) -> func.HttpResponse:
    headers = _static_headers(docs.PAGE_CACHE)
    return func.HttpResponse(docs.page(), mimetype="text/html", charset="utf-8", headers=headers)


def get_api_docs_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("asset") or ""
    body = docs.asset(name)
    if body is None:
        raise NotFound(f"no documentation file {name[:100]!r}")
    return func.HttpResponse(body, headers={"Content-Type": docs.ASSETS[name], **_static_headers(docs.ASSET_CACHE)})


def compact_price_history() -> dict[str, Any]:
    """The captured history's downsampling job (``shared.history.downsample``), one bounded run."""
    from shared.history import downsample

    services = _services()
    return downsample.compact(lambda: services.database, services.settings.cache.price_history_retention_days).as_dict()


def _static_headers(cache_control: str) -> dict[str, str]:
    return {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
