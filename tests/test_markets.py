"""The markets API on a real PostgreSQL, against the Polymarket stand-in over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import azure.functions as func
import pytest

from shared.db.database import get_database
from shared.markets.service import get_markets_service, reset_markets_service
from tests.conftest import ROOT, Upstream, handler, reset_app

KEYSET = "/markets/keyset"


def get(route: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
        route_params: dict[str, str] | None = None) -> func.HttpResponse:
    name = "list_markets" if route == "markets" else "get_market"
    req = func.HttpRequest(
        "GET", f"http://localhost/api/{route}", body=b"", params=params or {}, headers=headers or {},
        route_params=route_params or {},
    )
    return handler(name)(req)


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    return json.loads(response.get_body())


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def all_pages(params: dict[str, str]) -> list[dict[str, Any]]:
    markets: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        response = get("markets", {**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_body()
        body = body_of(response)
        markets.extend(body["markets"])
        cursor = body["next_cursor"]
        if cursor is None:
            return markets
    raise AssertionError("paging did not end")


# --- refresh and storage -----------------------------------------------------------------------


def test_first_request_loads_the_whole_catalogue_across_keyset_pages(app_env: Upstream) -> None:
    open_markets = app_env.open_markets()
    response = get("markets", {"limit": "500"})
    assert response.status_code == 200
    body = body_of(response)
    assert body["total"] == len(open_markets)
    assert body["freshness"]["source"] == "live"
    pages = -(-len(open_markets) // 100)
    assert app_env.count(KEYSET) == pages  # every page once, at most 100 per page
    # JSON-inside-strings decoded: outcomes with labels, token ids and prices in upstream order.
    by_id = {m["condition_id"]: m for m in body["markets"]}
    for expected in open_markets[:50]:
        market = by_id.get(expected["condition_id"]) or body_of(
            get("m", route_params={"market": expected["condition_id"]})
        )["market"]
        assert [o["token_id"] for o in market["outcomes"]] == expected["token_ids"]
        assert [o["outcome"] for o in market["outcomes"]] == expected["outcomes"]
        assert all(isinstance(o["price"], float) for o in market["outcomes"])


def test_refresh_with_same_data_changes_nothing(app_env: Upstream) -> None:
    app_env.freeze_prices()  # the stand-in's prices otherwise move between refreshes
    service = get_markets_service()
    first = service.refresh(min_age_s=0)
    assert first.status == "refreshed" and first.changed == first.markets > 0
    before = get_database().query("SELECT max(updated_at) AS t, count(*) AS n FROM markets")[0]
    second = service.refresh(min_age_s=0)
    assert (second.status, second.markets, second.changed, second.deactivated) == (
        "refreshed", first.markets, 0, 0
    )
    after = get_database().query("SELECT max(updated_at) AS t, count(*) AS n FROM markets")[0]
    assert after == before


def test_markets_leaving_the_active_set_are_kept_and_flagged(app_env: Upstream) -> None:
    service = get_markets_service()
    service.refresh(min_age_s=0)
    gone = app_env.open_markets()[3]["condition_id"]
    app_env.close_market(gone)
    result = service.refresh(min_age_s=0)
    assert result.deactivated == 1
    active_ids = {m["condition_id"] for m in all_pages({"limit": "500"})}
    assert gone not in active_ids
    everything = {m["condition_id"]: m for m in all_pages({"limit": "500", "active_only": "false"})}
    assert everything[gone]["active"] is False and everything[gone]["closed"] is True
    single = get("m", route_params={"market": gone})
    assert single.status_code == 200 and body_of(single)["market"]["active"] is False


def test_ttl_governs_upstream_requests(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETS_CACHE_TTL_S", "1")
    reset_app()
    assert get("markets").status_code == 200
    after_first = app_env.count(KEYSET)
    assert after_first > 0
    for _ in range(20):
        assert get("markets", {"q": "will"}).status_code == 200
    assert app_env.count(KEYSET) == after_first  # within the TTL: no upstream call
    time.sleep(1.2)
    response = get("markets")
    assert response.status_code == 200  # served at once from the expired snapshot...
    wait_for(lambda: app_env.count(KEYSET) == 2 * after_first)  # ...while one refresh runs
    wait_for(lambda: not get_markets_service()._flight.in_flight("revalidate"))
    assert app_env.count(KEYSET) == 2 * after_first


@pytest.mark.parametrize(
    ("fault", "params", "reason"),
    [
        ("status", {"status": 500}, "5xx"),
        ("status", {"status": 503}, "5xx"),
        ("rate_limit", {"retry_after": 1}, "429"),
        ("reset", {}, "network"),
        ("garbage", {}, "bad_body"),
        ("latency", {"ms": 1500}, "timeout"),
    ],
)
def test_stale_fallback_under_each_fault(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch, fault: str, params: dict[str, Any], reason: str
) -> None:
    monkeypatch.setenv("UPSTREAM_READ_TIMEOUT_S", "0.5")
    monkeypatch.setenv("UPSTREAM_RETRY_ATTEMPTS", "2")
    reset_app()
    good = body_of(get("markets", {"limit": "10"}))
    app_env.fail(fault, host="gamma", path=KEYSET, **params)
    response = get("markets", {"limit": "10", "refresh": "true"})
    assert response.status_code == 200
    body = body_of(response)
    assert body["freshness"]["source"] == "stale"
    assert reason in body["freshness"]["stale_reason"]
    assert [m["condition_id"] for m in body["markets"]] == [m["condition_id"] for m in good["markets"]]
    # Nothing stored was lost.
    assert body["total"] == good["total"]


def test_no_data_and_failing_upstream_is_503(app_env: Upstream) -> None:
    app_env.fail("status", host="gamma", status=500)
    response = get("markets")
    assert response.status_code == 503
    error = body_of(response)["error"]
    assert error["code"] == "unavailable"
    assert "no market data" in error["message"]
    assert "Traceback" not in response.get_body().decode()


def test_a_refresh_failing_halfway_keeps_the_previous_catalogue(app_env: Upstream) -> None:
    service = get_markets_service()
    service.refresh(min_age_s=0)
    before = get_database().query("SELECT count(*) AS n FROM markets WHERE in_active_set")[0]["n"]
    app_env.fail("status", host="gamma", path=KEYSET, status=500, after=2)  # pages 1-2 fine, then 500s
    app_env.close_market(app_env.open_markets()[0]["condition_id"])
    with pytest.raises(Exception):  # noqa: B017 - any upstream error type will do here
        service.refresh(min_age_s=0)
    after = get_database().query("SELECT count(*) AS n FROM markets WHERE in_active_set")[0]["n"]
    assert after == before


def test_concurrent_requests_on_an_expired_cache_make_one_refresh(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETS_CACHE_TTL_S", "1")
    reset_app()
    assert get("markets").status_code == 200
    first_pages = app_env.count(KEYSET, first_page_only=True)
    time.sleep(1.2)
    app_env.fail("latency", host="gamma", path=KEYSET, ms=100)  # keep the refresh in flight a while
    barrier = threading.Barrier(50)

    def one(_: int) -> int:
        barrier.wait()
        return get("markets", {"limit": "5"}).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == [200] * 50
    wait_for(lambda: not get_markets_service()._flight.in_flight("revalidate"), timeout=30)
    assert app_env.count(KEYSET, first_page_only=True) == first_pages + 1


def test_concurrent_first_requests_wait_for_one_refresh(app_env: Upstream) -> None:
    barrier = threading.Barrier(20)

    def one(_: int) -> dict[str, Any]:
        barrier.wait()
        response = get("markets", {"limit": "3"})
        assert response.status_code == 200
        return body_of(response)

    with ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(one, range(20)))
    assert {b["total"] for b in bodies} == {len(app_env.open_markets())}
    assert app_env.count(KEYSET, first_page_only=True) == 1


_INSTANCE = """
import json, sys
from shared.markets.service import get_markets_service
snapshot, freshness = get_markets_service().current()
print(json.dumps({"n": len(snapshot.items), "source": freshness.source}))
"""


def test_two_instances_on_one_database_refresh_once(app_env: Upstream, database_env: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app_env.fail("latency", host="gamma", path=KEYSET, ms=50)  # long enough for the two to overlap
    procs = [
        subprocess.Popen([sys.executable, "-c", _INSTANCE], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["n"] for o in outputs] == [len(app_env.open_markets())] * 2
    assert app_env.count(KEYSET, first_page_only=True) == 1
    rows = get_database().query("SELECT count(*) AS n, count(DISTINCT condition_id) AS d FROM markets")[0]
    assert rows["n"] == rows["d"] == len(app_env.open_markets())


# --- queries -----------------------------------------------------------------------------------


def test_cursor_paging_has_no_duplicates_or_gaps(app_env: Upstream) -> None:
    for sort in ("volume", "volume_24h", "liquidity", "end_date", "price_change"):
        for order in ("asc", "desc"):
            pages = all_pages({"limit": "37", "sort": sort, "order": order})
            ids = [m["condition_id"] for m in pages]
            assert len(ids) == len(set(ids)) == len(app_env.open_markets()), (sort, order)


def test_sorting(app_env: Upstream) -> None:
    markets = all_pages({"limit": "500", "sort": "volume", "order": "desc"})
    volumes = [m["volume"] for m in markets if m["volume"] is not None]
    assert volumes == sorted(volumes, reverse=True)
    markets = all_pages({"limit": "500", "sort": "end_date"})  # asc by default
    dates = [m["end_date"] for m in markets if m["end_date"]]
    assert dates == sorted(dates)


def test_search_matches_question_and_slug(app_env: Upstream) -> None:
    sample = app_env.open_markets()[5]
    word = max(sample["question"].split(), key=len).strip("?,.").lower()
    found = all_pages({"q": word, "limit": "100"})
    assert sample["condition_id"] in {m["condition_id"] for m in found}
    assert all(word in (m["question"] + " " + m["slug"]).lower() for m in found)
    assert body_of(get("markets", {"q": "zzzz-no-such-words"}))["total"] == 0


def test_tag_filter(app_env: Upstream) -> None:
    everything = all_pages({"limit": "500"})
    tagged = [m for m in everything if m["tags"]]
    assert tagged, "the stand-in should tag markets"
    tag = tagged[0]["tags"][0]
    found = all_pages({"tag": tag, "limit": "500"})
    assert found and all(tag in m["tags"] or (m["category"] or "").lower().replace(" ", "-") == tag for m in found)
    assert len(found) == sum(1 for m in everything if tag in m["tags"] or
                             (m["category"] or "").lower().replace(" ", "-") == tag)


def test_etag_and_304(app_env: Upstream) -> None:
    first = get("markets", {"limit": "5"})
    etag = first.headers["ETag"]
    assert "max-age=" in first.headers["Cache-Control"] and "stale-if-error" in first.headers["Cache-Control"]
    again = get("markets", {"limit": "5"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_body() == b""
    other = get("markets", {"limit": "6"}, headers={"If-None-Match": etag})
    assert other.status_code == 200


def test_cors_for_configured_origins(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://app.example")
    reset_app()
    allowed = get("markets", {"limit": "1"}, headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = get("markets", {"limit": "1"}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"sort": "popularity"}, "sort"),
        ({"order": "up"}, "order"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10000"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJmIjoiMTIzIiwiayI6W2ZhbHNlLDEuMCwiMHgiXX0"}, "cursor"),
        ({"active_only": "maybe"}, "active_only"),
        ({"refresh": "please"}, "refresh"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    app_env: Upstream, params: dict[str, str], parameter: str
) -> None:
    response = get("markets", params)
    assert response.status_code == 400
    error = body_of(response)["error"]
    assert error["code"] == "bad_request" and error["parameter"] == parameter
    assert parameter in error["message"]


def test_cursor_from_another_query_is_rejected(app_env: Upstream) -> None:
    cursor = body_of(get("markets", {"limit": "2"}))["next_cursor"]
    response = get("markets", {"limit": "2", "sort": "liquidity", "cursor": cursor})
    assert response.status_code == 400 and body_of(response)["error"]["parameter"] == "cursor"


def test_single_market(app_env: Upstream) -> None:
    expected = app_env.open_markets()[0]
    response = get("m", route_params={"market": expected["condition_id"]})
    assert response.status_code == 200
    body = body_of(response)
    assert body["market"]["condition_id"] == expected["condition_id"]
    assert body["market"]["description"]
    assert body["freshness"]["source"] in ("live", "cache")
    assert get("m", route_params={"market": "0x" + "0" * 64}).status_code == 404
    # A slug or Gamma id is a market too (tests/test_resolve.py); a token id or a bad condition id is not.
    for bad in ("0x123", "Abc", "0x" + "G" * 64, expected["token_ids"][0]):
        response = get("m", route_params={"market": bad})
        assert response.status_code == 400
        assert body_of(response)["error"]["parameter"] == "market"


def test_forced_refresh_is_honoured_at_most_once_per_interval(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETS_REFRESH_MIN_INTERVAL_S", "30")
    reset_app()
    assert get("markets").status_code == 200  # first load
    loads = app_env.count(KEYSET, first_page_only=True)
    forced = get("markets", {"refresh": "true"})
    assert forced.status_code == 200
    assert body_of(forced)["freshness"]["source"] in ("live", "cache")
    for _ in range(5):
        assert get("markets", {"refresh": "true"}).status_code == 200
    # The first load just happened, so no forced refresh is honoured within 30 s.
    assert app_env.count(KEYSET, first_page_only=True) == loads


def test_paging_through_a_larger_catalogue(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = Upstream(markets=1234, seed=5)
    try:
        monkeypatch.setenv("POLYMARKET_HOST", upstream.clob_url)
        monkeypatch.setenv("POLYMARKET_GAMMA_HOST", upstream.gamma_url)
        reset_app()
        reset_markets_service()
        result = get_markets_service().refresh(min_age_s=0)
        assert result.markets == 1234
        assert upstream.count(KEYSET) == 13  # 12 full pages of 100 and one of 34
        ids = [m["condition_id"] for m in all_pages({"limit": "500"})]
        assert sorted(ids) == sorted(m["condition_id"] for m in upstream.open_markets())
    finally:
        reset_markets_service()
        upstream.stop()


def test_open_circuit_serves_stale_at_once_and_shows_in_health(
    app_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_BREAKER_FAILURES", "2")
    monkeypatch.setenv("UPSTREAM_BREAKER_COOLDOWN_S", "60")
    reset_app()
    assert get("markets").status_code == 200
    loaded = app_env.count(KEYSET)
    app_env.fail("status", host="gamma", status=502)
    # The first failed attempt answers stale at once; the refresh retries in the background,
    # and its second failure opens the circuit.
    first = body_of(get("markets", {"refresh": "true"}))
    assert first["freshness"]["source"] == "stale" and "5xx" in first["freshness"]["stale_reason"]
    wait_for(lambda: not get_markets_service().status()["refreshing"])
    sent = app_env.count(KEYSET)
    assert sent == loaded + 2  # two attempts, then the open circuit sends nothing
    again = body_of(get("markets", {"refresh": "true"}))
    assert app_env.count(KEYSET) == sent  # nothing was sent: no retries, no waiting on Polymarket
    reason = again["freshness"]["stale_reason"]
    # The circuit, and the failure that opened it.
    assert again["freshness"]["source"] == "stale" and "circuit_open after 5xx: 502" in reason
    health = json.loads(handler("health_check")(
        func.HttpRequest("GET", "http://localhost/api/health", body=b"", params={"deep": "true"})
    ).get_body())
    assert health["circuit_breakers"]["gamma"]["state"] == "open"
    assert health["datasets"]["markets"]["last_error"] == again["freshness"]["stale_reason"]


def test_missing_refresh_record_still_gives_a_finite_age(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    get_database().execute("DELETE FROM dataset_state")
    reset_markets_service()  # a new instance, loading from the database alone
    response = get("markets", {"limit": "2"})
    assert response.status_code == 200
    freshness = body_of(response)["freshness"]
    assert freshness["as_of"] is not None and 0 <= freshness["age_seconds"] < 3600


def test_a_row_the_database_refuses_is_skipped_not_the_page(app_env: Upstream) -> None:
    """The last line behind validation: a record the database cannot take (built here without
    the parser, so nothing caught it) is skipped and named; the rest of its page is written."""
    import dataclasses

    from shared.markets import store as markets_store
    from shared.markets.rows import parse_market

    answer = app_env.standin.views["gamma"]("GET", KEYSET, {"limit": ["5"], "closed": ["false"]}, b"")
    page = [parse_market(row) for row in json.loads(answer.body)["markets"]]
    bad = [dataclasses.replace(page[1], question="a\u0000b"), dataclasses.replace(page[3], volume=Decimal("1e200000"))]
    records = [page[0], bad[0], page[2], bad[1], page[4]]
    refused: list[str] = []
    changed = get_database().run(lambda cur: markets_store.upsert_markets(cur, records, refused))
    assert changed == 3 and refused == [page[1].condition_id, page[3].condition_id]
    stored = get_database().query("SELECT condition_id FROM markets ORDER BY condition_id")
    assert {row["condition_id"] for row in stored} == {page[i].condition_id for i in (0, 2, 4)}


def _display(bid: float | None, ask: float | None, last: float | None) -> tuple[float | None, str]:
    """Polymarket's rule, computed here independently of shared.core.display."""
    if bid is not None and ask is not None and bid <= ask and Decimal(str(ask)) - Decimal(str(bid)) <= Decimal("0.1"):
        return float((Decimal(str(bid)) + Decimal(str(ask))) / 2), "midpoint"
    if last is not None:
        return last, "last_trade"
    return None, "none"


