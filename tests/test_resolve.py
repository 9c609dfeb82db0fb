"""Any id -> everything: /api/resolve, /api/markets/{slug or id} and /api/tags, through the HTTP
handlers, on a real PostgreSQL and the Polymarket stand-in."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any

import azure.functions as func
import pytest

from shared.container import get_container
from tests.conftest import Upstream, handler
from tests.test_markets import all_pages, body_of


def call(name: str, route: str, params: dict[str, str] | None = None, route_params: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"", params=params or {},
                           headers=headers or {}, route_params=route_params or {})
    return handler(name)(req)


def resolve(q: str, expect: int = 200) -> dict[str, Any]:
    response = call("resolve", "resolve", {"q": q})
    assert response.status_code == expect, (q, response.get_body()[:500])
    return body_of(response)


def standin(upstream: Upstream, path: str) -> Any:
    """The stand-in's control API over HTTP (what another process would use)."""
    with urllib.request.urlopen(f"{upstream.gamma_url}/_standin/{path}", timeout=10) as answer:
        return json.loads(answer.read())


def requests_seen(upstream: Upstream) -> int:
    return int(standin(upstream, "counts")["total"])


def closed_markets(upstream: Upstream) -> list[dict[str, Any]]:
    """Markets closed before the app started: never in its catalogue."""
    markets = standin(upstream, "catalogue?closed=true")["markets"]
    assert len(markets) >= 3, "the stand-in's catalogue has closed markets"
    return list(markets)


def test_each_id_form_resolves_to_the_same_market(app_env: Upstream) -> None:
    listed = all_pages({"limit": "500"})
    slugs = Counter(m["event"]["slug"] for m in listed if m["event"])
    # A market of a many-market event whose slug is not its event's (a bare slug is then unambiguous).
    market = next(m for m in listed if m["event"] and slugs[m["event"]["slug"]] > 1
                  and m["slug"] != m["event"]["slug"] and m["outcomes"][0]["token_id"])
    event = market["event"]
    siblings = {m["condition_id"] for m in listed if m["event"] and m["event"]["id"] == event["id"]}
    before = requests_seen(app_env)
    market_forms = {
        market["condition_id"]: "condition_id",
        market["outcomes"][0]["token_id"]: "token_id",
        market["gamma_id"]: "market_id",
        market["slug"]: "market_slug",
        f"https://polymarket.com/event/{event['slug']}/{market['slug']}": "market_url",
        f"https://www.polymarket.com/es/market/{market['slug']}?tid=17#comments": "market_url",
        f"polymarket.com/event/{event['slug']}/{market['slug']}/": "market_url",
    }
    for q, kind in market_forms.items():
        body = resolve(q)
        assert (body["kind"], body["source"]) == (kind, "store"), q
        assert [m["condition_id"] for m in body["markets"]] == [market["condition_id"]], q
        assert body["event"] == {"id": event["id"], "slug": event["slug"], "title": event["title"]}, q
        answered = body["markets"][0]
        assert answered["question"] == market["question"] and answered["slug"] == market["slug"]
        # The same outcomes, tokens and prices as the list shows.
        assert [(o["outcome"], o["token_id"], o["price"]) for o in answered["outcomes"]] == [
            (o["outcome"], o["token_id"], o["price"]) for o in market["outcomes"]], q
    event_forms = {event["slug"]: "event_slug", event["id"]: "event_id",
                   f"https://polymarket.com/event/{event['slug']}": "event_url"}
    for q, kind in event_forms.items():
        body = resolve(q)
        assert (body["kind"], body["source"]) == (kind, "store"), q
        assert {m["condition_id"] for m in body["markets"]} == siblings, q
    assert requests_seen(app_env) == before, "the store answered every form"


