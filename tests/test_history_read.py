"""Reading the captured history through the HTTP API: candles (and their CSV), price-history CSV,
sparklines and movers on the market list. Captures are written with explicit times through
shared.history.store (the refresh stamps its own with the database's clock), the catalogue and
its current prices come from the stand-in."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import azure.functions as func
import pytest

from shared.container import get_container, reset_container
from shared.db.database import get_database
from shared.history import downsample as job
from shared.history.capture import capture_of
from shared.history.store import record_refresh, record_settled
from shared.markets import store as markets_store
from shared.markets import trends
from shared.markets.crawl import Crawl, catalogue_pages
from shared.markets.rows import MarketRecord, Outcome
from shared.markets.service import get_markets_service
from tests.conftest import Upstream, handler
from tests.test_markets import all_pages, wait_for

STEP = 300


def call(name: str, route: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         route_params: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"", params=params or {},
                           headers=headers or {}, route_params=route_params or {})
    return handler(name)(req)


def candles(token: str, **params: str) -> func.HttpResponse:
    return call("get_price_candles", f"price/{token}/candles", params, route_params={"token_id": token})


def body(response: func.HttpResponse) -> Any:
    assert response.status_code == 200, response.get_body()
    return json.loads(response.get_body())


def record(n: int, price: float, volume: int) -> MarketRecord:
    p = Decimal(str(price))
    return MarketRecord(
        condition_id=f"0x{n:064x}", gamma_id=str(900_000 + n), slug=f"read-{n}", question=f"Read {n}?",
        description=None, category=None, tags=(), event_id=None, event_slug=None, event_title=None, end_date=None,
        closed=False, accepting_orders=True, enable_order_book=True, neg_risk=False, volume=Decimal(volume),
        volume_24h=None, liquidity=None, best_bid=p - Decimal("0.01"), best_ask=p + Decimal("0.01"),
        last_trade_price=p, spread=Decimal("0.02"), one_day_price_change=None, tick_size=Decimal("0.01"),
        outcomes=(Outcome(0, "Yes", token(n), p), Outcome(1, "No", token(n, 1), 1 - p)),
    )


def token(n: int, outcome: int = 0) -> str:
    return str(7_000_000 + 2 * n + outcome)


def write(records: list[MarketRecord], at: datetime) -> None:
    get_database().run(lambda cur: record_refresh(cur, records, at))


def walk(seed: int, start: datetime, count: int) -> list[tuple[datetime, float, int]]:
    """(time, price, cumulative volume) every 5 minutes; each price differs from the one before."""
    rng, price, volume, out = random.Random(seed), 0.5, 1_000, []
    for i in range(count):
        price = min(0.95, max(0.05, round(price + rng.choice((-3, -2, -1, 1, 2, 3)) / 100, 2)))
        if out and price == out[-1][1]:
            price = round(price + (0.01 if price < 0.9 else -0.01), 2)
        volume += rng.randint(0, 400)
        out.append((start + timedelta(seconds=STEP * i), price, volume))
    return out


def expected_candles(path: list[tuple[datetime, float, int]], size: int) -> list[dict[str, Any]]:
    """An OHLC of the path, computed here, apart from the app's code."""
    groups: dict[int, list[tuple[float, int]]] = {}
    for at, price, volume in path:
        ts = int(at.timestamp())
        groups.setdefault(ts - ts % size, []).append((price, volume))
    out, previous = [], None
    for begin in sorted(groups):
        prices = [p for p, _ in groups[begin]]
        close_volume = groups[begin][-1][1]
        out.append({"t": datetime.fromtimestamp(begin, UTC).isoformat(), "period_s": size, "open": prices[0],
                    "high": max(prices), "low": min(prices), "close": prices[-1], "points": len(prices),
                    "volume": None if previous is None else float(close_volume - previous), "source": "captures"})
        previous = close_volume
    return out


def _store(records: list[MarketRecord]) -> None:
    get_database().run(lambda cur: markets_store.upsert_markets(cur, records))