def test_list_prices_follow_the_display_rule_and_agree_with_the_price_endpoint(app_env: Upstream) -> None:
    app_env.freeze_prices()
    markets = all_pages({"limit": "500"})
    rules = set()
    for m in markets:
        expected, rule = _display(m["best_bid"], m["best_ask"], m["last_trade_price"])
        first, second = m["outcomes"]
        if expected is None:
            assert first["price_rule"] in ("outcome_prices", "none") and first["price"] == first["outcome_price"]
            continue
        assert (first["price_rule"], second["price_rule"]) == (rule, rule), m["condition_id"]
        assert first["price"] == pytest.approx(expected, abs=1e-12)
        assert second["price"] == pytest.approx(1 - expected, abs=1e-12)
        rules.add(rule)
    assert "midpoint" in rules
    # The list and /api/price agree (the stand-in's Gamma view has no lag while prices are frozen).
    for m in markets[:5]:
        token = m["outcomes"][0]["token_id"]
        req = func.HttpRequest("GET", f"http://localhost/api/price/{token}", body=b"", params={},
                               route_params={"token_id": token})
        quote = body_of(handler("get_price")(req))["quote"]
        assert quote["price"] == pytest.approx(m["outcomes"][0]["price"], abs=1e-9)
        assert quote["price_rule"] == m["outcomes"][0]["price_rule"]


