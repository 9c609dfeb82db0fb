"""The hostile Polymarket itself: each generic switch bends what the stand-in would answer."""

from __future__ import annotations

import gzip
import time
from typing import Any

import httpx
import pytest


def test_without_switches_it_answers_as_the_stand_in(hostile_env: Any) -> None:
    page = httpx.get(f"{hostile_env.gamma_url}/markets/keyset", params={"limit": "5", "closed": "false"}).json()
    assert len(page["markets"]) == 5 and page["next_cursor"]
    assert httpx.get(f"{hostile_env.clob_url}/ok").status_code == 200


def test_row_field_json_header_and_times(hostile_env: Any) -> None:
    hostile_env.on("row_field", host="gamma", path="/markets", field="question", value="a\u0000b", rows=[1])
    hostile_env.on("header", host="clob", name="Retry-After", value="1e999", status=429, times=1)
    rows = httpx.get(f"{hostile_env.gamma_url}/markets/keyset", params={"limit": "3"}).json()["markets"]
    assert rows[1]["question"] == "a\u0000b" and rows[0]["question"] != "a\u0000b"
    first = httpx.get(f"{hostile_env.clob_url}/ok")
    assert first.status_code == 429 and first.headers["Retry-After"] == "1e999"
    assert httpx.get(f"{hostile_env.clob_url}/ok").status_code == 200  # times=1


def test_deep_nesting_and_gzip_bomb(hostile_env: Any) -> None:
    hostile_env.on("deep_nesting", host="gamma", depth=1000)
    assert httpx.get(f"{hostile_env.gamma_url}/markets").content == b"[" * 1000 + b"]" * 1000
    hostile_env.clear()
    hostile_env.on("gzip", host="clob", path="/book", bomb_mb=5)
    with httpx.stream("GET", f"{hostile_env.clob_url}/book", params={"token_id": "1"}) as raw:
        compressed = b"".join(raw.iter_raw())
        assert raw.headers["Content-Encoding"] == "gzip" and len(compressed) < 100_000
    assert len(gzip.decompress(compressed)) > 5 * 2**20


@pytest.mark.parametrize("body_only", [True, False])
def test_trickle_sends_the_same_answer_slowly(hostile_env: Any, body_only: bool) -> None:
    fast = httpx.get(f"{hostile_env.clob_url}/time")
    hostile_env.on("trickle", host="clob", bytes_per_s=100, body_only=body_only)
    started = time.monotonic()
    slow = httpx.get(f"{hostile_env.clob_url}/time", timeout=httpx.Timeout(10, read=1))  # no read waits 1 s
    took = time.monotonic() - started
    assert slow.status_code == 200 and len(slow.content) == len(fast.content)
    assert took >= len(fast.content) / 100 * 0.9  # one byte each 10 ms


def test_row_field_and_keyset_loop_reach_event_pages(hostile_env: Any) -> None:
    events = f"{hostile_env.gamma_url}/events/keyset"
    hostile_env.on("row_field", host="gamma", path="/events", field="title", value="a\u0000b", rows=[1], times=1)
    rows = httpx.get(events, params={"limit": "3"}).json()["events"]
    assert rows[1]["title"] == "a\u0000b" and rows[0]["title"] != "a\u0000b"
    hostile_env.on("row_field", host="gamma", path="/events", field="conditionId", value=None, rows=[0],
                   markets=[0], times=1)
    group = next(e for e in hostile_env.standin.catalogue.events if len(e.markets) > 1 and not e.closed)
    row = httpx.get(f"{hostile_env.gamma_url}/events", params={"id": group.id}).json()[0]
    assert row["markets"][0]["conditionId"] is None and "conditionId" not in row  # inside the event only
    assert all(m["conditionId"] for m in row["markets"][1:])
    hostile_env.on("keyset_loop", host="gamma")
    first = httpx.get(events, params={"limit": "2"}).json()
    again = httpx.get(events, params={"limit": "2", "after_cursor": first["next_cursor"]}).json()
    # The same events again (their rows' prices and updatedAt move with the simulated clock).
    assert [e["id"] for e in again["events"]] == [e["id"] for e in first["events"]]
    assert again["next_cursor"] != first["next_cursor"]
