"""The events API through its HTTP handlers, on a real PostgreSQL, against the Polymarket stand-in."""

from __future__ import annotations

import json
import math
import urllib.request
from typing import Any

import azure.functions as func
import pytest

from shared.container import get_container
from shared.core.errors import DatabaseUnavailable
from shared.db.database import get_database
from shared.markets.lookup import event_rows
from shared.markets.rows import BadMarketRow, parse_market
from tests.conftest import Upstream, handler, sample

KEYSET = "/markets/keyset"


def get_events(params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", "http://localhost/api/events", body=b"", params=params or {},
                           headers=headers or {})
    return handler("list_events")(req)


def get_event(ref: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", f"http://localhost/api/events/{ref}", body=b"", params={},
                           headers=headers or {}, route_params={"event": ref})
    return handler("get_event")(req)


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    return json.loads(response.get_body())


def all_pages(params: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        response = get_events({**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_body()
        body = body_of(response)
        events.extend(body["events"])
        cursor = body["next_cursor"]
        if cursor is None:
            assert body["total"] == len(events)
            return events
    raise AssertionError("paging did not end")


def gamma_event(upstream: Upstream, event_id: str) -> dict[str, Any]:
    """The stand-in's own answer for an event (the truth the API is checked against)."""
    with urllib.request.urlopen(f"{upstream.gamma_url}/events/{event_id}") as response:
        return json.loads(response.read())


def open_events(upstream: Upstream) -> dict[str, set[str]]:
    """Event id -> its open markets' condition ids, from the stand-in."""
    out: dict[str, set[str]] = {}
    for market in upstream.standin.catalogue:
        if not market.closed:
            out.setdefault(str(market.event.id), set()).add(market.condition_id)
    return out


def records_of_event(event: Any) -> list[Any]:
    """What the lookup makes of an event's market rows: each parsed, the bad ones skipped."""
    records = []
    for row in event_rows(event) if isinstance(event, dict) else []:
        try:
            records.append(parse_market(row))
        except BadMarketRow:
            continue
    return records


def test_each_event_lists_its_markets(app_env: Upstream) -> None:
    app_env.freeze_prices()
    events = all_pages({"limit": "200"})
    expected = open_events(app_env)
    assert {e["id"] for e in events} == set(expected)
    tokens = {m.condition_id: [t.token_id for t in m.tokens] for m in app_env.standin.catalogue}
    for event in events:
        ids = [m["condition_id"] for m in event["markets"]]
        assert set(ids) == expected[event["id"]] and len(ids) == len(set(ids)) == event["market_count"]
        assert event["active"] is True and event["closed"] is False
        for market in event["markets"]:
            assert [o["token_id"] for o in market["outcomes"]] == tokens[market["condition_id"]]
            assert market["status"] == "open"
            for outcome in market["outcomes"]:
                assert outcome["price_rule"] in ("midpoint", "last_trade", "outcome_prices", "none")
                assert outcome["price"] is None or 0 <= outcome["price"] <= 1
    # Aggregates are Gamma's own event figures.
    sample = events[0]
    truth = gamma_event(app_env, sample["id"])
    assert sample["slug"] == truth["slug"] and sample["title"] == truth["title"]
    assert math.isclose(sample["volume"], truth["volume"], rel_tol=1e-9)
    assert sample["tags"] == [t["slug"] for t in truth["tags"]]
    assert sample["tag_labels"] == [t["label"] for t in truth["tags"]]


def test_neg_risk_candidates_are_sorted_by_price_and_summed(app_env: Upstream) -> None:
    app_env.freeze_prices()
    events = [e for e in all_pages({"limit": "200"}) if e["neg_risk"] and e["market_count"] >= 3]
    assert events, "the stand-in has neg-risk groups"
    for event in events:
        prices = [m["outcomes"][0]["price"] for m in event["markets"]]
        priced = [p for p in prices if p is not None]
        assert priced == sorted(priced, reverse=True)
        assert prices[: len(priced)] == priced  # unpriced candidates last
        assert event["price_sum"] == pytest.approx(sum(priced), abs=1e-6)
        truth = gamma_event(app_env, event["id"])
        others = [m["conditionId"] for m in truth["markets"] if m.get("negRiskOther") is True]
        assert event["other_candidate"] == (others[0] if others else None)
        leader = next(m for m in event["markets"] if m["condition_id"] != event["other_candidate"])
        assert event["leading"]["condition_id"] == leader["condition_id"]
        assert event["leading"]["group_item_title"] == leader["group_item_title"]
    assert any(e["other_candidate"] for e in events), "the stand-in has groups with an \"Other\" candidate"
    plain = [e for e in all_pages({"limit": "200"}) if not e["neg_risk"]]
    assert plain and all(e["price_sum"] is None and e["leading"] is None for e in plain)


@pytest.mark.parametrize("sort", ["volume", "volume_24h", "liquidity", "end_date", "competitive"])
def test_paging_is_stable_and_complete_in_every_sort(app_env: Upstream, sort: str) -> None:
    app_env.freeze_prices()
    whole = all_pages({"limit": "200", "sort": sort})
    paged = all_pages({"limit": "7", "sort": sort})
    assert [e["id"] for e in paged] == [e["id"] for e in whole]  # no duplicates, no gaps, same order
    assert len({e["id"] for e in paged}) == len(paged)
    values = [e[sort] for e in whole if e[sort] is not None]
    assert values == sorted(values, reverse=sort != "end_date")
    missing = [e[sort] is None for e in whole]
    assert missing == sorted(missing)  # events without a value come last


def test_search_and_tag_filter_the_list(app_env: Upstream) -> None:
    app_env.freeze_prices()
    everything = all_pages({"limit": "200"})
    word = everything[0]["title"].split()[-1].lower()
    found = all_pages({"limit": "5", "q": word})
    expected = [e["id"] for e in everything if word in f"{e['title']} {e['slug']}".lower()]
    assert found and [e["id"] for e in found] == expected
    assert all_pages({"q": "zzqx-no-such-word"}) == []
    tag, label = everything[0]["tags"][0], everything[0]["tag_labels"][0]
    tagged = [e["id"] for e in everything if tag in e["tags"]]
    assert [e["id"] for e in all_pages({"limit": "3", "tag": tag})] == tagged
    assert [e["id"] for e in all_pages({"tag": label.upper()})] == tagged  # a label, any case


def test_cursor_of_another_query_and_bad_parameters_are_400(app_env: Upstream) -> None:
    first = body_of(get_events({"limit": "2"}))
    response = get_events({"limit": "2", "sort": "liquidity", "cursor": first["next_cursor"]})
    assert response.status_code == 400 and body_of(response)["error"]["parameter"] == "cursor"
    for params, name in (({"limit": "201"}, "limit"), ({"sort": "price"}, "sort"), ({"cursor": "!!"}, "cursor")):
        response = get_events(params)
        assert response.status_code == 400 and body_of(response)["error"]["parameter"] == name


def test_etag_and_304(app_env: Upstream) -> None:
    first = get_events({"limit": "5"})
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"].startswith("public, max-age=")
    assert body_of(first)["freshness"]["source"] in ("live", "cache")
    again = get_events({"limit": "5"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag
    other = get_events({"limit": "6"}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag
    event_id = body_of(first)["events"][0]["id"]
    single = get_event(event_id)
    assert single.status_code == 200
    assert get_event(event_id, headers={"If-None-Match": single.headers["ETag"]}).status_code == 304


def test_one_event_by_id_equals_by_slug_with_markets_in_full(app_env: Upstream) -> None:
    app_env.freeze_prices()
    listed = next(e for e in all_pages({"limit": "200"}) if e["market_count"] >= 2)
    by_id, by_slug = get_event(listed["id"]), get_event(listed["slug"])
    assert by_id.status_code == by_slug.status_code == 200
    assert body_of(by_id)["event"] == body_of(by_slug)["event"]
    assert by_id.headers["ETag"] == by_slug.headers["ETag"]
    event = body_of(by_id)["event"]
    assert [m["condition_id"] for m in event["markets"]] == [m["condition_id"] for m in listed["markets"]]
    full = event["markets"][0]
    assert full["event"]["id"] == listed["id"] and "volume" in full and "updated_at" in full
    assert {k: v for k, v in event.items() if k != "markets"} == {k: v for k, v in listed.items() if k != "markets"}


def test_unknown_event_is_404_and_asked_of_gamma_once(app_env: Upstream) -> None:
    assert get_events().status_code == 200
    for _ in range(3):
        response = get_event("999999999")
        assert response.status_code == 404 and body_of(response)["error"]["code"] == "not_found"
    assert app_env.count("/events/999999999", host="gamma") == 1
    assert get_event("no-such-event-slug").status_code == 404
    assert app_env.count("/events/slug/no-such-event-slug", host="gamma") == 1
    bad = get_event("bad slug!")
    assert bad.status_code == 400 and body_of(bad)["error"]["parameter"] == "event"


def test_an_event_not_stored_is_fetched_once_then_served_from_the_store(app_env: Upstream) -> None:
    assert get_events().status_code == 200
    with urllib.request.urlopen(f"{app_env.gamma_url}/_standin/catalogue?closed=true") as response:
        closed = json.loads(response.read())["markets"]
    stored = {e["id"] for e in all_pages({"limit": "200", "active_only": "false"})}
    event_id = next(m["event_id"] for m in closed if m["event_id"] not in stored)
    truth = gamma_event(app_env, event_id)  # the test's own call: counted before the API's
    path = f"/events/{event_id}"
    asked = app_env.count(path, host="gamma")
    first = get_event(event_id)
    assert first.status_code == 200, first.get_body()
    event = body_of(first)["event"]
    assert {m["condition_id"] for m in event["markets"]} == {m["conditionId"] for m in truth["markets"]}
    assert event["closed"] is True and event["active"] is False
    assert all(m["status"] in ("closed", "resolved") and m["active"] is False for m in event["markets"])
    assert app_env.count(path, host="gamma") == asked + 1
    # Stored now: by id and by slug, and on a new instance, without asking Gamma again.
    get_container().reset("events")
    assert get_event(event_id).status_code == 200
    assert get_event(truth["slug"]).status_code == 200
    assert app_env.count(path, host="gamma") == asked + 1
    assert app_env.count(f"/events/slug/{truth['slug']}", host="gamma") == 0


def test_a_new_instance_answers_from_the_database_without_gamma(app_env: Upstream) -> None:
    app_env.freeze_prices()
    before = body_of(get_events({"limit": "10"}))
    assert get_container().peek("events") is not None
    calls = app_env.count(KEYSET, host="gamma")
    get_container().reset("events", "markets")
    after = body_of(get_events({"limit": "10"}))
    assert app_env.count(KEYSET, host="gamma") == calls
    assert [e["id"] for e in after["events"]] == [e["id"] for e in before["events"]]


def test_the_markets_path_does_not_build_the_events_catalogue(app_env: Upstream) -> None:
    handler("list_markets")(func.HttpRequest("GET", "http://localhost/api/markets", body=b"", params={}))
    assert get_container().peek("events") is None


def test_an_event_row_without_aggregates_or_tags_takes_its_markets(app_env: Upstream) -> None:
    app_env.freeze_prices()
    listed = next(e for e in all_pages({"limit": "200"}) if e["market_count"] >= 2)
    markets = body_of(get_event(listed["id"]))["event"]["markets"]
    assert get_database().execute("UPDATE events SET volume = NULL, liquidity = NULL, tags = '{}', "
                                  "tag_labels = '{}' WHERE event_id = %s", (listed["id"],)) == 1
    get_container().reset("events")  # a new instance reads the rows as they are now
    event = next(e for e in all_pages({"limit": "200"}) if e["id"] == listed["id"])
    assert event["volume"] == pytest.approx(sum(m["volume"] for m in markets))
    assert event["liquidity"] == pytest.approx(sum(m["liquidity"] for m in markets))
    assert event["volume_24h"] == listed["volume_24h"]  # still the row's own
    union = list(dict.fromkeys(t for m in markets for t in m["tags"]))
    assert event["tags"] == union and len(event["tag_labels"]) == len(union)


def test_a_database_outage_is_answered_from_memory(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    app_env.freeze_prices()
    page = body_of(get_events({"limit": "5"}))["events"]
    listed = page[0]
    detail = body_of(get_event(listed["id"]))["event"]
    service = get_container().events
    database = service._database

    def down() -> Any:
        raise DatabaseUnavailable("database is unreachable")

    monkeypatch.setattr(service, "_database", down)
    response = get_event(listed["slug"])  # an event the catalogue holds needs no query
    assert response.status_code == 200, response.get_body()
    assert body_of(response)["event"] == detail
    assert get_event("999999998").status_code == 503  # one it does not hold is the database's error
    # A new markets snapshot whose events cannot be read: the catalogue held is served, stale.
    get_container().markets.refresh(min_age_s=0)
    again = body_of(get_events({"limit": "5"}))
    assert [e["id"] for e in again["events"]] == [e["id"] for e in page]
    assert again["freshness"]["source"] == "stale"
    assert "events catalogue" in again["freshness"]["stale_reason"]
    monkeypatch.setattr(service, "_database", database)
    assert get_event("999999998").status_code == 404  # the database answers again


def test_a_recorded_gamma_event_parses_and_bad_markets_are_skipped() -> None:
    event = sample("gamma_events.json")[0]
    good = event["markets"][0]
    broken = {**good, "conditionId": "0x1234"}  # not a condition id: this market is skipped, not the event
    records = records_of_event({**event, "markets": [good, "not an object", broken, good]})
    assert [r.condition_id for r in records] == [good["conditionId"], good["conditionId"]]
    record = records[0]
    assert record.event is not None and record.event.id == event["id"] and record.event.slug == event["slug"]
    assert record.event_id == event["id"] and record.tags == tuple(t["slug"].lower() for t in event["tags"])
    for unreadable in (None, [], {"id": event["id"]}, {**event, "markets": "[]"}):
        assert records_of_event(unreadable) == []


def test_a_stored_event_that_cannot_be_served_is_left_out_not_the_catalogue(app_env: Upstream) -> None:
    everything = all_pages({"limit": "200"})
    bad = everything[1]["id"]
    # A year Python cannot hold: PostgreSQL stores it, the driver cannot read it.
    assert get_database().execute("UPDATE events SET end_date = '12000-01-01' WHERE event_id = %s", (bad,)) == 1
    get_container().reset("events")
    after = all_pages({"limit": "200"})
    assert [e["id"] for e in after] == [e["id"] for e in everything if e["id"] != bad]
    assert get_container().events._catalogue is not None and get_container().events._catalogue.skipped == 1
    response = get_event(bad)
    assert response.status_code == 404 and "cannot be served" in body_of(response)["error"]["message"]
