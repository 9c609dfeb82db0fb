"""The Azure Functions app: triggers and thin adapters. Behaviour lives in ``shared/``.

Importing this module must never fail or do I/O (Azure indexes functions by importing it);
settings, clients and the database pool are all created on first use.
"""

import logging

import azure.functions as func

from shared import health
from shared.api.http import JSON, bool_param, cached_json, endpoint, json_response
from shared.api.openapi import openapi_json
from shared.core.errors import AppError
from shared.core.freshness import Answer
from shared.markets.service import get_markets_service, parse_query
from shared.prices.service import get_prices_service
from shared.sentiment.service import get_sentiment_service

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("polymarket_api")


def _answer(req: func.HttpRequest, answer: Answer) -> func.HttpResponse:
    return cached_json(req, answer.body, freshness=answer.freshness.as_dict(), etag=answer.etag, ttl_s=answer.ttl_s)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    if not bool_param(req, "deep", default=False):
        return json_response(health.basic())
    report, can_serve = health.deep()
    return json_response(report, status=200 if can_serve else 503)


@app.route(route="markets", methods=["GET"])
@endpoint
def list_markets(req: func.HttpRequest) -> func.HttpResponse:
    query = parse_query(req.params)
    force = bool_param(req, "refresh", default=False)
    return _answer(req, get_markets_service().list(query, force_refresh=force))


@app.route(route="markets/{condition_id}/sentiment", methods=["GET"])
@endpoint
def get_market_sentiment(req: func.HttpRequest) -> func.HttpResponse:
    answer = get_sentiment_service().get(req.route_params.get("condition_id", ""), req.params)
    return _answer(req, answer)


@app.route(route="markets/{condition_id}", methods=["GET"])
@endpoint
def get_market(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, get_markets_service().get(req.route_params.get("condition_id", "")))


@app.timer_trigger(schedule="%MARKETS_REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False)
def refresh_markets(timer: func.TimerRequest) -> None:
    try:
        result = get_markets_service().refresh()
    except AppError as error:  # already logged and recorded as the catalogue's last error
        log.warning("scheduled markets refresh failed: %s", error.code)
        return
    log.info("scheduled markets refresh: %s", result.status)


@app.route(route="price/{token_id}", methods=["GET"])
@endpoint
def get_price(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, get_prices_service().price(req.route_params.get("token_id", ""), req.params))


@app.route(route="prices", methods=["GET"])
@endpoint
def get_prices(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, get_prices_service().quotes(req.params))


@app.route(route="book/{token_id}", methods=["GET"])
@endpoint
def get_book(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(req, get_prices_service().book(req.route_params.get("token_id", ""), req.params))


@app.route(route="openapi.json", methods=["GET"])
@endpoint
def get_openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    # Not json_response: the document is the same in every mode (no "simulated" flag in it).
    return func.HttpResponse(openapi_json(), mimetype=JSON, headers={"Cache-Control": "public, max-age=3600"})


@app.timer_trigger(schedule="%PRICE_HISTORY_PRUNE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def prune_price_history(timer: func.TimerRequest) -> None:
    try:
        result = get_prices_service().prune()
    except AppError as error:
        log.warning("price history retention failed: %s", error.code)
        return
    log.info("price history retention: %s", result)
