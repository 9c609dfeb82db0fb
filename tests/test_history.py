"""Price history captured by the catalogue refresh (shared.history): capture, storage of only
what changed, downsampling, settlement, bad captures; the real refresh against the stand-in,
and simulated refreshes over simulated days with a clock the test controls."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.db.database import Cursor, get_database
from shared.history import downsample as job
from shared.history.points import Native, decode, downsample, encode
from shared.history.series import latest_before, series
from shared.history.store import record_refresh, record_settled
from shared.markets.rows import MarketRecord, Outcome
from shared.markets.service import get_markets_service
from tests.conftest import Upstream, handler
from tests.test_health import call as call_health
from tests.test_markets import all_pages

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, midnight UTC


def _record(n: int, bid: str | None = "0.40", ask: str | None = "0.42", last: str | None = "0.41",
            volume: str | None = "1000", **changes: Any) -> MarketRecord:
    record = MarketRecord(
        condition_id=f"0x{n:064x}", gamma_id=str(n), slug=f"m-{n}", question=f"Market {n}?", description=None,
        category=None, tags=(), event_id=None, event_slug=None, event_title=None, end_date=None, closed=False,
        accepting_orders=True, enable_order_book=True, neg_risk=False,
        volume=None if volume is None else Decimal(volume), volume_24h=None, liquidity=None,
        best_bid=None if bid is None else Decimal(bid), best_ask=None if ask is None else Decimal(ask),
        last_trade_price=None if last is None else Decimal(last), spread=None, one_day_price_change=None,
        tick_size=Decimal("0.01"),
        outcomes=(Outcome(0, "Yes", token(n), Decimal("0.5")), Outcome(1, "No", token(n, 1), Decimal("0.5"))),
    )
    return replace(record, **changes)


def token(n: int, outcome: int = 0) -> str:
    return str(2 * n + 10 + outcome)


def run(work: Any) -> Any:
    return get_database().run(work)


def capture(records: list[MarketRecord], at: datetime) -> Any:
    return run(lambda cur: record_refresh(cur, records, at))


def read(tokens: list[str], start: datetime, end: datetime, resolution: str = "5m") -> dict[str, Any]:
    return run(lambda cur: series(cur, tokens, start, end, resolution))


def raw_rows() -> int:
    return int(get_database().query("SELECT count(*) AS n FROM history_raw")[0]["n"])


def minutes(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


# --- the real refresh ------------------------------------------------------------------------


def test_every_open_market_is_captured_by_the_refresh_at_the_price_the_list_shows(app_env: Upstream) -> None:
    app_env.freeze_prices()
    result = get_markets_service().refresh(min_age_s=0)
    assert result.status == "refreshed" and result.captures > 0
    listed = [m for m in all_pages({"limit": "500"}) if len(m["outcomes"]) == 2 and m["outcomes"][0]["token_id"]]
    assert result.captures == len(listed) == result.captures_written
    refreshed_at = get_database().query("SELECT refreshed_at FROM dataset_state WHERE name = 'markets'")[0]
    at = refreshed_at["refreshed_at"]
    # Nobody asked for these markets' prices: their history is there all the same.
    tokens = [o["token_id"] for m in listed for o in m["outcomes"]]
    history = read(tokens, at - timedelta(minutes=5), at + timedelta(minutes=5))
    for market in listed:
        for outcome in market["outcomes"]:
            points = history[outcome["token_id"]]
            assert len(points) == 1 and points[0].captures == 1
            assert points[0].price == pytest.approx(outcome["price"], abs=1e-4), market["condition_id"]
    health = json.loads(call_health({"deep": "true"}).get_body())
    status = health["datasets"]["markets"]
    assert (status["captures"], status["skipped_captures"]) == (result.captures, 0)
    # Frozen prices: the next refresh captures every market again and writes no row.
    second = get_markets_service().refresh(min_age_s=0)
    assert (second.captures, second.captures_written) == (result.captures, 0)
    assert raw_rows() == result.captures


# --- simulated refreshes over simulated days -------------------------------------------------


def test_unchanged_values_store_no_row_but_reads_give_one_point_per_period(database_env: dict[str, str]) -> None:
    quiet, busy = _record(1), _record(2)
    counts = [capture([quiet, busy], minutes(0))]
    for m in (5, 10, 15):
        counts.append(capture([quiet, replace(busy, best_bid=Decimal("0.40") + Decimal(m) / 1000)], minutes(m)))
    assert [c.written for c in counts] == [2, 1, 1, 1]
    assert raw_rows() == 5
    history = read([token(1), token(2)], minutes(0), minutes(20))
    quiet_points = history[token(1)]
    assert [p.ts for p in quiet_points] == [minutes(m) for m in (0, 5, 10, 15)]  # the newest capture ends it
    assert [p.price for p in quiet_points] == [0.41] * 4
    assert [p.captures for p in quiet_points] == [1, 0, 0, 0]
    assert [p.bid for p in history[token(2)]] == [0.40, 0.405, 0.41, 0.415]
    # The second outcome is the complement: its bid is 1 - the first's ask.
    no = read([token(1, 1)], minutes(0), minutes(20))[token(1, 1)]
    assert [(p.price, p.bid, p.ask) for p in no][0] == (0.59, 0.58, 0.6)
    # Hourly, the same captures are one point.
    hourly = read([token(2)], minutes(0), minutes(60), "1h")[token(2)]
    assert len(hourly) == 1 and hourly[0].captures == 4 and hourly[0].bid == 0.415


def test_a_range_opening_after_the_last_change_carries_it_forward(database_env: dict[str, str]) -> None:
    capture([_record(1, bid="0.30", ask="0.32")], minutes(0))
    for m in range(5, 180, 5):
        capture([_record(1, bid="0.30", ask="0.32"), _record(2)], minutes(m))
    points = read([token(1)], minutes(120), minutes(140))[token(1)]
    assert [(p.ts, p.price, p.captures) for p in points] == [(minutes(m), 0.31, 0) for m in range(120, 140, 5)]
    before = run(lambda cur: latest_before(cur, [token(1), token(1, 1), token(2), "999"], minutes(100)))
    assert before[token(1)].price == 0.31 and before[token(1)].ts == minutes(0)
    assert before[token(1, 1)].price == 0.69
    assert before[token(2)].ts == minutes(5) and "999" not in before
    # Before the first capture there is nothing, not an invented point.
    assert read([token(2)], minutes(-60), minutes(5))[token(2)] == []


def _path(seed: int, days: int, start: datetime) -> list[tuple[datetime, int]]:
    """A random walk captured every 5 minutes, changing about one refresh in five."""
    rng, price, out = random.Random(seed), 5_000, []
    for i in range(days * 288):
        if rng.random() < 0.2:
            price = min(9_900, max(100, price + rng.choice((-1, 1)) * rng.randint(1, 40) * 5))
        out.append((start + timedelta(minutes=5 * i), price))
    return out


def _feed(path: list[tuple[datetime, int]], n: int = 1) -> None:
    for at, price in path:
        p = Decimal(price) / 10_000
        capture([_record(n, bid=str(p - Decimal("0.005")), ask=str(p + Decimal("0.005")), last=str(p))], at)


def _ohlc(path: list[tuple[datetime, int]], size: timedelta) -> dict[datetime, tuple[float, float, float, float]]:
    """An independent OHLC of the captured prices per period (in ticks, as floats)."""
    out: dict[datetime, list[int]] = {}
    for at, price in path:
        key = T0 + ((at - T0) // size) * size
        out.setdefault(key, []).append(price)
    return {k: (v[0] / 1e4, max(v) / 1e4, min(v) / 1e4, v[-1] / 1e4) for k, v in out.items()}


def test_downsampling_keeps_the_first_last_high_and_low(database_env: dict[str, str]) -> None:
    path = _path(7, 2, T0)
    _feed(path)
    assert raw_rows() < len(path)  # only the changes were stored
    # Ten days on, the job packs the captures, then rolls those days up to hourly points.
    now = T0 + timedelta(days=10)
    result = job.compact(get_database, 90, now=now)
    assert result.status == "complete" and result.packed_rows > 0 and result.rolled_hourly == 2
    assert raw_rows() == 0
    periods = {r["period_s"] for r in get_database().query("SELECT period_s FROM history_chunks")}
    assert periods == {3_600}
    points = read([token(1)], T0, T0 + timedelta(days=2), "5m")[token(1)]
    expected = _ohlc(path, timedelta(hours=1))
    assert len(points) == 48 and all(p.period_s == 3_600 for p in points)  # never finer than stored
    assert {p.ts: (p.open, p.high, p.low, p.price) for p in points} == expected
    # Past the retention, daily points, with the same extremes.
    later = T0 + timedelta(days=300)
    assert job.compact(get_database, 90, now=later).rolled_daily == 1
    daily = read([token(1)], T0, T0 + timedelta(days=2), "1h")[token(1)]
    assert {p.ts: (p.open, p.high, p.low, p.price) for p in daily} == _ohlc(path, timedelta(days=1))
    # Idempotent: another run changes nothing.
    again = job.compact(get_database, 90, now=later)
    assert (again.packed_rows, again.rolled_hourly, again.rolled_daily) == (0, 0, 0)
    assert read([token(1)], T0, T0 + timedelta(days=2), "1h")[token(1)] == daily


def test_packed_recent_points_read_as_they_were_captured(database_env: dict[str, str]) -> None:
    path = _path(3, 1, T0)
    _feed(path)
    before = read([token(1)], T0, T0 + timedelta(days=1))[token(1)]
    result = job.compact(get_database, 90, now=T0 + timedelta(days=1, hours=1))
    assert result.packed_rows > 0 and raw_rows() == 0 and result.rolled_hourly == 0
    after = read([token(1)], T0, T0 + timedelta(days=1))[token(1)]
    assert after == before and len(after) == 288
    assert [p.price for p in after] == [price / 1e4 for _, price in path]


def test_a_second_instance_finds_the_job_taken(database_env: dict[str, str]) -> None:
    _feed(_path(5, 1, T0)[:20])
    stored = raw_rows()
    assert stored > 0
    holding, release = threading.Event(), threading.Event()

    def hold(cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (job.COMPACT_LOCK_KEY,))
        holding.set()
        release.wait(10)

    other = threading.Thread(target=lambda: get_database().run(hold))
    other.start()
    try:
        assert holding.wait(10)
        assert job.compact(get_database, 90, now=T0 + timedelta(days=2)).status == "busy"
        assert raw_rows() == stored
    finally:
        release.set()
        other.join()
    assert job.compact(get_database, 90, now=T0 + timedelta(days=2)).status == "complete"
    assert raw_rows() == 0


def test_the_job_stops_within_its_budget_and_the_next_run_carries_on(database_env: dict[str, str]) -> None:
    for m in range(0, 30, 5):
        capture([_record(n, bid=str(Decimal("0.30") + Decimal(m) / 1000)) for n in range(1, 7)], minutes(m))
    partial = job.compact(get_database, 90, now=T0 + timedelta(days=1), batch=2, budget_s=0)
    assert partial.status == "partial" and partial.batches == 1 and raw_rows() == 24
    rest = job.compact(get_database, 90, now=T0 + timedelta(days=1), batch=2)
    assert rest.status == "complete" and rest.packed_rows == 24 and raw_rows() == 0


def test_a_resolved_market_ends_at_its_settled_price(database_env: dict[str, str]) -> None:
    for m in range(0, 30, 5):
        capture([_record(1, bid=str(Decimal("0.60") + Decimal(m) / 1000), ask="0.70")], minutes(m))
    assert run(lambda cur: record_settled(cur, _record(1).condition_id, [Decimal(1), Decimal(0)], minutes(32)))
    assert not run(lambda cur: record_settled(cur, _record(1).condition_id, [1, 0], minutes(33)))
    capture([_record(1, bid="0.10", ask="0.12"), _record(2)], minutes(40))  # after settlement: ignored
    capture([_record(2, bid="0.5", ask="0.52")], minutes(60))
    for tokens in ([token(1), token(1, 1)],):
        history = read(tokens, minutes(0), minutes(120))
        yes, no = history[token(1)], history[token(1, 1)]
        assert yes[-1].price == 1.0 and no[-1].price == 0.0 and yes[-1].ts == minutes(30)
        assert yes[-1].captures == 1 and len(yes) == 7  # nothing carried past the settled point
    job.compact(get_database, 90, now=T0 + timedelta(days=30))
    after = read([token(1)], minutes(0), minutes(120), "1h")[token(1)]
    assert len(after) == 1 and after[0].price == 1.0 and after[0].high == 1.0 and after[0].open == 0.65


def test_a_bad_capture_is_skipped_and_counted_never_stored(database_env: dict[str, str]) -> None:
    bad = [
        _record(1, bid="NaN"),
        _record(2, ask="1.5"),
        _record(3, volume="-3"),
        _record(4, last="Infinity", bid=None, ask=None),
        _record(5, bid=None, ask=None, last=None,
                outcomes=(Outcome(0, "Yes", "20", None), Outcome(1, "No", "21", None))),
        _record(6, outcomes=(Outcome(0, "A", "22", None),) * 3),
    ]
    counts = capture([*bad, _record(7)], minutes(0))
    assert counts.captured == counts.written == 1
    assert counts.skipped == {"bid": 1, "ask": 1, "volume": 1, "last": 1, "no_price": 1, "outcomes": 1}
    stored = get_database().query("SELECT condition_id FROM history_series")
    assert [r["condition_id"] for r in stored] == [_record(7).condition_id]
    with pytest.raises(ValueError):
        run(lambda cur: record_settled(cur, _record(7).condition_id, [Decimal("NaN"), 0], minutes(5)))


def test_an_unreadable_chunk_is_a_gap_not_a_failed_read(database_env: dict[str, str]) -> None:
    _feed(_path(9, 1, T0)[:50])
    job.compact(get_database, 90, now=T0 + timedelta(days=1))
    get_database().run(lambda cur: cur.execute("UPDATE history_chunks SET points = '\\x01deadbeef'"))
    assert read([token(1)], T0, T0 + timedelta(hours=5))[token(1)] == []


def test_chunks_round_trip_and_downsample() -> None:
    rng = random.Random(1)
    points = [Native(T0.timestamp().__int__() + 300 * i, p, p, p, p, p - 50, p + 50, -1, 10_000 + i, 1)
              for i, p in enumerate(rng.randint(0, 10_000) for _ in range(288))]
    day = int(T0.timestamp()) // 86_400
    assert decode(encode(points, day), day) == points
    hourly = downsample(points, 3_600)
    assert len(hourly) == 24 and hourly[0].high == max(p.close for p in points[:12])
    assert hourly[0].open == points[0].open and hourly[0].close == points[11].close and hourly[0].n == 12
    with pytest.raises(ValueError):
        decode(b"\x01\x00\x00\x00\x05garbage", day)


def test_the_timer_runs_the_job(database_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    # Captures of an hour ago are packed by the hourly timer (the real clock: ``now`` is now).
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    capture([_record(1)], an_hour_ago)
    assert raw_rows() == 1
    caplog.set_level("INFO", logger="polymarket_api")
    handler("compact_price_history")(None)
    assert raw_rows() == 0
    assert read([token(1)], an_hour_ago, an_hour_ago + timedelta(minutes=5))[token(1)][0].price == 0.41
    assert any("price history compaction" in r.getMessage() and "'packed_rows': 1" in r.getMessage()
               for r in caplog.records)


def test_a_market_that_left_the_open_set_is_not_carried_past_it(database_env: dict[str, str]) -> None:
    from shared.markets import store as markets

    run(lambda cur: markets.upsert_markets(cur, [_record(1), _record(2)]))
    for m in range(0, 60, 5):
        capture([_record(1), _record(2, bid=str(Decimal("0.30") + Decimal(m) / 1000))], minutes(m))
    run(lambda cur: cur.execute("UPDATE markets SET in_active_set = false, updated_at = %s WHERE condition_id = %s",
                                (minutes(20), _record(1).condition_id)))
    history = read([token(1), token(2)], minutes(0), minutes(60))
    assert [p.ts for p in history[token(1)]] == [minutes(m) for m in range(0, 25, 5)]
    assert len(history[token(2)]) == 12  # the other goes on to the newest capture


def test_a_capture_the_database_refuses_is_skipped_not_the_page(database_env: dict[str, str]) -> None:
    # Records come validated; one that is not (a token id the schema refuses) costs only itself.
    hostile = _record(1, outcomes=(Outcome(0, "Yes", "not-a-token", None), Outcome(1, "No", "11", None)))

    def page(cur: Cursor) -> Any:
        counts = record_refresh(cur, [hostile, _record(2), _record(3)], minutes(0))
        return counts, record_refresh(cur, [_record(4)], minutes(0))

    counts, after = run(page)
    assert (counts.captured, counts.written, counts.skipped) == (2, 2, {"refused": 1})
    assert after.written == 1  # the transaction goes on
    assert sorted(read([token(2), token(3), token(4), "not-a-token"], minutes(0), minutes(5))) == sorted(
        [token(2), token(3), token(4)])


def test_reads_across_the_tiers_are_contiguous_with_no_period_twice(database_env: dict[str, str]) -> None:
    path = _path(11, 10, T0)

    def feed(cur: Cursor) -> None:  # ten days of refreshes, one transaction
        for at, price in path:
            p = Decimal(price) / 10_000
            record_refresh(cur, [_record(1, bid=str(p - Decimal("0.005")), ask=str(p + Decimal("0.005")))], at)

    run(feed)
    job.compact(get_database, 90, now=T0 + timedelta(days=10))  # days 0-2 hourly, the rest 5-minute
    start, end = T0 + timedelta(days=1, hours=5, minutes=2), T0 + timedelta(days=5)
    points = read([token(1)], start, end)[token(1)]
    assert {p.period_s for p in points} == {300, 3_600}
    assert points[0].ts <= start < points[0].ts + timedelta(seconds=points[0].period_s)
    for a, b in zip(points, points[1:], strict=False):
        assert a.ts + timedelta(seconds=a.period_s) == b.ts  # every period once, none missing
    assert points[-1].ts + timedelta(seconds=points[-1].period_s) == end
    captured = {at: price / 1e4 for at, price in path}
    for p in points:
        if p.period_s == 300:
            assert p.price == captured[p.ts]
        else:
            assert p.price == captured[p.ts + timedelta(minutes=55)]  # an hour closes at its last capture
    for resolution, size in (("1h", 3_600), ("1d", 86_400)):
        coarse = read([token(1)], start, end, resolution)[token(1)]
        assert {p.period_s for p in coarse} == {size}
        for a, b in zip(coarse, coarse[1:], strict=False):
            assert a.ts + timedelta(seconds=size) == b.ts
        expected = _ohlc(path, timedelta(seconds=size))
        assert [(p.open, p.high, p.low, p.price) for p in coarse] == [expected[p.ts] for p in coarse]
