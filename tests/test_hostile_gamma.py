"""The market catalogue against a hostile Gamma (``devtools.hostile``), over real HTTP.

Issue 11, breaks 2, 3, 10 and 11: a bad row is skipped and counted, never a failed refresh;
duplicate ids follow the first-row-wins rule; what is stored can be loaded (a row that cannot is
left out and reported); a bad page or a looping cursor fails that refresh cleanly (the previous
catalogue stays, stale with the reason); failed refreshes back off, so failing requests never
start one crawl each; and reloading the catalogue does not grow memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import shared.markets.crawl
import shared.markets.refresh
import shared.markets.service
from shared.core.config import get_settings
from shared.db.database import get_database
from shared.upstream.polymarket import get_gamma
from tests.conftest import REPORT_LINES, ROOT, Upstream, reset_app, reset_services

KEYSET = "/markets/keyset"
CLIENT_TIMEOUT_S = 30.0
MARKETS = 200  # the hostile_env stand-in's catalogue: two keyset pages


@dataclass
class App:
    http: httpx.Client
    hostile: Any

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def markets(self, **params: str) -> dict[str, Any]:
        response = self.get("/api/markets", limit="500", **params)
        assert response.status_code == 200, response.text
        return response.json()

    def health(self) -> dict[str, Any]:
        return self.get("/api/health", deep="true").json()["datasets"]["markets"]

    def keyset_calls(self) -> int:
        return self.hostile.standin.count(host="gamma", path=KEYSET)

    def first_page(self) -> dict[str, Any]:
        """Gamma's first keyset page as the stand-in would send it (no switch applied)."""
        query = {"limit": ["100"], "closed": ["false"], "include_tag": ["true"]}
        return json.loads(self.hostile.standin.views["gamma"]("GET", KEYSET, query, b"").body)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)


