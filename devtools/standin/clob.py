"""The CLOB host (``clob.polymarket.com``): routes and wire formats of ``docs/polymarket-api.md`` §2-3.

Choices where upstream behaviour is unconfirmed (each marked "unconfirmed" in the contract):
* batch endpoints (``/books``, ``/prices``, ``/midpoints``, ``/spreads``, ``/last-trades-prices``,
  ``/batch-prices-history``) silently omit unknown or closed tokens instead of failing the batch;
  ``/books`` can take the contract's other reading instead (``books_unknown="404"``): one token
  without a book fails the whole batch with the ``/book`` 404 "No orderbook exists ...";
* ``/prices`` items without a valid ``side`` fail the batch with 400 "Invalid side";
* ``next_cursor=LTE=`` gives an empty page, an undecodable cursor 400 ``{"error": "invalid next_cursor"}``;
* ``/prices-history`` for an unknown token gives ``{"history": []}``; a missing ``market`` 400;
* ``/neg-risk`` for an unknown token 404 "market not found"; ``/last-trade-price`` of a closed
  market reports its settlement (winner at 1 - tick, loser at tick), or, closed but not settled, the
  last trade before the close; such a market's ``tokens`` keep their last prices, all ``winner: false``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .catalogue import Catalogue, Market, iso, midnight
from .common import ApiError, Query, Response, first, json_response, not_found_page
from .market_data import HISTORY_RETENTION, MarketData, dec, tick_places

PAGE_SIZE = 1000
END_CURSOR = "LTE="
USDC = "0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174"
MAX_HISTORY_WINDOW = 15 * 86_400
INTERVALS = {"1h": 3600, "6h": 6 * 3600, "1d": 86_400, "1w": 7 * 86_400, "1m": 30 * 86_400,
             "max": HISTORY_RETENTION, "all": HISTORY_RETENTION}
MIN_FIDELITY = {"1w": 5, "1m": 10}
MAX_BATCH = 500
MAX_HISTORY_BATCH = 20

NO_BOOK = "No orderbook exists for the requested token id"
# What ``POST /books`` does with a token that has no book (unconfirmed upstream, §3.8).
BOOKS_UNKNOWN = ("omit", "404")


def error(status: int, message: str) -> ApiError:
    return ApiError(json_response({"error": message}, status))


def encode_cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    """Offset of a ``next_cursor``; None for the end marker."""
    if cursor in (None, "", "MA=="):
        return 0
    if cursor == END_CURSOR:
        return None
    try:
        offset = int(base64.b64decode(cursor, validate=True).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise error(400, "invalid next_cursor") from None
    if offset < 0:
        raise error(400, "invalid next_cursor")
    return offset


class ClobViews:
    def __init__(self, catalogue: Catalogue, data: MarketData, books_unknown: str = "omit") -> None:
        self.catalogue = catalogue
        self.data = data
        self.books_unknown = books_unknown
        self._gets = self._get_routes()
        self._posts = self._post_routes()

    # --- dispatch -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Query, body: bytes) -> Response:
        try:
            if method == "GET":
                route = self._gets.get(path)
                if route is not None:
                    return route(query)
                if path.startswith("/markets/") and path.count("/") == 2:
                    return self.market(path[len("/markets/"):])
                if path.startswith("/markets-by-token/") and path.count("/") == 2:
                    return self.market_by_token(path[len("/markets-by-token/"):])
            elif method == "POST":
                post = self._posts.get(path)
                if post is not None:
                    return post(self._payload(body))
            return not_found_page()
        except ApiError as e:
            return e.response

    def _get_routes(self) -> dict[str, Any]:
        return {
            "/": self.ok, "/ok": self.ok, "/time": self.time,
            "/markets": lambda q: self.page(q, simplified=False, sampling=False),
            "/simplified-markets": lambda q: self.page(q, simplified=True, sampling=False),
            "/sampling-markets": lambda q: self.page(q, simplified=False, sampling=True),
            "/sampling-simplified-markets": lambda q: self.page(q, simplified=True, sampling=True),
            "/book": self.book, "/price": self.price, "/midpoint": self.midpoint, "/spread": self.spread,
            "/last-trade-price": self.last_trade_price, "/tick-size": self.tick_size,
            "/neg-risk": self.neg_risk, "/fee-rate": self.fee_rate, "/prices-history": self.prices_history,
        }

    def _post_routes(self) -> dict[str, Any]:
        return {
            "/books": self.books, "/prices": self.prices, "/midpoints": self.midpoints, "/spreads": self.spreads,
            "/last-trades-prices": self.last_trades_prices, "/batch-prices-history": self.batch_prices_history,
        }

    @staticmethod
    def _payload(body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise error(400, "Invalid payload") from None

    # --- health, time, markets ----------------------------------------------------------------

    def ok(self, _q: Query) -> Response:
        return json_response("OK")

    def time(self, _q: Query) -> Response:
        return json_response(int(self.data.clock()))

    def page(self, query: Query, *, simplified: bool, sampling: bool) -> Response:
        offset = decode_cursor(first(query, "next_cursor"))
        if offset is None:
            return json_response({"data": [], "next_cursor": END_CURSOR, "limit": PAGE_SIZE, "count": 0})
        markets = self.catalogue.markets
        if sampling:
            markets = [m for m in markets if m.sampling]
        rows = markets[offset:offset + PAGE_SIZE]
        render = self.simplified_row if simplified else self.market_row
        nxt = encode_cursor(offset + PAGE_SIZE) if offset + PAGE_SIZE < len(markets) else END_CURSOR
        return json_response({"data": [render(m) for m in rows], "next_cursor": nxt, "limit": PAGE_SIZE,
                              "count": len(rows)})

    def market(self, condition_id: str) -> Response:
        m = self.catalogue.by_condition_id.get(condition_id)
        if m is None:
            raise error(404, "market not found")
        return json_response(self.market_row(m))

    def market_by_token(self, token_id: str) -> Response:
        found = self.catalogue.by_token_id.get(token_id)
        if found is None:
            raise error(404, "market not found")
        m = found[0]
        return json_response({"condition_id": m.condition_id, "primary_token_id": m.tokens[0].token_id,
                              "secondary_token_id": m.tokens[1].token_id})

    def _rewards(self, m: Market) -> dict[str, Any]:
        rates = None if m.rewards_rate is None else [{"asset_address": USDC, "rewards_daily_rate": m.rewards_rate}]
        return {"rates": rates, "min_size": m.rewards_min_size, "max_spread": m.rewards_max_spread}

    def _tokens(self, m: Market) -> list[dict[str, Any]]:
        if m.settled:
            return [{"token_id": t.token_id, "outcome": t.outcome, "price": 1 if t.index == m.winner else 0,
                     "winner": t.index == m.winner} for t in m.tokens]
        # Open: the midpoint now; closed but not settled: the last midpoint, no winner yet.
        at = m.closed_at if m.closed else None
        return [{"token_id": t.token_id, "outcome": t.outcome,
                 "price": round(self.data.midpoint(m, t.index, at), 6), "winner": False} for t in m.tokens]

    def market_row(self, m: Market) -> dict[str, Any]:
        return {
            "enable_order_book": not m.closed,
            "active": True,  # stays true after close, as upstream
            "closed": m.closed,
            "archived": False,
            "accepting_orders": not m.closed,
            "accepting_order_timestamp": iso(m.start_at),
            "minimum_order_size": m.min_order_size,
            "minimum_tick_size": m.tick_size,
            "condition_id": m.condition_id,
            "question_id": m.question_id,
            "question": m.question,
            "description": m.description,
            "market_slug": m.slug,
            "end_date_iso": iso(midnight(m.end_at)),
            "game_start_time": iso(m.game_start_at) if m.game_start_at else None,
            "seconds_delay": m.seconds_delay,
            "fpmm": "",
            "maker_base_fee": m.maker_base_fee,
            "taker_base_fee": m.maker_base_fee,
            "notifications_enabled": True,
            "neg_risk": m.neg_risk,
            "neg_risk_market_id": m.neg_risk_market_id,
            "neg_risk_request_id": m.neg_risk_request_id,
            "icon": m.image,
            "image": m.image,
            "rewards": self._rewards(m),
            "is_50_50_outcome": False,
            "tokens": self._tokens(m),
            "tags": [t.label for t in m.event.tags],
        }

    def simplified_row(self, m: Market) -> dict[str, Any]:
        return {"condition_id": m.condition_id, "rewards": self._rewards(m), "tokens": self._tokens(m),
                "active": True, "closed": m.closed, "archived": False, "accepting_orders": not m.closed}

    # --- token lookups ------------------------------------------------------------------------

    def _token(self, token_id: str | None) -> tuple[Market, int]:
        """An open market's token, or the documented 400/404."""
        if not token_id:
            raise error(400, "Invalid token id")
        found = self.catalogue.by_token_id.get(token_id)
        if found is None or not self.data.has_book(found[0]):
            raise error(404, NO_BOOK)
        return found[0], found[1].index

    def _known(self, token_id: str | None, missing: str) -> tuple[Market, int]:
        """Any market's token (open or closed), for the market-parameter routes."""
        if not token_id:
            raise error(400, "Invalid token id")
        found = self.catalogue.by_token_id.get(token_id)
        if found is None:
            raise error(404, missing)
        return found[0], found[1].index

    @staticmethod
    def _side(side: Any) -> str:
        if not isinstance(side, str) or side.upper() not in ("BUY", "SELL"):
            raise error(400, "Invalid side")
        return side.upper()

    def _token_items(self, payload: Any, limit: int = MAX_BATCH) -> list[dict[str, Any]]:
        if not isinstance(payload, list) or len(payload) > limit:
            raise error(400, "Invalid payload")
        for item in payload:
            if not isinstance(item, dict) or not isinstance(item.get("token_id"), str) or not item["token_id"]:
                raise error(400, "Invalid payload")
        return payload

    def _open(self, token_id: str) -> tuple[Market, int] | None:
        found = self.catalogue.by_token_id.get(token_id)
        if found is None or not self.data.has_book(found[0]):
            return None
        return found[0], found[1].index

    # --- books and prices ---------------------------------------------------------------------

    def book(self, query: Query) -> Response:
        m, i = self._token(first(query, "token_id"))
        return json_response(self.data.book(m, i))

    def books(self, payload: Any) -> Response:
        # Unknown/closed tokens are left out, or fail the batch (upstream behaviour unconfirmed);
        # callers join on asset_id.
        found = [self._open(item["token_id"]) for item in self._token_items(payload)]
        if self.books_unknown == "404" and None in found:
            raise error(404, NO_BOOK)
        return json_response([self.data.book(m, i) for m, i in (f for f in found if f is not None)])

    def _price(self, m: Market, i: int, side: str) -> str:
        bid, ask, _last, _side = self.data.prices(m, i)
        # BUY quotes the best bid and SELL the best ask (live behaviour, §3.9).
        return dec(bid if side == "BUY" else ask, tick_places(m.tick_denom))

    def price(self, query: Query) -> Response:
        m, i = self._token(first(query, "token_id"))
        return json_response({"price": self._price(m, i, self._side(first(query, "side")))})

    def prices(self, payload: Any) -> Response:
        items = self._token_items(payload)
        sides = [self._side(item.get("side")) for item in items]
        out: dict[str, dict[str, str]] = {}
        for item, side in zip(items, sides, strict=True):
            found = self._open(item["token_id"])
            if found is not None:
                out.setdefault(item["token_id"], {})[side] = self._price(*found, side)
        return json_response(out)

    def _mid(self, m: Market, i: int) -> str:
        bid, ask, _last, _side = self.data.prices(m, i)
        return dec((bid + ask) * 5, tick_places(m.tick_denom) + 1)

    def _spread(self, m: Market, i: int) -> str:
        bid, ask, _last, _side = self.data.prices(m, i)
        return dec(ask - bid, tick_places(m.tick_denom))

    def midpoint(self, query: Query) -> Response:
        return json_response({"mid": self._mid(*self._token(first(query, "token_id")))})

    def spread(self, query: Query) -> Response:
        return json_response({"spread": self._spread(*self._token(first(query, "token_id")))})

    def _map(self, payload: Any, fn: Any) -> Response:
        out: dict[str, str] = {}
        for item in self._token_items(payload):
            found = self._open(item["token_id"])
            if found is not None:
                out[item["token_id"]] = fn(*found)
        return json_response(out)

    def midpoints(self, payload: Any) -> Response:
        return self._map(payload, self._mid)

    def spreads(self, payload: Any) -> Response:
        return self._map(payload, self._spread)

    def _last_trade(self, m: Market, i: int) -> tuple[str, str]:
        places = tick_places(m.tick_denom)
        if m.settled:
            return dec(m.tick_denom - 1 if i == m.winner else 1, places), "BUY"
        _bid, _ask, last, side = self.data.prices(m, i, m.closed_at if m.closed else None)
        return dec(last, places), side

    def last_trade_price(self, query: Query) -> Response:
        price, side = self._last_trade(*self._known(first(query, "token_id"), NO_BOOK))
        return json_response({"price": price, "side": side})

    def last_trades_prices(self, payload: Any) -> Response:
        out = []
        for item in self._token_items(payload):
            found = self.catalogue.by_token_id.get(item["token_id"])
            if found is not None:
                price, side = self._last_trade(found[0], found[1].index)
                out.append({"token_id": item["token_id"], "price": price, "side": side})
        return json_response(out)

    # --- market parameters --------------------------------------------------------------------

    def tick_size(self, query: Query) -> Response:
        m, _i = self._known(first(query, "token_id"), "market not found")
        return json_response({"minimum_tick_size": m.tick_size})  # a number here, unlike /book

    def neg_risk(self, query: Query) -> Response:
        m, _i = self._known(first(query, "token_id"), "market not found")
        return json_response({"neg_risk": m.neg_risk})

    def fee_rate(self, query: Query) -> Response:
        self._known(first(query, "token_id"), "fee rate not found for market")
        return json_response({"base_fee": 0})  # legacy bps field: 0 even where fees apply

    # --- price history ------------------------------------------------------------------------

    def _window(self, interval: Any, start: Any, end: Any, fidelity: Any) -> tuple[float, float, int]:
        now = self.data.clock()
        try:
            fid = 1 if fidelity in (None, "") else int(fidelity)
        except (TypeError, ValueError):
            raise error(400, "invalid filters: 'fidelity' must be an integer") from None
        if fid < 1:
            raise error(400, "invalid filters: 'fidelity' must be positive")
        if interval not in (None, ""):
            # interval wins over startTs/endTs when both come (live, undocumented).
            if interval not in INTERVALS:
                raise error(400, f"invalid filters: unknown interval '{interval}'")
            if fid < MIN_FIDELITY.get(interval, 1):
                raise error(400, f"invalid filters: minimum 'fidelity' for '{interval}' range is "
                                 f"{MIN_FIDELITY[interval]}")
            return now - INTERVALS[interval], now, fid
        try:
            lo = None if start in (None, "") else int(start)
            hi = None if end in (None, "") else int(end)
        except (TypeError, ValueError):
            raise error(400, "invalid filters: 'startTs' and 'endTs' must be unix seconds") from None
        if lo is None and hi is None:
            raise error(400, "invalid filters: 'interval' or 'startTs'/'endTs' is required")
        if lo is not None and hi is not None and hi - lo > MAX_HISTORY_WINDOW:
            raise error(400, "invalid filters: 'startTs' and 'endTs' interval is too long")
        return (0.0 if lo is None else lo), (now if hi is None else hi), fid

    def _history(self, token_id: str, window: tuple[float, float, int]) -> list[dict[str, Any]] | None:
        found = self.catalogue.by_token_id.get(token_id)
        if found is None:
            return None
        start, end, fid = window
        return self.data.history(found[0], found[1].index, start, end, fid)

    def prices_history(self, query: Query) -> Response:
        token_id = first(query, "market")
        if not token_id:
            raise error(400, "invalid filters: 'market' is required")
        window = self._window(first(query, "interval"), first(query, "startTs"), first(query, "endTs"),
                              first(query, "fidelity"))
        history = self._history(token_id, window) or []
        return Response(200, json_response({"history": history}).body, [("cache-control", "max-age=90")])

    def batch_prices_history(self, payload: Any) -> Response:
        if not isinstance(payload, dict) or not isinstance(payload.get("markets"), list) or not all(
                isinstance(t, str) and t for t in payload["markets"]):
            raise error(400, "Invalid payload")
        if len(payload["markets"]) > MAX_HISTORY_BATCH:
            raise error(400, f"invalid filters: at most {MAX_HISTORY_BATCH} markets per request")
        window = self._window(payload.get("interval"), payload.get("start_ts"), payload.get("end_ts"),
                              payload.get("fidelity"))
        out: dict[str, list[dict[str, Any]]] = {}
        for token_id in dict.fromkeys(payload["markets"]):
            history = self._history(token_id, window)
            if history is not None:  # unknown tokens are omitted (upstream behaviour unconfirmed)
                out[token_id] = history
        return json_response({"history": out})
