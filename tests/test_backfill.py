"""The batched backfill of upstream price history (issue 14, "Merge with what exists"): after a
catalogue refresh, the backfill timer asks ``POST /batch-prices-history`` for the first-outcome
tokens nobody requested, at most 20 per call, stores their points, and never asks again; the
sparklines reach back before the first capture. Hostile answers are skipped and counted."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.container import get_container
from shared.db.database import get_database
from shared.markets.service import get_markets_service
from shared.prices.backfill import BATCH, FIDELITY_MIN
from tests.conftest import Upstream, handler, reset_app
from tests.test_markets import all_pages

BATCH_PATH = "/batch-prices-history"


def run_backfill() -> None:
    handler("backfill_price_history")(None)


def health() -> dict[str, Any]:
    import azure.functions as func

    req = func.HttpRequest("GET", "http://localhost/api/health", body=b"", params={"deep": "true"})
    return json.loads(handler("health_check")(req).get_body())["datasets"]["backfill"]


def open_first_tokens() -> list[str]:
    return [row["token_id"] for row in get_database().query(
        """SELECT o.token_id FROM markets m JOIN outcome_tokens o USING (condition_id)
            WHERE m.in_active_set AND NOT m.closed AND o.outcome_index = 0 AND o.token_id IS NOT NULL
            ORDER BY m.volume DESC NULLS LAST, o.token_id""")]


def stored(token: str) -> list[tuple[int, float]]:
    rows = get_database().query(
        """SELECT floor(extract(epoch FROM ts))::bigint AS t, price FROM price_samples
            WHERE token_id = %s AND source = 'upstream_history' ORDER BY ts""", (token,))
    return [(int(r["t"]), float(r["price"])) for r in rows]


def upstream_history(clob_url: str, token: str, start: int, end: int) -> list[tuple[int, float]]:
    answer = httpx.get(f"{clob_url}/prices-history",
                       params={"market": token, "startTs": start, "endTs": end, "fidelity": FIDELITY_MIN}).json()
    return [(p["t"], p["p"]) for p in answer["history"]]


def test_a_refresh_is_followed_by_one_batch_call_per_20_tokens_and_never_asks_twice(app_env: Upstream) -> None:
    app_env.freeze_prices()
    captured_at = int(datetime.now(UTC).timestamp())
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    tokens = open_first_tokens()
    assert len(tokens) > 3 * BATCH  # several calls' worth
    history_before = app_env.count("/prices-history")

    run_backfill()

    assert app_env.count(BATCH_PATH) == math.ceil(len(tokens) / BATCH)
    assert app_env.count("/prices-history") == history_before  # batched, never one call per token
    status = health()
    assert status["tokens_asked"] == len(tokens) and status["calls"] == math.ceil(len(tokens) / BATCH)
    assert status["calls_failed"] == 0 and status["last_error"] is None and status["points_stored"] > 0
    # Every asked token is remembered, with how many points upstream had for it.
    asked = {r["token_id"]: r["points"] for r in get_database().query("SELECT token_id, points FROM price_backfill")}
    assert set(asked) == set(tokens)
    assert sum(asked.values()) == status["points_stored"]

    # The busiest market's token, never requested: its stored points are upstream's.
    token = tokens[0]
    points = stored(token)
    assert len(points) >= 24 and points[0][0] < captured_at - 86_400
    assert points == upstream_history(app_env.clob_url, token, points[0][0], points[-1][0])

    # Its sparkline reaches back before the first capture (the refresh's): upstream's close of
    # each 30-minute step there, the captured list price at the end.
    listed = {m["outcomes"][0]["token_id"]: m for m in all_pages({"limit": "500", "sparkline": "24h"})}
    line = listed[token]["sparkline"]["points"]
    assert len(line) >= 24 and line[0]["t"] < captured_at - 20 * 3600  # hourly before the captures
    closes: dict[int, float] = {}
    for t, p in points:
        closes[t - t % 1800] = p
    before = [pt for pt in line if pt["t"] < captured_at - captured_at % 1800]
    assert before and all(pt["p"] == pytest.approx(closes[pt["t"]]) for pt in before)
    assert line[-1]["p"] == pytest.approx(listed[token]["outcomes"][0]["price"], abs=1e-4)

    # A second refresh and run: nothing is asked again.
    calls = app_env.count(BATCH_PATH)
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    run_backfill()
    assert app_env.count(BATCH_PATH) == calls
    assert health()["tokens_asked"] == len(tokens)


def test_a_run_asks_for_the_busiest_markets_first_and_at_most_its_budget(app_env: Upstream) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    tokens = open_first_tokens()
    get_container().backfill.max_tokens = BATCH + 5
    run_backfill()
    assert app_env.count(BATCH_PATH) == 2
    asked = {r["token_id"] for r in get_database().query("SELECT token_id FROM price_backfill")}
    assert asked == set(tokens[:BATCH + 5])
    run_backfill()  # the next run takes the next busiest
    assert app_env.count(BATCH_PATH) == 4
    asked = {r["token_id"] for r in get_database().query("SELECT token_id FROM price_backfill")}
    assert asked == set(tokens[:2 * (BATCH + 5)])


def test_a_failing_call_is_counted_and_its_tokens_asked_at_the_next_run(app_env: Upstream) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    tokens = open_first_tokens()
    app_env.fail("status", host="clob", path=BATCH_PATH, status=500)
    run_backfill()  # never raises
    status = health()
    assert status["calls_failed"] == 1 and status["tokens_asked"] == 0 and status["points_stored"] == 0
    assert "5xx" in status["last_error"]
    assert app_env.count(BATCH_PATH) >= 1  # the first call (with its retries); the rest wait
    assert get_database().query("SELECT count(*) AS n FROM price_backfill")[0]["n"] == 0
    # The catalogue is untouched by it.
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"

    app_env.clear()
    before = app_env.count(BATCH_PATH)
    run_backfill()
    assert app_env.count(BATCH_PATH) - before == math.ceil(len(tokens) / BATCH)
    status = health()
    assert status["tokens_asked"] == len(tokens) and status["last_error"] is None


@pytest.fixture
def hostile_db(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("MARKETS_REFRESH_MIN_INTERVAL_S", "0")
    reset_app()
    yield hostile_env
    reset_app()


def test_a_hostile_batch_answer_skips_and_counts_the_bad_token_and_point(hostile_db: Any) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    tokens = open_first_tokens()
    # In the first answer: one token's history is not a list, another's newest point is NaN.
    hostile_db.on("batch_history", times=1, token=0, value="not a list")
    hostile_db.on("batch_history", times=1, token=1, field="p", value="NaN", raw=True)
    run_backfill()
    status = health()
    assert status["calls_failed"] == 0 and status["tokens_asked"] == len(tokens)
    assert status["tokens_skipped"] == 1 and status["points_skipped"] == 1 and status["points_stored"] > 0
    assert get_container().backfill.rejections.stats()["history_bodies"] == 1
    rows = get_database().query(
        "SELECT count(*) AS n FROM price_samples WHERE source = 'upstream_history' AND NOT price BETWEEN 0 AND 1")
    assert rows[0]["n"] == 0
    # The bad token was asked, so it is not asked again; every other token has its points.
    asked = {r["token_id"]: r["points"] for r in get_database().query("SELECT token_id, points FROM price_backfill")}
    assert set(asked) == set(tokens) and sum(1 for n in asked.values() if n == 0) >= 1
    calls = hostile_db.standin.count(host="clob", path=BATCH_PATH)
    run_backfill()
    assert hostile_db.standin.count(host="clob", path=BATCH_PATH) == calls


def test_a_body_that_is_not_a_map_fails_only_that_call(hostile_db: Any) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    tokens = open_first_tokens()
    hostile_db.on("json", host="clob", path=BATCH_PATH, times=1, value={"history": [1, 2]})
    run_backfill()
    status = health()
    assert status["calls_failed"] == 1 and status["tokens_asked"] == 0 and status["last_error"] == "bad_body"
    run_backfill()
    assert health()["tokens_asked"] == len(tokens)