@pytest.mark.parametrize("q", [
    "https://evil.com/event/some-event",
    "http://polymarket.com.evil.com/event/some-event",
    "https://polymarket.com@evil.com/event/some-event",
    "https://user:secret@polymarket.com/event/some-event",
    "https://polymarket.com:8443/event/some-event",
    "https://polymarket.com\\@evil.com/event/some-event",
    "ftp://polymarket.com/event/some-event",
    "//evil.com/event/some-event",
    "https://evil.com/?next=https://polymarket.com/event/some-event",
    "https://polymarket.com/profile/someone",
    "javascript:alert(1)",
    "x" * 601,
])
def test_a_url_of_another_host_or_form_is_refused_without_any_request(app_env: Upstream, q: str) -> None:
    before = requests_seen(app_env)
    error = resolve(q, expect=400)["error"]
    assert error["parameter"] == "q"
    assert requests_seen(app_env) == before


def test_an_unknown_slug_is_a_404_saying_what_was_tried_and_the_miss_is_cached(app_env: Upstream) -> None:
    first = resolve("no-such-market-or-event", expect=404)["error"]["message"]
    assert "/events/slug/no-such-market-or-event" in first and "/markets/slug/no-such-market-or-event" in first
    seen = requests_seen(app_env)
    again = resolve("no-such-market-or-event", expect=404)["error"]["message"]
    assert again == first
    assert requests_seen(app_env) == seen, "the second miss was answered from the cache"
    unknown = "0x" + "ab" * 32
    message = resolve(unknown, expect=404)["error"]["message"]
    assert f"condition_ids={unknown}&closed=true" in message


def test_an_old_closed_market_resolves_from_gamma_then_from_the_store(app_env: Upstream) -> None:
    old, other, third = closed_markets(app_env)[:3]
    body = resolve(old["slug"])
    # A single-market event shares its slug with its market: then the slug names the event.
    assert body["source"] == "upstream" and body["kind"] in ("market_slug", "event_slug")
    answered = {m["condition_id"]: m for m in body["markets"]}
    assert answered[old["condition_id"]]["status"] in ("closed", "resolved")
    assert body["event"]["id"] == old["event_id"]
    get_container().reset("lookup")  # a new instance: nothing cached, the store has it
    seen = requests_seen(app_env)
    for q in (old["condition_id"], old["tokens"][0]["token_id"], old["gamma_id"]):
        again = resolve(q)
        assert again["source"] == "store" and [m["condition_id"] for m in again["markets"]] == [old["condition_id"]]
        assert again["markets"][0] == answered[old["condition_id"]]
    assert requests_seen(app_env) == seen
    # By token id, never seen before: the closed=true lookup finds it.
    by_token = resolve(other["tokens"][1]["token_id"])
    assert (by_token["source"], by_token["kind"]) == ("upstream", "token_id")
    assert by_token["markets"][0]["condition_id"] == other["condition_id"]
    # /api/markets/{slug or id} fetches one on demand too, then answers from the store.
    response = call("get_market", f"markets/{third['gamma_id']}", route_params={"market": third["gamma_id"]})
    assert response.status_code == 200, response.get_body()
    fetched = body_of(response)["market"]
    assert fetched["condition_id"] == third["condition_id"]
    assert fetched["event"]["id"] == third["event_id"], "stored with its event"
    seen = requests_seen(app_env)
    for ref in (third["condition_id"], third["slug"]):
        response = call("get_market", f"markets/{ref}", route_params={"market": ref})
        assert body_of(response)["market"]["condition_id"] == third["condition_id"]
    assert requests_seen(app_env) == seen


def test_a_market_path_takes_a_slug_or_gamma_id_and_still_checks_condition_ids(app_env: Upstream) -> None:
    market = all_pages({"limit": "500"})[0]
    for ref in (market["slug"], market["gamma_id"], market["condition_id"]):
        response = call("get_market", f"markets/{ref}", route_params={"market": ref})
        assert response.status_code == 200, response.get_body()
        assert body_of(response)["market"]["condition_id"] == market["condition_id"]
    for bad in ("0x" + "ab" * 31, market["condition_id"].upper().replace("0X", "0x"), "Some Slug", "a" * 301,
                "1" * 21):
        response = call("get_market", f"markets/{bad}", route_params={"market": bad})
        assert response.status_code == 400, bad
        assert body_of(response)["error"]["parameter"] == "market"
    missing = call("get_market", "markets/no-such-market", route_params={"market": "no-such-market"})
    assert missing.status_code == 404 and "/markets/slug/no-such-market" in body_of(missing)["error"]["message"]