def test_markets_name_their_event_and_filter_by_it(app_env: Upstream) -> None:
    markets = all_pages({"limit": "500"})
    assert all(m["event"] and m["event"]["id"] and m["status"] == "open" for m in markets)
    sizes: dict[str, int] = {}
    for m in markets:
        sizes[m["event"]["id"]] = sizes.get(m["event"]["id"], 0) + 1
    event_id = max(sizes, key=lambda e: sizes[e])
    slug = next(m["event"]["slug"] for m in markets if m["event"]["id"] == event_id)
    by_id = all_pages({"event": event_id, "limit": "3"})
    by_slug = all_pages({"event": slug.upper()})
    assert len(by_id) == sizes[event_id] > 1
    assert [m["condition_id"] for m in by_id] == [m["condition_id"] for m in by_slug]
    assert all(m["event"]["id"] == event_id for m in by_id)
    grouped = [m for m in by_id if m["group_item_title"]]
    assert grouped or not by_id[0]["event"]  # a group event's candidates carry their names
    assert body_of(get("markets", {"event": "no-such-event"}))["total"] == 0
    assert body_of(get("markets", {"tag": f"event:{event_id}"}))["total"] == 0  # facets are not tags


def test_status_filters(app_env: Upstream) -> None:
    everything = all_pages({"limit": "500"})
    assert all_pages({"status": "open", "limit": "500"}) == everything
    hours = 24 * 30
    soon = all_pages({"status": "closing_soon", "closing_within_h": str(hours)})
    now = time.time()
    from datetime import datetime

    ends = {m["condition_id"]: m["end_date"] for m in everything}
    until = now + hours * 3600
    expected = {c for c, end in ends.items() if end and now <= datetime.fromisoformat(end).timestamp() <= until}
    assert {m["condition_id"] for m in soon} == expected
    assert [m["end_date"] for m in soon] == sorted(m["end_date"] for m in soon)  # soonest first
    assert body_of(get("markets", {"status": "resolved"}))["markets"] == []  # nothing closed yet
    for bad in ({"status": "done"}, {"closing_within_h": "0"}, {"event": "x" * 301}):
        response = get("markets", bad)
        assert response.status_code == 400 and body_of(response)["error"]["parameter"] == next(iter(bad))
