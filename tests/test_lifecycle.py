"""Issue 13, lifecycle and resolution: a market that closes upstream is looked up once, in one
batched Gamma request, after the refresh that saw it leave; then every endpoint shows it
resolved (the list by status, the market's ``resolution``, the settled price of its tokens). A
hostile lookup answer is skipped or fails without losing the refresh, and is asked again next
refresh."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import httpx
import pytest

from shared.container import get_container
from shared.db.database import get_database
from shared.markets.resolution import RECHECK_AFTER_H
from shared.markets.service import get_markets_service
from tests.conftest import Upstream, handler, reset_app
from tests.test_markets import all_pages, body_of, get
from tests.test_prices import price, prices

LOOKUP = "/markets"  # Gamma's list endpoint: the closed-markets lookup (the crawl uses /markets/keyset)


def health() -> dict[str, Any]:
    req = func.HttpRequest("GET", "http://localhost/api/health", body=b"", params={"deep": "true"})
    return json.loads(handler("health_check")(req).get_body())["datasets"]["markets"]


def market(condition_id: str) -> dict[str, Any]:
    response = get("m", route_params={"market": condition_id})
    assert response.status_code == 200, response.get_body()
    return body_of(response)["market"]


def close_over_http(gamma_url: str, condition_id: str, winner: int) -> None:
    """Through the stand-in's control API, as a test in another process would."""
    response = httpx.post(f"{gamma_url}/_standin/markets/{condition_id}/close", json={"winner": winner})
    assert response.status_code == 200, response.text


def lookups(gamma_url: str) -> int:
    return int(httpx.get(f"{gamma_url}/_standin/counts", params={"host": "gamma", "path": LOOKUP}).json()["count"])


def closed_lookups(standin: Any) -> int:
    """Gamma requests for closed markets by condition id (not the health check's ``/markets?limit=1``)."""
    return sum(1 for r in standin.requests() if r.host == "gamma" and r.path == LOOKUP and "condition_ids=" in r.query
               and "closed=true" in r.query)


def test_a_market_resolved_at_run_time_shows_resolved_on_every_endpoint(app_env: Upstream) -> None:
    assert get("markets", {"limit": "5"}).status_code == 200  # the first load
    target = app_env.open_markets()[4]
    other = app_env.open_markets()[9]
    cid, (winner, loser) = target["condition_id"], target["token_ids"]
    assert market(cid)["resolution"]["status"] == "open"
    before = lookups(app_env.gamma_url)

    close_over_http(app_env.gamma_url, cid, winner=0)
    close_over_http(app_env.gamma_url, other["condition_id"], winner=1)
    result = get_markets_service().refresh(min_age_s=0)
    assert result.status == "refreshed" and result.deactivated == 2
    # Both markets that left, in one batched request.
    assert lookups(app_env.gamma_url) == before + 1
    books = app_env.count("/book", host="clob")

    resolved = all_pages({"status": "resolved", "limit": "100"})
    assert {m["condition_id"] for m in resolved} == {cid, other["condition_id"]}
    listed = next(m for m in resolved if m["condition_id"] == cid)
    assert listed["status"] == "resolved"

    detail = market(cid)
    assert detail["status"] == "resolved"
    resolution = detail["resolution"]
    assert resolution["status"] == "resolved"
    assert resolution["winner_token_id"] == winner
    assert resolution["winner_outcome"] == target["outcomes"][0]
    assert resolution["resolved_at"] is not None and resolution["resolved_at"] == detail["closed_time"]
    assert resolution["uma_statuses"] == ["proposed", "resolved"]  # the UMA history, stored
    assert market(other["condition_id"])["resolution"]["winner_token_id"] == other["token_ids"][1]

    won = body_of(price(winner))
    assert (won["quote"]["price"], won["quote"]["price_rule"]) == (1.0, "resolved")
    assert won["token"]["condition_id"] == cid and won["token"]["outcome_index"] == 0
    assert won["freshness"]["source"] != "stale"  # final, not an old price
    assert "history" in won  # history still answers (from storage and upstream history)
    lost = body_of(price(loser, {"history": "false"}))
    assert (lost["quote"]["price"], lost["quote"]["price_rule"]) == (0.0, "resolved")
    assert app_env.count("/book", host="clob") == books  # settled in the store: no book read
    batch = {q["token_id"]: q["quote"] for q in body_of(prices([winner, loser, other["token_ids"][1]]))["quotes"]}
    assert {t: (q["price"], q["price_rule"]) for t, q in batch.items()} == {
        winner: (1.0, "resolved"), loser: (0.0, "resolved"), other["token_ids"][1]: (1.0, "resolved")}

    # Settled: never asked again; nothing left, nothing to look up.
    get_markets_service().refresh(min_age_s=0)
    assert lookups(app_env.gamma_url) == before + 1

    status = health()["resolution"]  # (the deep check pings Gamma's /markets: counted above first)
    assert status["last_error"] is None and status["failures_in_a_row"] == 0
    assert status["totals"]["stored"] == 2 and status["totals"]["settled"] == 2
    assert status["totals"]["requests"] == 1


def test_resolved_markets_list_most_recently_closed_first(app_env: Upstream) -> None:
    assert get("markets", {"limit": "5"}).status_code == 200
    first, second = app_env.open_markets()[1]["condition_id"], app_env.open_markets()[2]["condition_id"]
    app_env.standin.close_market(first, winner=1)
    get_markets_service().refresh(min_age_s=0)
    app_env.standin.advance_time(120)  # the second closes two minutes later
    app_env.standin.close_market(second, winner=0)
    forced = body_of(get("markets", {"refresh": "true", "status": "resolved"}))  # refresh and lookup, then answer
    assert forced["freshness"]["source"] == "live"
    assert [m["condition_id"] for m in forced["markets"]] == [second, first]
    resolved = [m["condition_id"] for m in all_pages({"status": "resolved", "limit": "100"})]
    assert resolved == [second, first]
    open_ids = {m["condition_id"] for m in all_pages({"status": "open", "limit": "500"})}
    assert first not in open_ids and second not in open_ids