def test_tags_count_what_the_markets_pages_show(app_env: Upstream) -> None:
    listed = all_pages({"limit": "500"})
    markets: Counter[str] = Counter()
    events: dict[str, set[str]] = {}
    labels: dict[str, set[str]] = {}
    for m in listed:
        for tag, label in zip(m["tags"], m["tag_labels"], strict=True):
            labels.setdefault(tag, set()).add(label)
        for tag in set(m["tags"]):
            markets[tag] += 1
            if m["event"]:
                events.setdefault(tag, set()).add(m["event"]["id"])
    response = call("list_tags", "tags")
    assert response.status_code == 200
    body = body_of(response)
    assert body["total"] == len(body["tags"]) == len(markets) > 0
    assert {t["slug"]: t["market_count"] for t in body["tags"]} == dict(markets)
    assert {t["slug"]: t["event_count"] for t in body["tags"]} == {k: len(v) for k, v in events.items()}
    # Upstream's casing, as the markets show it (not the lower-cased slug).
    assert all(t["label"] in labels[t["slug"]] for t in body["tags"])
    assert any(t["label"] != t["slug"] for t in body["tags"])
    counts = [t["market_count"] for t in body["tags"]]
    assert counts == sorted(counts, reverse=True)
    again = call("list_tags", "tags", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_a_failing_gamma_is_a_503_and_the_failure_is_not_cached(app_env: Upstream) -> None:
    old = closed_markets(app_env)[0]
    app_env.fail("status", host="gamma", path="/markets", status=500)
    response = call("resolve", "resolve", {"q": old["condition_id"]})
    assert response.status_code == 503, response.get_body()
    app_env.clear()
    body = resolve(old["condition_id"])
    assert body["source"] == "upstream" and body["markets"][0]["condition_id"] == old["condition_id"]


@pytest.fixture
def hostile_app(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.conftest import reset_app

    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    return hostile_env


def test_a_bad_market_row_in_a_fetched_event_is_skipped_and_counted(hostile_app: Any) -> None:
    event = next(e for e in hostile_app.standin.catalogue.events_by_slug.values() if len(e.markets) >= 3)
    path = f"/events/slug/{event.slug}"
    with urllib.request.urlopen(f"{hostile_app.gamma_url}{path}", timeout=10) as answer:
        row = json.loads(answer.read())
    bad = row["markets"][1]["conditionId"]
    row["markets"][1]["bestBid"] = 12.0  # a price outside [0, 1]
    row["markets"][2] = "not a market"
    hostile_app.on("json", host="gamma", path=path, value=row)
    body = resolve(f"https://polymarket.com/event/{event.slug}")
    assert (body["kind"], body["source"]) == ("event_url", "upstream")
    served = {m["condition_id"] for m in body["markets"]}
    assert bad not in served and served == {m["conditionId"] for m in row["markets"] if isinstance(m, dict)} - {bad}
    assert get_container().lookup.skipped_rows == 2


def test_a_number_that_is_both_a_market_id_and_an_event_id_is_ambiguous(app_env: Upstream) -> None:
    from shared.db.database import get_database

    listed = all_pages({"limit": "500"})
    event = next(m["event"] for m in listed if m["event"])
    other = next(m for m in listed if m["event"] and m["event"]["id"] != event["id"])
    # Gamma's market and event ids are separate sequences: the same number can name one of each.
    get_database().query("UPDATE markets SET gamma_id = %s WHERE condition_id = %s RETURNING 1",
                         (event["id"], other["condition_id"]))
    message = resolve(event["id"], expect=404)["error"]["message"]
    assert "ambiguous" in message and other["condition_id"] in message and event["slug"] in message
    for q in (other["slug"], f"https://polymarket.com/event/{event['slug']}"):  # a link or slug is not
        assert resolve(q)["markets"]
