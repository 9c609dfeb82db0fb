"""The Azure Functions app: triggers and one-line adapters. Behaviour lives in ``shared/``.

Importing this module must never fail or do I/O (Azure indexes functions by importing it), and
it stays cheap (cold start): routes come from the light route table, and the handlers (with the
models and the services they use) are imported on the first request.
"""

# No `from __future__ import annotations`: the worker reads the handlers' annotations as classes.
import logging
from types import ModuleType

import azure.functions as func

from shared.api.endpoint import endpoint
from shared.api.routes import ROUTES
from shared.container import get_container
from shared.core.errors import AppError

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("polymarket_api")


def _handlers() -> ModuleType:
    from shared.api import handlers

    return handlers


@app.route(**ROUTES["health_check"].binding, auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().health_check(req)


@app.route(**ROUTES["list_markets"].binding)
@endpoint
def list_markets(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().list_markets(req)


@app.route(**ROUTES["list_events"].binding)
@endpoint
def list_events(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().list_events(req)


@app.route(**ROUTES["get_event"].binding)
@endpoint
def get_event(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_event(req)


@app.route(**ROUTES["resolve"].binding)
@endpoint
def resolve(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().resolve(req)


@app.route(**ROUTES["list_tags"].binding)
@endpoint
def list_tags(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().list_tags(req)


@app.route(**ROUTES["get_market_sentiment"].binding)
@endpoint
def get_market_sentiment(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_market_sentiment(req)


@app.route(**ROUTES["get_market"].binding)
@endpoint
def get_market(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_market(req)


@app.timer_trigger(schedule="%MARKETS_REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False)
def refresh_markets(timer: func.TimerRequest) -> None:
    try:
        result = get_container().markets.refresh()
    except AppError as error:  # already logged and recorded as the catalogue's last error
        log.warning("scheduled markets refresh failed: %s", error.code)
        return
    log.info("scheduled markets refresh: %s", result.status)


@app.route(**ROUTES["get_price"].binding)
@endpoint
def get_price(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_price(req)


@app.route(**ROUTES["get_price_candles"].binding)
@endpoint
def get_price_candles(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_price_candles(req)


@app.route(**ROUTES["get_prices"].binding)
@endpoint
def get_prices(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_prices(req)


@app.route(**ROUTES["get_book"].binding)
@endpoint
def get_book(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_book(req)


@app.route(**ROUTES["get_openapi_document"].binding)
@endpoint
def get_openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_openapi_document(req)


@app.route(**ROUTES["get_api_docs"].binding)
@endpoint
def get_api_docs(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_api_docs(req)


@app.route(**ROUTES["get_api_docs_asset"].binding)
@endpoint
def get_api_docs_asset(req: func.HttpRequest) -> func.HttpResponse:
    return _handlers().get_api_docs_asset(req)


# On the refresh's schedule, in its own invocation: the refresh's timer and its tests stay as they were.
@app.timer_trigger(schedule="%MARKETS_REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False)
def backfill_price_history(timer: func.TimerRequest) -> None:
    result = get_container().backfill.run()  # never raises; failures are in deep health
    log.info("price history backfill: %s", result)


@app.timer_trigger(schedule="%PRICE_HISTORY_PRUNE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def prune_price_history(timer: func.TimerRequest) -> None:
    try:
        result = get_container().prices.prune()
    except AppError as error:
        log.warning("price history retention failed: %s", error.code)
        return
    log.info("price history retention: %s", result)


@app.timer_trigger(schedule="%PRICE_HISTORY_COMPACT_SCHEDULE%", arg_name="timer", run_on_startup=False)
def compact_price_history(timer: func.TimerRequest) -> None:
    try:
        result = _handlers().compact_price_history()
    except AppError as error:
        log.warning("price history compaction failed: %s", error.code)
        return
    log.info("price history compaction: %s", result)