# --- candles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution,size", [("15m", 900), ("1h", 3_600), ("4h", 14_400)])
def test_candles_equal_an_independent_ohlc_of_the_captured_points(app_env: Upstream, resolution: str,
                                                                 size: int) -> None:
    start = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 86_400 * 86_400 - 2 * 86_400, UTC)
    path = walk(3, start, 2 * 288)  # two days, every 5 minutes
    _store([record(1, path[0][1], path[0][2])])
    for at, price, volume in path:
        write([record(1, price, volume)], at)
    params = {"resolution": resolution, "start": start.isoformat(), "end": str(int(path[-1][0].timestamp()) + 1)}
    answer = body(candles(token(1), **params))
    expected = expected_candles(path, size)
    assert answer["candles"] == expected and len(expected) == 2 * 86_400 // size
    # Packed by the downsampling job, the same points give the same candles.
    job.compact(get_database, 90, now=path[-1][0] + timedelta(hours=2))
    get_container().reset("prices")
    assert body(candles(token(1), **params))["candles"] == expected
    # The other outcome is the complement.
    other = body(candles(token(1, 1), **params))["candles"]
    assert [(c["open"], c["high"], c["low"]) for c in other] == [
        (pytest.approx(1 - c["open"]), pytest.approx(1 - c["low"]), pytest.approx(1 - c["high"])) for c in expected]


def test_periods_without_points_are_absent_and_csv_parses_back_to_the_json(app_env: Upstream) -> None:
    start = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3_600 * 3_600 - 12 * 3_600, UTC)
    _store([record(2, 0.5, 10)])
    write([record(2, 0.4, 10)], start + timedelta(hours=2, minutes=5))
    write([record(2, 0.6, 30)], start + timedelta(hours=3, minutes=10))
    path = f"price/{token(2)}/candles"
    params = {"resolution": "1h", "start": str(int(start.timestamp())),
              "end": (start + timedelta(hours=12)).isoformat()}
    answer = body(candles(token(2), **params))
    got = answer["candles"]
    # Nothing before the first capture; after the last, the refresh's unchanged view (points 0)
    # runs to the newest capture only.
    assert [c["t"] for c in got] == [(start + timedelta(hours=h)).isoformat() for h in (2, 3)]
    assert got[1]["open"] == 0.4 and got[1]["high"] == 0.6 and got[1]["close"] == 0.6 and got[1]["volume"] == 20.0
    response = candles(token(2), **params, format="csv")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert "charset=utf-8" in response.headers["Content-Type"]
    assert f'filename="candles-{token(2)}-1h.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_body().decode())))
    assert [r["time"] for r in rows] == [c["t"] for c in got]
    for row, candle in zip(rows, got, strict=True):
        for column in ("open", "high", "low", "close"):
            assert float(row[column]) == candle[column]
        assert int(row["points"]) == candle["points"] and row["source"] == candle["source"]
        assert (row["volume"] == "") == (candle["volume"] is None)
    etag = response.headers["ETag"]
    assert etag != candles(token(2), **params).headers["ETag"]  # another representation, another tag
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    again = call("get_price_candles", path, {**params, "format": "csv"}, {"If-None-Match": etag},
                 {"token_id": token(2)})
    assert again.status_code == 304 and again.headers["ETag"] == etag


def test_a_resolved_market_keeps_its_history_and_ends_at_its_settled_price(app_env: Upstream) -> None:
    start = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3_600 * 3_600 - 6 * 3_600, UTC)
    _store([record(3, 0.7, 100)])
    for m in range(0, 60, 5):
        write([record(3, 0.70 + m / 1000, 100 + m)], start + timedelta(minutes=m))
    assert get_database().run(lambda cur: record_settled(cur, record(3, 0.7, 0).condition_id, [1, 0],
                                                          start + timedelta(minutes=62)))
    write([record(3, 0.2, 500)], start + timedelta(minutes=90))  # after settlement: ignored
    got = body(candles(token(3), resolution="15m", start=start.isoformat(),
                       end=(start + timedelta(hours=3)).isoformat()))["candles"]
    assert got[0]["open"] == 0.7 and got[0]["points"] == 3
    assert got[-1]["close"] == 1.0 and got[-1]["t"] == (start + timedelta(hours=1)).isoformat()
    assert len(got) == 5 and all(c["low"] >= 0.7 for c in got)
    loser = body(candles(token(3, 1), resolution="15m", start=start.isoformat(),
                         end=(start + timedelta(hours=3)).isoformat()))["candles"]
    assert loser[-1]["close"] == 0.0


