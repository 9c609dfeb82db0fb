"""The compact catalogue snapshot a new instance loads in one read (shared.markets.compact):
the same answers as from the rows, and the rows whenever it is missing, stale or undecodable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from typing import Any

import pytest

from shared.db.database import get_database
from shared.markets import compact, store
from shared.markets.query import SORTS
from shared.markets.service import get_markets_service, reset_markets_service
from shared.markets.snapshot import Snapshot
from tests.conftest import ROOT, Upstream
from tests.test_markets import get

QUERIES: list[dict[str, str]] = [
    {"limit": "7"},
    {"limit": "500"},
    {"limit": "5", "sort": "end_date"},
    {"limit": "5", "sort": "price_change", "order": "asc"},
    {"limit": "5", "sort": "liquidity", "active_only": "false"},
    {"limit": "3", "q": "will"},
    {"limit": "50", "tag": "politics"},
]


def answers() -> list[tuple[int, str | None, str]]:
    """Every query's pages (following cursors) and one market: status, ETag, body without freshness.
    Then waits for the compact snapshot a load from the rows stores in the background."""
    out: list[tuple[int, str | None, str]] = []
    for query in QUERIES:
        params = dict(query)
        for _ in range(3):
            response = get("markets", params)
            body = json.loads(response.get_body())
            freshness = body.pop("freshness")
            assert freshness["source"] == "cache", freshness
            # As text: key order counts too (the body is the response's bytes less freshness).
            out.append((response.status_code, response.headers.get("ETag"), json.dumps(body)))
            if not body["next_cursor"]:
                break
            params = {**query, "cursor": body["next_cursor"]}
    first = json.loads(out[0][2])["markets"][0]["condition_id"]
    market = get("market", {}, route_params={"market": first})
    out.append((market.status_code, market.headers.get("ETag"), json.dumps(json.loads(market.get_body())["market"])))
    assert get_markets_service().wait_compact(60)
    return out


def new_instance() -> dict[str, int]:
    """A new instance answers every query; returns how its loads went with the compact snapshot."""
    reset_markets_service()
    return get_markets_service().compact_counts


def test_a_new_instance_gives_the_same_answers_from_the_compact_snapshot_as_from_rows(app_env: Upstream) -> None:
    assert get_markets_service().refresh(min_age_s=0).status == "refreshed"
    assert get_markets_service().wait_compact(60)
    assert get_markets_service().compact_counts["written"] == 1
    stored = get_database().query("SELECT fingerprint, length(payload) AS size FROM market_snapshot")
    assert len(stored) == 1 and stored[0]["size"] > 0

    counts = new_instance()
    from_compact = answers()
    assert counts["loaded"] == 1 and counts["written"] == 0, counts
    assert len(from_compact) > len(QUERIES) and all(status == 200 for status, _, _ in from_compact)

    get_database().execute("DELETE FROM market_snapshot")
    counts = new_instance()
    from_rows = answers()
    assert counts["missing"] == 1 and counts["loaded"] == 0 and counts["written"] == 1, counts
    assert from_rows == from_compact  # bodies and ETags, page by page

    # What the rows path stored is what the next instance loads.
    counts = new_instance()
    assert answers() == from_rows and counts["loaded"] == 1


def test_a_stale_snapshot_is_not_served(app_env: Upstream) -> None:
    """A row changed after the snapshot was stored (here behind the app's back, without even
    touching updated_at) makes every new instance load the rows."""
    get_markets_service().refresh(min_age_s=0)
    first = json.loads(answers()[0][2])["markets"][0]["condition_id"]
    get_database().execute("UPDATE markets SET question = 'Changed behind the snapshot?' WHERE condition_id = %s",
                           (first,))
    counts = new_instance()
    body = json.loads(get("markets", {"limit": "7"}).get_body())
    assert counts["stale"] == 1 and counts["loaded"] == 0, counts
    assert body["markets"][0]["question"] == "Changed behind the snapshot?"
    assert get_markets_service().wait_compact(60)
    assert counts["written"] == 1  # rebuilt for the next one, which loads it
    counts = new_instance()
    body = json.loads(get("markets", {"limit": "7"}).get_body())
    assert counts["loaded"] == 1 and body["markets"][0]["question"] == "Changed behind the snapshot?"


@pytest.mark.parametrize("payload", [
    b"not zlib",
    zlib.compress(b"{not json"),
    zlib.compress(b"[1, 2]"),
    zlib.compress(json.dumps({"format": 1, "app": "0.0.0-other"}).encode()),
    zlib.compress(b"{" * 100_000),
    zlib.compress(b"0" * 5_000_000)[:1000],  # truncated
], ids=["not-zlib", "not-json", "not-a-document", "other-code", "deeply-nested", "truncated"])
def test_an_undecodable_snapshot_is_counted_and_the_rows_answer(app_env: Upstream, payload: bytes) -> None:
    get_markets_service().refresh(min_age_s=0)
    expected = answers()
    get_database().execute("UPDATE market_snapshot SET payload = %s", (payload,))
    counts = new_instance()
    assert answers() == expected
    assert counts["undecodable"] == 1 and counts["loaded"] == 0 and counts["written"] == 1, counts
    counts = new_instance()
    assert answers() == expected and counts["loaded"] == 1


def _tampered(payload: bytes, change: Any) -> bytes:
    """The payload with ``change`` applied to its header, the condition ids shown as ``ids``."""
    header, columns, blocks = compact.unpack(payload)
    header["ids"] = compact._read_strings(columns["id_lengths"], columns["ids"])
    change(header)
    lengths, text = compact._strings(header.pop("ids"))
    return compact.pack(header, {**columns, "id_lengths": lengths, "ids": text}, blocks)


def test_decode_refuses_what_other_code_or_another_shape_wrote(app_env: Upstream) -> None:
    get_markets_service().refresh(min_age_s=0)
    snapshot = get_markets_service()._snapshot
    assert snapshot is not None
    payload = compact.encode(snapshot, SORTS)
    again = compact.decode(payload, {"refreshed_at": snapshot.as_of}, SORTS)
    assert [i.json for i in again.items] == [i.json for i in snapshot.items]
    assert (again.version, again.last_change, again.skipped_ids) == (
        snapshot.version, snapshot.last_change, snapshot.skipped_ids)
    assert [i.sort_values for i in again.items] == [i.sort_values for i in snapshot.items]
    assert [(i.text, i.facets, i.active) for i in again.items] == [(i.text, i.facets, i.active) for i in snapshot.items]
    assert compact.decode(_tampered(payload, lambda header: None), None, SORTS).version == snapshot.version

    def probe(header: dict[str, Any]) -> None:
        header["probe"][0]["volume"] = "1.5"  # as if market_json now rendered numbers as strings

    def shape(header: dict[str, Any]) -> None:
        header["ids"].pop()

    def order(header: dict[str, Any]) -> None:
        header["ids"][0], header["ids"][1] = header["ids"][1], header["ids"][0]

    def version(header: dict[str, Any]) -> None:
        header["app"] = "0.0.0-other"

    for change in (probe, shape, order, version):
        with pytest.raises(compact.CompactError):
            compact.decode(_tampered(payload, change), None, SORTS)


def test_the_size_caps_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = zlib.compress(b" " * (8 * 1024 * 1024), 9)
    monkeypatch.setattr(compact, "MAX_JSON_BYTES", 1024 * 1024)
    with pytest.raises(compact.CompactError, match="size cap"):
        compact.decode(bomb, None, SORTS)
    monkeypatch.setattr(compact, "MAX_COMPRESSED_BYTES", 10)
    with pytest.raises(compact.CompactError, match="cap"):
        compact.encode(Snapshot([], [], version="v", last_change=None, state=None), SORTS)


def test_importing_the_polymarket_client_module_does_not_import_py_clob_client() -> None:
    code = ("import sys\nimport shared.upstream.polymarket\nimport shared.markets.service\n"
            "print('py_clob_client_v2' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET_", "POSTGRES_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


def test_a_failed_background_write_is_counted_and_never_fails_an_answer(
        app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    get_markets_service().refresh(min_age_s=0)
    expected = answers()
    get_database().execute("DELETE FROM market_snapshot")

    def fail(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "write_payload", fail)
    counts = new_instance()
    assert answers() == expected
    assert counts["missing"] == 1 and counts["write_failed"] == 1 and counts["written"] == 0, counts
    assert get_markets_service().status()["compact_snapshot"] == counts  # deep health, datasets.markets


def test_one_background_writer_and_the_newest_snapshot_waiting_wins(
        app_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    service = get_markets_service()
    started, release = threading.Event(), threading.Event()
    written: list[str] = []
    writers: set[str] = set()

    def store(snapshot: Snapshot, fingerprint: str) -> None:
        writers.add(threading.current_thread().name + str(threading.get_ident()))
        started.set()
        release.wait(10)
        written.append(fingerprint)

    monkeypatch.setattr(service, "_store_compact", store)
    empty = Snapshot([], [], version="v", last_change=None, state=None)
    service._store_compact_later(empty, "first")
    assert started.wait(10)
    service._store_compact_later(empty, "second")  # waits for the writer...
    service._store_compact_later(empty, "third")  # ...and is replaced by a newer one
    release.set()
    assert service.wait_compact(10)
    assert written == ["first", "third"] and len(writers) == 1