def test_lookups_are_batched_by_100(app_env: Upstream) -> None:
    assert get("markets", {"limit": "5"}).status_code == 200
    gone = [m["condition_id"] for m in app_env.open_markets()[:150]]
    for condition_id in gone:
        app_env.standin.close_market(condition_id)
    before = lookups(app_env.gamma_url)
    result = get_markets_service().refresh(min_age_s=0)
    assert result.deactivated == 150
    assert lookups(app_env.gamma_url) == before + 2  # 100 + 50 condition ids
    assert health()["resolution"]["last"]["settled"] == 150
    assert len(all_pages({"status": "resolved", "limit": "100"})) == 150


# --- a hostile lookup answer --------------------------------------------------------------------


@pytest.fixture
def hostile_app(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in {
        "UPSTREAM_RETRY_BACKOFF_S": "0",
        "UPSTREAM_RETRY_ATTEMPTS": "1",
        "UPSTREAM_BREAKER_FAILURES": "1000",  # the lookup's failure must not open the crawl's circuit
        "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
    }.items():
        monkeypatch.setenv(key, value)
    reset_app()
    get_container().reset("markets")
    yield hostile_env
    get_container().reset("markets")


HOSTILE_ANSWERS = {
    "a bad row": ("row_field", {"field": "outcomePrices", "value": '["1", "0"'}, None),
    "a 500": ("json", {"value": {"error": "internal error"}, "status": 500}, "5xx"),
    "a 200 with an error body": ("json", {"value": {"error": "rate limited, try later"}}, "bad_body"),
    "an HTML page": ("body", {"body": "<html>Cloudflare</html>", "content_type": "text/html"}, "bad_body"),
}


@pytest.mark.parametrize("answer", list(HOSTILE_ANSWERS))
def test_a_hostile_lookup_answer_never_loses_the_refresh(hostile_app: Any, answer: str) -> None:
    switch, params, failure = HOSTILE_ANSWERS[answer]
    service = get_markets_service()
    assert service.refresh(min_age_s=0).status == "refreshed"
    target = next(m for m in hostile_app.standin.catalogue if not m.closed)
    hostile_app.standin.close_market(target.condition_id, winner=0)
    hostile_app.on("closed_lookups", host="gamma", path=LOOKUP, then=switch, **params)

    result = service.refresh(min_age_s=0)
    assert result.status == "refreshed" and result.deactivated == 1
    assert closed_lookups(hostile_app.standin) == 1
    status = health()
    assert status["last_error"] is None  # the catalogue's refresh did not fail
    resolution = status["resolution"]
    if failure is None:
        assert resolution["last_error"] is None and resolution["last"]["skipped_rows"] == 1
    else:
        assert failure in resolution["last_error"] and "lookup" in resolution["last_error"]
        assert resolution["failures_in_a_row"] == 1
    # Left the active set, not known to be settled: closed, no winner.
    shown = market(target.condition_id)
    assert shown["resolution"]["status"] == "closed" and shown["resolution"]["winner_token_id"] is None
    assert target.condition_id not in {m["condition_id"] for m in all_pages({"status": "open", "limit": "500"})}

    hostile_app.clear()  # the next refresh asks again, and this time learns the winner
    assert service.refresh(min_age_s=0).status == "refreshed"
    assert closed_lookups(hostile_app.standin) == 2
    assert health()["resolution"]["last_error"] is None
    assert market(target.condition_id)["resolution"]["winner_token_id"] == target.token_ids[0]


def test_a_market_the_lookup_does_not_find_stays_closed_and_is_not_asked_again_at_once(hostile_app: Any) -> None:
    service = get_markets_service()
    service.refresh(min_age_s=0)
    target = next(m for m in hostile_app.standin.catalogue if not m.closed)
    hostile_app.standin.close_market(target.condition_id, winner=1)
    hostile_app.on("closed_lookups", host="gamma", path=LOOKUP, then="json", value=[])

    service.refresh(min_age_s=0)
    assert health()["resolution"]["last"]["not_found"] == 1
    shown = market(target.condition_id)
    assert shown["active"] is False and shown["resolution"]["status"] == "closed"
    closed = {m["condition_id"] for m in all_pages({"status": "closed", "limit": "500"})}
    assert target.condition_id in closed
    # Its last open row read 1 and 0 (a market all but decided): still not settled, Gamma never said closed.
    get_database().query("UPDATE outcome_tokens SET price = CASE outcome_index WHEN 0 THEN 1 ELSE 0 END "
                         "WHERE condition_id = %s RETURNING condition_id", (target.condition_id,))
    assert market(target.condition_id)["resolution"] == {**shown["resolution"], "status": "closed"}
    hostile_app.clear()
    service.refresh(min_age_s=0)  # checked moments ago: re-checked only after RECHECK_AFTER_H
    assert closed_lookups(hostile_app.standin) == 1
    get_database().query(  # as if RECHECK_AFTER_H had passed
        "UPDATE markets SET resolution_checked_at = resolution_checked_at - make_interval(hours => %s) "
        "WHERE condition_id = %s RETURNING condition_id", (RECHECK_AFTER_H + 1, target.condition_id))
    service.refresh(min_age_s=0)
    assert closed_lookups(hostile_app.standin) == 2
    assert market(target.condition_id)["resolution"]["winner_token_id"] == target.token_ids[1]