@pytest.mark.parametrize("params,parameter", [
    ({"resolution": "2m"}, "resolution"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ({"resolution": "5m", "start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start"),
    ({"format": "xml"}, "format"),
])
def test_bad_candle_parameters_are_400_naming_them(app_env: Upstream, params: dict[str, str],
                                                    parameter: str) -> None:
    response = candles(token(4), **params)
    assert response.status_code == 400
    assert json.loads(response.get_body())["error"]["parameter"] == parameter


def test_an_unknown_token_has_no_candles(app_env: Upstream) -> None:
    assert candles(token(5)).status_code == 404
    assert app_env.count("/prices-history") == 0


# --- price history as CSV ---------------------------------------------------------------------


def test_price_history_csv_parses_back_to_the_json(app_env: Upstream) -> None:
    listed = all_pages({"limit": "500"})
    tok = next(m["outcomes"][0]["token_id"] for m in listed if m["outcomes"] and m["outcomes"][0]["token_id"])
    route, rp = f"price/{tok}", {"token_id": tok}
    as_json = body(call("get_price", route, {"interval": "1d"}, route_params=rp))
    response = call("get_price", route, {"interval": "1d", "format": "csv"}, route_params=rp)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.get_body().decode())))
    assert rows[0] == ["time", "unix", "price"]
    points = as_json["history"]["points"]
    assert points and [(int(r[1]), float(r[2])) for r in rows[1:]] == [(p["t"], p["p"]) for p in points]
    assert all(datetime.fromisoformat(r[0]).timestamp() == int(r[1]) for r in rows[1:])
    tag = response.headers["ETag"]
    assert call("get_price", route, {"interval": "1d", "format": "csv"}, {"If-None-Match": tag}, rp).status_code == 304
    bad = call("get_price", route, {"history": "false", "format": "csv"}, route_params=rp)
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["parameter"] == "format"


# --- sparklines and movers --------------------------------------------------------------------


def _records(upstream: Upstream) -> list[MarketRecord]:
    del upstream  # the stand-in the container's Gamma client points at
    return [r for page in catalogue_pages(get_container().gamma, Crawl()) for r in page]


def _price_of(record: MarketRecord) -> float:
    return capture_of(record).price / 10_000