@contextmanager
def serve(monkeypatch: pytest.MonkeyPatch, upstream_urls: tuple[str, str], **env: str) -> Iterator[httpx.Client]:
    import function_app
    from devtools.funchost import LocalHost

    clob, gamma = upstream_urls
    for key, value in {
        "POLYMARKET_HOST": clob,
        "POLYMARKET_GAMMA_HOST": gamma,
        "UPSTREAM_RETRY_BACKOFF_S": "0",
        "UPSTREAM_RETRY_ATTEMPTS": "1",  # one failure is one upstream call
        "UPSTREAM_BREAKER_FAILURES": "1000",  # each fault shows as itself, not as an open circuit
        "MARKETS_REFRESH_MIN_INTERVAL_S": "0",  # refresh=true is honoured at once, unless backing off
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    reset_services()
    reset_app()
    host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
    http = httpx.Client(base_url=host.url, timeout=CLIENT_TIMEOUT_S, trust_env=False)
    try:
        yield http
    finally:
        http.close()
        host.stop()
        reset_services()


@pytest.fixture
def app(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    # A long backoff makes "no second attempt" deterministic on a slow machine; tests that
    # need the next attempt shorten it.
    monkeypatch.setattr(shared.markets.refresh, "BACKOFF_BASE_S", 60.0, raising=False)
    with serve(monkeypatch, (hostile_env.clob_url, hostile_env.gamma_url)) as http:
        yield App(http, hostile_env)


def new_instance() -> None:
    """Forget this instance's catalogue, as a new instance on the same database would start."""
    reset_services()


def ids(body: dict[str, Any]) -> set[str]:
    return {m["condition_id"] for m in body["markets"]}


def serve_page(app: App, rows: list[dict[str, Any]]) -> None:
    """Gamma answers every keyset request with one last page of these rows, as JSON with ASCII
    escapes (so a lone surrogate arrives as ``\\ud800``, as a JSON encoder would send it)."""
    app.hostile.on("body", host="gamma", path=KEYSET, body=json.dumps({"markets": rows}))


# --- break 2: one bad row never blocks a refresh ---------------------------------------------

BAD_VALUES = [
    ("volumeNum", "1e200000"),  # beyond PostgreSQL numeric: the upsert failed
    ("endDate", "9999-12-31T23:59:59-23:59"),  # past datetime.max in UTC
    ("outcomePrices", '["1e400", "0"]'),  # break 3: stored, then no load could read it
    ("endDate", "0001-01-01T00:00:00+14:00"),  # break 3: a BC timestamp once in UTC
    ("bestBid", 12.0),  # a price outside [0, 1]: wrong data, served as fact
    ("liquidityNum", -5),
    ("clobTokenIds", '["0x12", "7"]'),
    ("question", "x" * 100_000),
    ("outcomes", "[" * 50_000 + "]" * 50_000),  # nested JSON inside a string: parsing it crashed the process
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={str(v)[:24]}" for n, v in BAD_VALUES])
def test_a_bad_row_on_a_cold_instance_is_skipped_and_counted(app: App, name: str, value: Any) -> None:
    bad = app.first_page()["markets"][1]["conditionId"]
    app.hostile.on("row_field", host="gamma", path=KEYSET, field=name, value=value, rows=[1], times=1)
    body = app.markets()
    assert body["total"] == MARKETS - 1 and bad not in ids(body)
    assert body["freshness"]["source"] == "live"
    assert app.get(f"/api/markets/{bad}").status_code == 404
    health = app.health()
    assert (health["skipped_rows"], health["duplicate_rows"], health["last_error"]) == (1, 0, None)
    # Nothing unloadable was stored: a new instance loads the same catalogue.
    new_instance()
    again = app.markets()
    assert again["total"] == MARKETS - 1 and app.health()["unloadable_rows"] == 0


def test_a_bad_row_on_a_warm_instance_keeps_its_stored_version(app: App) -> None:
    before = app.markets()
    bad = app.first_page()["markets"][2]["conditionId"]
    app.hostile.on("row_field", host="gamma", path=KEYSET, field="volumeNum", value="1e200000", rows=[2],
                   times=1)
    forced = app.markets(refresh="true")
    assert forced["freshness"]["source"] == "live", forced["freshness"]
    # The market is not dropped for one garbled row: its last good version stays listed.
    assert forced["total"] == before["total"] and bad in ids(forced)
    assert app.health()["skipped_rows"] == 1


@pytest.mark.parametrize(
    ("text", "served"),
    [("Will a\u0000b happen?", "Will ab happen?"), ("Will a\ud800b happen?", "Will ab happen?"),
     ("Will\u0007 a\u009fb\u001b happen?\n", "Will ab happen?"), ("Line one\nline\ttwo", "Line one\nline\ttwo")],
    ids=["nul", "lone-surrogate", "controls", "newline-and-tab-kept"],
)
def test_control_characters_and_lone_surrogates_are_removed_from_text(app: App, text: str, served: str) -> None:
    rows = app.first_page()["markets"]
    rows[4]["question"] = text
    rows[5]["description"] = "Resolves\u0000 YES " + text
    serve_page(app, rows)
    body = app.markets()
    assert body["total"] == len(rows)
    by_id = {m["condition_id"]: m for m in body["markets"]}
    assert by_id[rows[4]["conditionId"]]["question"] == served
    detail = app.get(f"/api/markets/{rows[5]['conditionId']}").json()["market"]
    assert detail["description"] == "Resolves YES " + served.strip()
    assert app.health()["skipped_rows"] == 0


def test_a_hostile_parent_event_skips_its_row_or_is_cleaned_and_stored_loadable(app: App) -> None:
    rows = app.first_page()["markets"]
    rows[1]["events"] = [{**rows[1]["events"][0], "volume": "a lot"}]  # event numbers are numbers
    rows[2]["events"] = [{**rows[2]["events"][0], "openInterest": 1e300}]  # beyond any amount
    rows[3]["events"] = [{**rows[3]["events"][0], "id": {"nested": ["id"]}}]
    rows[4]["events"] = [{**rows[4]["events"][0], "title": "Who\u0000 wins\ud800?", "tags": "not a list"}]
    rows[5]["umaResolutionStatuses"] = '["proposed", {"x": 1}]'
    rows[6]["groupItemTitle"] = "Other\u0007"
    serve_page(app, rows)
    body = app.markets()
    bad = {rows[i]["conditionId"] for i in (1, 2, 3, 5)}
    assert body["total"] == len(rows) - len(bad) and not bad & ids(body)
    by_id = {m["condition_id"]: m for m in body["markets"]}
    assert by_id[rows[4]["conditionId"]]["event"]["title"] == "Who wins?"
    assert by_id[rows[6]["conditionId"]]["group_item_title"] == "Other"
    assert app.health()["skipped_rows"] == len(bad)
    new_instance()  # what was stored loads back
    again = app.markets()
    assert again["total"] == body["total"] and app.health()["unloadable_rows"] == 0
    assert {m["condition_id"]: m["event"] for m in again["markets"]} == {c: m["event"] for c, m in by_id.items()}


@pytest.mark.parametrize(
    ("field", "value"), [("id", "424242"), ("clobTokenIds", '["111", "222"]')], ids=["gamma-id", "token-id"]
)
def test_an_id_two_rows_share_goes_to_the_first_row(app: App, field: str, value: str) -> None:
    page = app.first_page()["markets"]
    first, second = page[3]["conditionId"], page[7]["conditionId"]
    app.hostile.on("row_field", host="gamma", path=KEYSET, field=field, value=value, rows=[3, 7], times=1)
    body = app.markets()
    assert body["total"] == MARKETS - 1 and first in ids(body) and second not in ids(body)
    health = app.health()
    assert (health["skipped_rows"], health["duplicate_rows"]) == (1, 1)


def test_a_repeated_condition_id_is_counted_as_a_duplicate(app: App) -> None:
    page = app.first_page()["markets"]
    app.hostile.on("row_field", host="gamma", path=KEYSET, field="conditionId", value=page[3]["conditionId"],
                   rows=[8], times=1)
    body = app.markets()
    assert body["total"] == MARKETS - 1 and page[8]["conditionId"] not in ids(body)
    assert (app.health()["skipped_rows"], app.health()["duplicate_rows"]) == (1, 1)


@pytest.mark.parametrize("field", ["clobTokenIds", "id"])
def test_ids_a_stored_market_held_pass_to_the_row_that_now_has_them(app: App, field: str) -> None:
    before = app.markets()
    page = app.first_page()["markets"]
    taker, holder = page[0], next(m for m in before["markets"] if m["condition_id"] not in
                                  {r["conditionId"] for r in page})  # stored, on the second page
    tokens = [o["token_id"] for o in holder["outcomes"]]
    value = json.dumps(tokens) if field == "clobTokenIds" else holder["gamma_id"]
    # Only the first page changes: its row 0 now carries an id of a stored market on page 2.
    app.hostile.on("row_field", host="gamma", path=KEYSET, field=field, value=value, rows=[0], times=1)
    forced = app.markets(refresh="true")
    assert forced["freshness"]["source"] == "live", forced["freshness"]
    by_id = {m["condition_id"]: m for m in forced["markets"]}
    if field == "clobTokenIds":
        assert [o["token_id"] for o in by_id[taker["conditionId"]]["outcomes"]] == tokens
    else:
        assert by_id[taker["conditionId"]]["gamma_id"] == holder["gamma_id"]
    # The holder's later row repeats that id: a duplicate; its stored version stays listed.
    assert holder["condition_id"] in by_id and app.health()["duplicate_rows"] == 1
    holders = get_database().query(
        "SELECT DISTINCT condition_id FROM outcome_tokens WHERE token_id = ANY(%s)" if field == "clobTokenIds"
        else "SELECT condition_id FROM markets WHERE gamma_id = %s",
        (tokens if field == "clobTokenIds" else holder["gamma_id"],))
    assert [row["condition_id"] for row in holders] == [taker["conditionId"]]


# --- failing refreshes back off: failing requests never crawl once each -----------------------

BAD_PAGES = [
    ({"markets": "x"}, "markets"),
    ({"error": "cannot get the information"}, "markets"),
    ([], "page"),
    ({"markets": [], "next_cursor": 7}, "next_cursor"),
]


@pytest.mark.parametrize(("page", "where"), BAD_PAGES, ids=["markets-not-a-list", "error-body", "a-list",
                                                            "cursor-not-text"])
def test_a_bad_page_fails_the_refresh_cleanly_and_the_catalogue_stays(app: App, page: Any, where: str) -> None:
    before = app.markets()
    app.hostile.on("json", host="gamma", path=KEYSET, value=page, status=200)
    forced = app.markets(refresh="true")
    freshness = forced["freshness"]
    assert freshness["source"] == "stale" and "bad_body: keyset page 1" in freshness["stale_reason"], freshness
    assert where in freshness["stale_reason"]
    assert ids(forced) == ids(before)
    assert app.health()["last_error"] == freshness["stale_reason"]


def test_a_cold_instance_with_a_failing_gamma_crawls_once_not_once_per_request(app: App) -> None:
    app.hostile.on("json", host="gamma", path=KEYSET, value={"error": "cannot get the information"}, status=200)
    statuses = []
    for i in range(10):
        response = app.get("/api/markets", **({"refresh": "true"} if i % 2 else {}))
        statuses.append(response.status_code)
        error = response.json()["error"]
        assert error["code"] == "unavailable" and "bad_body" in error["message"], error
        assert int(response.headers["Retry-After"]) >= 1
    assert statuses == [503] * 10
    assert app.keyset_calls() == 1
    health = app.health()
    assert "bad_body" in health["last_error"] and health["retry_in_s"] > 0 and health["failures_in_a_row"] == 1


def test_a_backing_off_cold_instance_takes_the_catalogue_another_instance_stored(app: App) -> None:
    app.hostile.on("json", host="gamma", path=KEYSET, value={"markets": "x"}, status=200)
    assert app.get("/api/markets").status_code == 503
    app.hostile.clear()
    other = shared.markets.service.MarketsService(  # another instance on the same database
        get_settings().cache, get_database, get_gamma)
    assert other.refresh(min_age_s=0).status == "refreshed"
    crawled = app.keyset_calls()
    # Still backing off (60 s), yet within the 2 s state check it loads what is stored: no crawl.
    body = wait_for(lambda: (r := app.get("/api/markets", limit="500")).status_code == 200 and r.json(),
                    timeout=5, what="the stored catalogue")
    assert body["total"] == MARKETS and body["freshness"]["source"] == "cache"
    assert app.keyset_calls() == crawled


def test_concurrent_cold_requests_share_one_failed_crawl(app: App) -> None:
    app.hostile.on("json", host="gamma", path=KEYSET, value={"markets": "x"}, status=200)
    barrier = threading.Barrier(10)

    def one() -> int:
        barrier.wait()
        return app.get("/api/markets").status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(one())) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S)
    assert results == [503] * 10
    assert app.keyset_calls() == 1


def test_forced_refreshes_back_off_after_a_failure(app: App) -> None:
    app.markets()
    loaded = app.keyset_calls()
    app.hostile.on("json", host="gamma", path=KEYSET, value={"markets": "x"}, status=200)
    for _ in range(10):
        freshness = app.markets(refresh="true")["freshness"]
        assert freshness["source"] == "stale" and "bad_body" in freshness["stale_reason"]
    assert app.keyset_calls() == loaded + 1


def test_revalidation_backs_off_after_a_failure(database_env: dict[str, str], hostile_env: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.markets.refresh, "BACKOFF_BASE_S", 60.0, raising=False)
    with serve(monkeypatch, (hostile_env.clob_url, hostile_env.gamma_url), MARKETS_CACHE_TTL_S="1") as http:
        app = App(http, hostile_env)
        app.markets()
        loaded = app.keyset_calls()
        app.hostile.on("json", host="gamma", path=KEYSET, value={"markets": "x"}, status=200)
        time.sleep(1.1)
        stop = time.monotonic() + 5.0  # before the fix: a refresh every 2 s
        while time.monotonic() < stop:
            assert app.get("/api/markets", limit="5").status_code == 200
            time.sleep(0.1)
        assert app.keyset_calls() == loaded + 1
        freshness = app.markets()["freshness"]
        assert freshness["source"] == "stale" and "bad_body" in freshness["stale_reason"]


def test_after_the_backoff_a_request_loads_and_success_resets_it(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.markets.refresh, "BACKOFF_BASE_S", 0.5, raising=False)
    app.hostile.on("json", host="gamma", path=KEYSET, value={"markets": "x"}, status=200)
    assert app.get("/api/markets").status_code == 503
    app.hostile.clear()
    assert app.get("/api/markets").status_code == 503  # within the backoff: at once, no crawl
    assert app.keyset_calls() == 1
    time.sleep(0.6)
    body = app.markets()
    assert body["total"] == MARKETS and body["freshness"]["source"] == "live"
    health = app.health()
    assert (health["failures_in_a_row"], health["retry_in_s"], health["last_error"]) == (0, None, None)


# --- break 10: a cursor that loops with fresh values -------------------------------------------


def test_a_looping_keyset_cursor_stops_after_a_few_pages_and_the_catalogue_stays(app: App) -> None:
    before = app.markets()
    loaded = app.keyset_calls()
    app.hostile.on("keyset_loop", host="gamma")
    forced = app.markets(refresh="true")
    wait_for(lambda: not app.health()["refreshing"], what="the refresh to end")
    freshness = app.markets()["freshness"]
    assert freshness["source"] == "stale" and "keyset cursor loops" in freshness["stale_reason"], freshness
    # One page of new markets, then MAX_STALE_PAGES pages that bring none.
    assert app.keyset_calls() - loaded == 1 + shared.markets.crawl.MAX_STALE_PAGES
    assert ids(forced) == ids(before)


def test_a_looping_keyset_cursor_on_a_cold_instance_is_a_503(app: App) -> None:
    app.hostile.on("keyset_loop", host="gamma")
    response = app.get("/api/markets")
    assert response.status_code == 503 and "keyset cursor loops" in response.json()["error"]["message"]
    assert app.keyset_calls() == 1 + shared.markets.crawl.MAX_STALE_PAGES


# --- break 3: whatever is stored can be loaded -------------------------------------------------

# Values the old code could store (or another writer could) that no load could read back.
PLANTED = [
    ("UPDATE markets SET end_date = '0001-01-01 00:00:00+14' WHERE condition_id = %s", "BC timestamp"),
    ("UPDATE markets SET end_date = '10000-01-01 23:58:59+00' WHERE condition_id = %s", "year 10000"),
    ("UPDATE outcome_tokens SET price = '1e400' WHERE condition_id = %s", "price beyond a float"),
    ("UPDATE markets SET volume = 'NaN' WHERE condition_id = %s", "NaN volume"),
]


def test_stored_rows_that_cannot_be_loaded_are_left_out_reported_and_healed(app: App) -> None:
    before = app.markets()
    planted = sorted(ids(before))[: len(PLANTED)]
    for (sql, _), condition_id in zip(PLANTED, planted, strict=True):
        get_database().execute(sql, (condition_id,))
    new_instance()
    body = app.markets()
    assert body["total"] == MARKETS - len(PLANTED) and not ids(body) & set(planted)
    assert app.health()["unloadable_rows"] == len(PLANTED)
    for condition_id in planted:
        response = app.get(f"/api/markets/{condition_id}")
        assert response.status_code == 404 and "cannot be served" in response.json()["error"]["message"]
    # The rows left out are rewritten from Gamma's next row for them, so the next refresh heals.
    forced = app.markets(refresh="true")
    assert forced["total"] == MARKETS and set(planted) <= ids(forced)
    assert app.health()["unloadable_rows"] == 0


def test_a_failed_background_load_shows_in_health_and_the_freshness(
    database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(monkeypatch, (hostile_env.clob_url, hostile_env.gamma_url), MARKETS_CACHE_TTL_S="3") as http:
        app = App(http, hostile_env)
        before = app.markets()
        time.sleep(3.2)  # the snapshot has expired: the next request revalidates in the background
        # Another instance refreshed just now, and the stored catalogue cannot be read.
        get_database().execute("UPDATE dataset_state SET refreshed_at = now()")
        get_database().execute("ALTER TABLE outcome_tokens RENAME COLUMN outcome TO label")
        assert app.get("/api/markets", limit="5").status_code == 200
        error = wait_for(lambda: app.health()["last_error"], what="the load failure in health")
        assert "could not be loaded" in error and "UndefinedColumn" in error
        body = app.markets()
        assert body["freshness"]["source"] == "stale" and body["freshness"]["stale_reason"] == error
        assert ids(body) == ids(before)  # the catalogue loaded before is still served
        assert any("catalogue load failed" in r.getMessage() for r in caplog.records)


# --- break 11: reloading does not grow memory --------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_forced_reloads_do_not_grow_memory(database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = Upstream(markets=1000, seed=7)
    upstream.freeze_prices()  # a moving simulated market memoises quotes: the stand-in's memory, not ours
    try:
        with serve(monkeypatch, (upstream.clob_url, upstream.gamma_url)) as http:
            def forced() -> None:
                response = http.get("/api/markets", params={"limit": "5", "refresh": "true"})
                assert response.status_code == 200 and response.json()["freshness"]["source"] == "live"

            for _ in range(5):  # warm up: pools, caches, the first snapshots
                forced()
            start = _rss_mb()
            for _ in range(30):
                forced()
            growth = _rss_mb() - start
            REPORT_LINES.append(f"forced reloads: RSS {start:.0f} -> {start + growth:.0f} MB over 30 refresh=true "
                                "reloads of 1,000 markets")
            # Before the fix each refresh froze its garbage for good: about 2.5 MB a reload.
            assert growth < 15, f"RSS grew {growth:.0f} MB over 30 reloads"
    finally:
        upstream.stop()
