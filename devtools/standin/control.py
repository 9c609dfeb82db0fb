"""HTTP control API under ``/_standin/`` (served on both ports), mirroring the Python API, so tests
and benchmarks can drive a stand-in running in another process. No Polymarket route starts with
``/_``, so the prefix cannot shadow one.

Markets an app has never seen: the catalogue starts with ``closed_fraction`` of its markets closed
and settled (most of them long ago; a Gamma crawl of open markets never returns them). A test finds
one with ``GET /_standin/catalogue?closed=true`` (each row has ``closed_at``, unix s) or adds fresh
ones after the app's crawl with ``POST /_standin/markets {"count": 1, "closed": true}``.

    GET    /_standin                               info: urls, market counts, clock
    GET    /_standin/counts?host=&path=&method=    {"count": n, "total": n, "counts": [...]}
    POST   /_standin/reset-counts                  zero counts and the request log
    GET    /_standin/requests?limit=N              the request log, oldest first
    GET    /_standin/faults                        active faults
    POST   /_standin/faults                        {"kind", "host", "path", "times", "after", ...params} -> {"id"}
    DELETE /_standin/faults                        clear all faults
    DELETE /_standin/faults/{id}                   remove one fault
    GET    /_standin/catalogue?offset=&limit=&closed=   markets (ids, slug, tokens, closed, event,
                                                   group_item_title, neg_risk_other, closed_at,
                                                   settled, winner), creation order
    POST   /_standin/markets                       {"count": n, "closed": false} -> add markets; closed:
                                                   true adds markets settled long ago
    POST   /_standin/markets/{condition_id}/close  {"winner": 0|1} settles (omitted: the favourite);
                                                   {"winner": null} or {"settled": false}: closed,
                                                   not settled (UMA "proposed", last prices)
    POST   /_standin/markets/{condition_id}/reopen
    POST   /_standin/tokens/{token_id}/price       {"price": 0.42, "hold": true}
    POST   /_standin/tokens/{token_id}/release     let a held price walk again
    POST   /_standin/tokens/{token_id}/one-sided   its market's books one-sided and never traded
    POST   /_standin/books-unknown                 {"mode": "omit" | "404"}: /books and tokens without a book
    POST   /_standin/history/forget                {"before": unix_s, "token_id": optional}
    POST   /_standin/clock                         {"advance": seconds} -> {"now": ...}
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .catalogue import market_summary
from .common import ApiError, Query, Response, first, json_response, not_found_page

if TYPE_CHECKING:
    from .server import PolymarketStandIn

PREFIX = "/_standin"


def _bad(message: str, status: int = 400) -> ApiError:
    return ApiError(json_response({"error": message}, status))


def _body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise _bad("body must be JSON") from None
    if not isinstance(data, dict):
        raise _bad("body must be a JSON object")
    return data


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be true or false")
    return value


def handle(standin: PolymarketStandIn, method: str, path: str, query: Query, raw: bytes) -> Response:
    try:
        return _route(standin, method, path.rstrip("/") or PREFIX, query, raw)
    except ApiError as e:
        return e.response
    except KeyError as e:
        return json_response({"error": f"not found: {e.args[0]}"}, 404)
    except (ValueError, TypeError) as e:
        return json_response({"error": str(e)}, 400)


def _route(pm: PolymarketStandIn, method: str, path: str, query: Query, raw: bytes) -> Response:
    parts = path[len(PREFIX):].strip("/").split("/") if path != PREFIX else []
    match (method, parts):
        case ("GET", []):
            return json_response(pm.info())
        case ("GET", ["counts"]):
            host, p, m = first(query, "host"), first(query, "path"), first(query, "method")
            return json_response({"count": pm.count(host, p, m), "total": pm.count(), "counts": pm.counts()})
        case ("POST", ["reset-counts"]):
            pm.reset_counts()
            return json_response({"ok": True})
        case ("GET", ["requests"]):
            limit = int(first(query, "limit") or 0) or None
            return json_response({"requests": [asdict(r) for r in pm.requests(limit)]})
        case ("GET", ["faults"]):
            return json_response({"faults": pm.faults()})
        case ("POST", ["faults"]):
            body = _body(raw)
            kind = body.pop("kind", None)
            if not isinstance(kind, str):
                raise _bad("'kind' is required")
            params = body.pop("params", {})
            fault_id = pm.inject(kind, host=body.pop("host", None), path=body.pop("path", None),
                                 times=body.pop("times", None), after=int(body.pop("after", 0) or 0),
                                 **{**params, **body})
            return json_response({"id": fault_id})
        case ("DELETE", ["faults"]):
            pm.clear_faults()
            return json_response({"ok": True})
        case ("DELETE", ["faults", fault_id]):
            if not fault_id.isdigit() or not pm.remove_fault(int(fault_id)):
                raise _bad(f"no fault {fault_id}", 404)
            return json_response({"ok": True})
        case ("GET", ["catalogue"]):
            closed = first(query, "closed")
            rows = [m for m in pm.catalogue
                    if closed is None or m.closed == (closed.lower() == "true")]
            offset = int(first(query, "offset") or 0)
            limit = int(first(query, "limit") or 1000)
            return json_response({"total": len(rows),
                                  "markets": [market_summary(m) for m in rows[offset:offset + limit]]})
        case ("POST", ["markets"]):
            body = _body(raw)
            created = pm.add_markets(int(body.get("count", 1)), closed=_flag(body, "closed", False))
            return json_response({"markets": [market_summary(m) for m in created]})
        case ("POST", ["markets", condition_id, "close"]):
            body = _body(raw)
            # An explicit null winner means "closed, not settled"; an absent one, the favourite wins.
            settled = _flag(body, "settled", True) and not ("winner" in body and body["winner"] is None)
            m = pm.close_market(condition_id, winner=body.get("winner"), settled=settled)
            return json_response(market_summary(m))
        case ("POST", ["markets", condition_id, "reopen"]):
            return json_response(market_summary(pm.reopen_market(condition_id)))
        case ("POST", ["tokens", token_id, "price"]):
            body = _body(raw)
            if "price" not in body:
                raise _bad("'price' is required")
            pm.set_price(token_id, float(body["price"]), hold=bool(body.get("hold", True)))
            return json_response({"ok": True})
        case ("POST", ["tokens", token_id, "release"]):
            pm.release_price(token_id)
            return json_response({"ok": True})
        case ("POST", ["tokens", token_id, "one-sided"]):
            pm.make_one_sided(token_id)
            return json_response({"ok": True})
        case ("POST", ["books-unknown"]):
            pm.set_books_unknown(str(_body(raw).get("mode")))
            return json_response({"ok": True})
        case ("POST", ["history", "forget"]):
            body = _body(raw)
            if "before" not in body:
                raise _bad("'before' is required")
            pm.forget_history(float(body["before"]), body.get("token_id"))
            return json_response({"ok": True})
        case ("POST", ["clock"]):
            pm.advance_time(float(_body(raw).get("advance", 0)))
            return json_response({"now": pm.now()})
    return not_found_page()