def test_sparklines_and_movers_from_the_captures(app_env: Upstream) -> None:
    app_env.freeze_prices()
    then = [r for r in _records(app_env) if not r.closed and len(r.outcomes) == 2 and r.outcomes[0].token_id]
    now = datetime.now(UTC)
    write(then, now - timedelta(hours=3))
    # The simulator moves three mid-priced markets' prices; the others stay where they were.
    chosen = [r for r in then if 0.3 <= _price_of(r) <= 0.7][:3]
    for r, delta in zip(chosen, (0.25, -0.22, 0.2), strict=True):
        assert r.outcomes[0].token_id is not None
        app_env.standin.set_price(r.outcomes[0].token_id, round(_price_of(r) + delta, 2))
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    history_calls = app_env.count("/prices-history")

    listed = all_pages({"limit": "500", "sort": "change_1h"})
    old = {r.condition_id: _price_of(r) for r in then}
    changes = [m["change"] for m in listed]
    for m, change in zip(listed, changes, strict=True):
        if m["condition_id"] in old:
            assert change["source"] == "captures" and change["window"] == "1h"
            assert change["value"] == pytest.approx(m["outcomes"][0]["price"] - old[m["condition_id"]], abs=1e-4)
    known = [c["value"] for c in changes if c is not None]
    assert known == sorted(known, reverse=True) and len(known) == len(old)
    moved = [r.condition_id for r in chosen]
    assert [m["condition_id"] for m in listed[:2]] == [moved[0], moved[2]]
    assert listed[len(known) - 1]["condition_id"] == moved[1]
    biggest = all_pages({"limit": "7", "sort": "abs_change_1h"})
    assert [m["condition_id"] for m in biggest[:3]] == [moved[0], moved[1], moved[2]]
    assert [m["condition_id"] for m in biggest] == [m["condition_id"] for m in all_pages(
        {"limit": "500", "sort": "abs_change_1h"})]  # cursor paging keeps the order
    # A day back our captures do not reach: Gamma's one-day change, where it has one.
    day = all_pages({"limit": "500", "sort": "change_24h"})
    assert {m["change"]["source"] for m in day if m["change"]} == {"gamma"}
    assert all(m["change"]["value"] == m["one_day_price_change"] for m in day if m["change"])
    floor = sorted(m["volume_24h"] or 0 for m in listed)[len(listed) // 2]
    liquid = all_pages({"limit": "500", "sort": "change_1h", "min_volume_24h": str(int(floor))})
    assert liquid and all(m["volume_24h"] >= int(floor) for m in liquid)
    assert len(liquid) == sum(1 for m in listed if (m["volume_24h"] or 0) >= int(floor))

    # Nobody asked for these markets' prices: each has a sparkline all the same.
    page = body(call("list_markets", "markets", {"limit": "50", "sparkline": "24h"}))
    for m in page["markets"]:
        if m["condition_id"] not in old:
            continue
        points = m["sparkline"]["points"]
        assert m["sparkline"]["window"] == "24h" and 6 <= len(points) <= 48
        assert points[0]["p"] == pytest.approx(old[m["condition_id"]])
        assert points[-1]["p"] == pytest.approx(m["outcomes"][0]["price"], abs=1e-4)
        assert [p["t"] for p in points] == sorted({p["t"] for p in points})
    week = body(call("list_markets", "markets", {"limit": "50", "sparkline": "7d"}))
    assert all(len(m["sparkline"]["points"]) <= 42 for m in week["markets"])
    # The events list gives each of its markets the same sparkline as the markets list.
    by_id = {m["condition_id"]: m["sparkline"] for m in page["markets"]}
    events = body(call("list_events", "events", {"limit": "50", "sparkline": "24h"}))["events"]
    shown = [m for e in events for m in e["markets"] if m["condition_id"] in by_id]
    assert shown and all(m["sparkline"] == by_id[m["condition_id"]] for m in shown)
    assert all(m["sparkline"]["window"] == "24h" for e in events for m in e["markets"])
    assert all("sparkline" not in m for e in body(call("list_events", "events", {"limit": "5"}))["events"]
               for m in e["markets"])
    assert app_env.count("/prices-history") == history_calls  # no upstream call for any of it
    first = chosen[0].outcomes[0].token_id
    assert first is not None
    got = body(candles(first, resolution="1h", start=(now - timedelta(hours=4)).isoformat()))["candles"]
    # Polymarket's history before our first capture, ours from it on: one source per candle.
    captured = [c for c in got if c["source"] == "captures"]
    assert captured and captured[0]["open"] == pytest.approx(old[chosen[0].condition_id])
    assert all(c["t"] < captured[0]["t"] for c in got if c["source"] == "history")
    assert got[-1]["close"] == pytest.approx(listed[0]["outcomes"][0]["price"], abs=1e-4)


def test_an_unchanged_page_is_not_read_again(app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    first = call("list_markets", "markets", {"limit": "50", "sparkline": "24h"})
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read again")

    monkeypatch.setattr(trends, "sparklines", fail)
    again = call("list_markets", "markets", {"limit": "50", "sparkline": "24h"})
    assert again.get_body() == first.get_body()
    assert call("list_markets", "markets", {"limit": "50", "sparkline": "24h"},
                {"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_record_helper_captures_at_the_display_price() -> None:
    assert _price_of(replace(record(9, 0.42, 1), best_bid=Decimal("0.40"), best_ask=Decimal("0.44"))) == 0.42


def test_movers_are_computed_in_the_background_and_again_for_each_new_snapshot(
        app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_DEADLINE_S", "0.5")
    reset_container()
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    real, calls, gate = trends.captured_prices, [], threading.Event()

    def slow(*args: Any) -> Any:
        calls.append(args[2])
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(trends, "captured_prices", slow)
    busy = call("list_markets", "markets", {"sort": "change_1h"})
    # Not within the request's deadline: a 503 to retry, while the computation goes on.
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    gate.set()
    wait_for(lambda: call("list_markets", "markets", {"sort": "change_1h"}).status_code == 200)
    assert len(calls) == 2  # the prices now and an hour before: once for the snapshot
    # The next snapshot's changes are computed as it is loaded, before anyone asks.
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    wait_for(lambda: len(calls) == 4)
    before = len(calls)
    page = body(call("list_markets", "markets", {"sort": "change_1h", "limit": "5"}))
    assert len(calls) == before and all("change" in m for m in page["markets"])


def test_a_failing_database_leaves_sparklines_null_and_the_page_uncached(
        app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.core.errors import DatabaseUnavailable

    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    real, failing = trends.sparklines, [True]

    def flaky(*args: Any) -> Any:
        if failing[0]:
            raise DatabaseUnavailable("down for the test")
        return real(*args)

    monkeypatch.setattr(trends, "sparklines", flaky)
    down = body(call("list_markets", "markets", {"limit": "5", "sparkline": "24h"}))
    assert down["markets"] and all(m["sparkline"] is None for m in down["markets"])
    failing[0] = False
    up = body(call("list_markets", "markets", {"limit": "5", "sparkline": "24h"}))
    assert all(m["sparkline"]["points"] for m in up["markets"])  # the refresh captured every one
    # A cursor of a query with min_volume_24h is not one of the query without it.
    page = body(call("list_markets", "markets", {"limit": "2", "sort": "change_1h", "min_volume_24h": "0"}))
    other = call("list_markets", "markets", {"limit": "2", "sort": "change_1h", "cursor": page["next_cursor"]})
    assert other.status_code == 400 and json.loads(other.get_body())["error"]["parameter"] == "cursor"


def test_price_history_of_a_token_nobody_asked_about_comes_from_the_captures(app_env: Upstream) -> None:
    """/api/price history merges the catalogue's captures with upstream's history and the stored
    samples: a token Polymarket has no history for (these are not the stand-in's) has one."""
    start = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 3_600 * 3_600 - 5 * 3_600, UTC)
    _store([record(6, 0.5, 10)])
    prices = [0.31, 0.42, 0.53, 0.64]
    for hour, price in enumerate(prices):
        write([record(6, price, 10 + hour)], start + timedelta(hours=hour, minutes=7))
    response = call("get_price", f"price/{token(6)}", {"interval": "1d", "fidelity": "60"},
                    route_params={"token_id": token(6)})
    history = body(response)["history"]
    points = [(p["t"], p["p"]) for p in history["points"]]
    assert [p for _, p in points] == prices  # one per hour, each hour's close, in order
    assert all(start.timestamp() + h * 3_600 <= t < start.timestamp() + (h + 1) * 3_600
               for h, (t, _) in enumerate(points))  # each inside its own hour
    # The second outcome's history is the complement, as its prices are.
    other = call("get_price", f"price/{token(6, 1)}", {"interval": "1d", "fidelity": "60"},
                 route_params={"token_id": token(6, 1)})
    assert [p["p"] for p in body(other)["history"]["points"]] == [pytest.approx(1 - p) for p in prices]
