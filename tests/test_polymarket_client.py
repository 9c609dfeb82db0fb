"""The Polymarket clients against the stand-in: real py-clob-client-v2 and httpx over loopback."""

from __future__ import annotations

import gzip
import json
import math
import time
from typing import Any

import pytest

from shared.container import get_container
from shared.core.errors import (
    UpstreamBadResponse,
    UpstreamCircuitOpen,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.upstream.polymarket import RetryPolicy, get_clob, get_gamma, parse_retry_after
from tests.conftest import Upstream, reset_app


class Sleeps:
    """Records the waits the retry policy asks for instead of sleeping them."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps(upstream_env: Upstream) -> Sleeps:
    recorder = Sleeps()
    get_clob().retry.sleep = recorder
    get_gamma().retry.sleep = recorder
    return recorder


def test_reads_through_the_real_client(upstream_env: Upstream, sleeps: Sleeps) -> None:
    token = upstream_env.open_markets()[0]["token_ids"][0]
    clob = get_clob()
    mid = clob.call(clob.client.get_midpoint, token)
    assert isinstance(mid["mid"], str) and 0 < float(mid["mid"]) < 1
    book = clob.call(clob.client.get_order_book, token)
    assert book["asset_id"] == token
    assert sleeps.calls == []


def test_500_is_retried_three_times_with_backoff(upstream_env: Upstream, sleeps: Sleeps) -> None:
    token = upstream_env.open_markets()[0]["token_ids"][0]
    upstream_env.fail("status", host="clob", path="/midpoint", status=500)
    clob = get_clob()
    with pytest.raises(UpstreamServerError) as caught:
        clob.call(clob.client.get_midpoint, token)
    assert upstream_env.count("/midpoint", host="clob") == 3
    assert len(sleeps.calls) == 2
    assert 1.0 <= sleeps.calls[0] <= 1.25 and 2.0 <= sleeps.calls[1] <= 2.5  # 1 s, 2 s plus jitter
    assert caught.value.kind == "5xx" and caught.value.status == 502
    assert "Polymarket clob" in caught.value.message


def test_transient_failure_then_success(upstream_env: Upstream, sleeps: Sleeps) -> None:
    token = upstream_env.open_markets()[0]["token_ids"][0]
    upstream_env.fail("status", host="clob", path="/midpoint", status=502, times=1)
    clob = get_clob()
    assert "mid" in clob.call(clob.client.get_midpoint, token)
    assert upstream_env.count("/midpoint", host="clob") == 2 and len(sleeps.calls) == 1


def test_404_is_not_retried(upstream_env: Upstream, sleeps: Sleeps) -> None:
    clob = get_clob()
    with pytest.raises(UpstreamNotFound):
        clob.call(clob.client.get_order_book, "12345678901234567890")
    assert upstream_env.count("/book", host="clob") == 1 and sleeps.calls == []


def test_a_404_counts_as_an_answer_only_for_a_call_about_an_id(upstream_env: Upstream, sleeps: Sleeps) -> None:
    clob = get_clob()
    with pytest.raises(UpstreamNotFound) as caught:
        clob.call(clob.client.get_order_book, "12345678901234567890", about_id=True)
    assert caught.value.kind == "4xx" and caught.value.status_code == 404
    stats = get_clob().stats.snapshot()
    assert (stats["requests"], stats["failures"]) == (1, 0) and stats["last_success_at"] is not None
    upstream_env.fail("status", host="gamma", path="/markets/keyset", status=404,
                      body={"type": "not found error", "error": "id not found"})
    with pytest.raises(UpstreamNotFound):
        get_gamma().get("/markets/keyset", {"limit": 1})  # a listing: about no id
    stats = get_gamma().stats.snapshot()
    assert (stats["requests"], stats["failures"], stats["last_error_kind"]) == (1, 1, "4xx")
    assert stats["last_success_at"] is None
    assert sleeps.calls == []


def test_the_routers_404_page_is_a_rejected_request_not_an_unknown_id(
    upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYMARKET_HOST", f"{upstream_env.clob_url}/v1")  # no such path prefix
    reset_app()
    clob = get_clob()
    token = upstream_env.open_markets()[0]["token_ids"][0]
    with pytest.raises(UpstreamRejected) as caught:
        clob.call(clob.client.get_order_book, token, about_id=True)
    assert caught.value.kind == "4xx" and caught.value.status_code == 404
    with pytest.raises(UpstreamRejected):
        clob.ping()
    stats = get_clob().stats.snapshot()
    assert (stats["requests"], stats["failures"], stats["last_success_at"]) == (2, 2, None)
    assert upstream_env.count("/v1/book", host="clob") == 1  # a 4xx: not retried


def test_retry_after_is_honoured(upstream_env: Upstream, sleeps: Sleeps) -> None:
    token = upstream_env.open_markets()[0]["token_ids"][0]
    upstream_env.fail("rate_limit", host="clob", path="/midpoint", retry_after=3, times=2)
    clob = get_clob()
    assert "mid" in clob.call(clob.client.get_midpoint, token)
    assert upstream_env.count("/midpoint", host="clob") == 3
    assert len(sleeps.calls) == 2 and all(wait >= 3 for wait in sleeps.calls)


def test_retry_after_longer_than_allowed_fails_at_once(upstream_env: Upstream, sleeps: Sleeps) -> None:
    upstream_env.fail("rate_limit", host="gamma", retry_after=120)
    with pytest.raises(UpstreamRateLimited) as caught:
        get_gamma().get("/markets", {"limit": 1})
    assert upstream_env.count("/markets", host="gamma") == 1 and sleeps.calls == []
    assert caught.value.retry_after_s == 120 and caught.value.headers["Retry-After"] == "120"


def test_connection_reset_is_a_network_error_and_retried(upstream_env: Upstream, sleeps: Sleeps) -> None:
    upstream_env.fail("reset", host="gamma")
    with pytest.raises(UpstreamUnavailable) as caught:
        get_gamma().get("/markets", {"limit": 1})
    assert caught.value.kind == "network"
    assert upstream_env.count("/markets", host="gamma") == 3


def test_timeout_is_typed(upstream_env: Upstream, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_READ_TIMEOUT_S", "0.3")
    reset_app()
    get_clob().retry.sleep = sleeps
    token = upstream_env.open_markets()[0]["token_ids"][0]
    upstream_env.fail("latency", host="clob", path="/midpoint", ms=1000)
    clob = get_clob()
    with pytest.raises(UpstreamTimeout) as caught:
        clob.call(clob.client.get_midpoint, token)
    assert caught.value.kind == "timeout" and caught.value.status == 504
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize("host", ["clob", "gamma"])
def test_non_json_body_is_a_bad_response_not_retried(upstream_env: Upstream, sleeps: Sleeps, host: str) -> None:
    upstream_env.fail("garbage", host=host)
    with pytest.raises(UpstreamBadResponse):
        if host == "clob":
            clob = get_clob()
            clob.call(clob.client.get_midpoint, upstream_env.open_markets()[0]["token_ids"][0])
        else:
            get_gamma().get("/markets", {"limit": 1})
    assert sleeps.calls == []
    assert getattr(get_container(), host).stats.snapshot()["last_error_kind"] == "bad_body"


def test_health_pings_use_one_attempt(upstream_env: Upstream, sleeps: Sleeps) -> None:
    get_clob().ping()
    get_gamma().ping()
    upstream_env.fail("status", host="clob", status=500)
    with pytest.raises(UpstreamServerError):
        get_clob().ping()
    assert upstream_env.count("/ok", host="clob") == 2


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 25 Nov 2026 13:00:10 GMT", now=1795611600.0) == pytest.approx(10, abs=1)


def test_retry_policy_only_retries_transient_errors() -> None:
    policy = RetryPolicy(3, 1.0, 10.0)
    assert policy.should_retry(UpstreamServerError("clob", status_code=500))
    assert policy.should_retry(UpstreamTimeout("clob"))
    assert not policy.should_retry(UpstreamNotFound("clob", status_code=404))
    assert not policy.should_retry(UpstreamBadResponse("clob"))
    assert not policy.should_retry(ValueError("bug"))
    assert policy.should_retry(UpstreamRateLimited("clob", retry_after_s=2))
    assert not policy.should_retry(UpstreamRateLimited("clob", retry_after_s=11))


def test_circuit_breaker_opens_probes_and_closes(
    upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_BREAKER_FAILURES", "3")
    monkeypatch.setenv("UPSTREAM_BREAKER_COOLDOWN_S", "0.5")
    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    reset_app()
    gamma = get_gamma()
    upstream_env.fail("status", host="gamma", status=500)
    with pytest.raises(UpstreamServerError):
        gamma.get("/markets", {"limit": 1})  # three attempts, three failures: the circuit opens
    assert upstream_env.count("/markets", host="gamma") == 3
    assert gamma.breaker.snapshot()["state"] == "open"
    with pytest.raises(UpstreamCircuitOpen):
        gamma.get("/markets", {"limit": 1})
    assert upstream_env.count("/markets", host="gamma") == 3  # not sent
    time.sleep(0.6)
    with pytest.raises(UpstreamCircuitOpen):
        gamma.get("/markets", {"limit": 1})  # the probe fails: open again, no retries behind it
    assert upstream_env.count("/markets", host="gamma") == 4
    upstream_env.clear()
    time.sleep(0.6)
    assert gamma.get("/markets", {"limit": 1})  # the probe succeeds
    assert gamma.breaker.snapshot() == {**gamma.breaker.snapshot(), "state": "closed", "consecutive_failures": 0}
    assert gamma.breaker.opened_count == 2


def test_not_found_does_not_trip_the_breaker(upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_BREAKER_FAILURES", "2")
    reset_app()
    clob = get_clob()
    for _ in range(5):
        with pytest.raises(UpstreamNotFound):
            clob.call(clob.client.get_order_book, "12345678901234567890")
    assert clob.breaker.state == "closed"


# --- whole-response deadlines ------------------------------------------------------------------


class Trickler:
    """A loopback HTTP server that sends its answer one byte every ``gap_s`` (headers first, or
    only the body), so no single socket read ever waits long enough to time out."""

    def __init__(self, gap_s: float = 0.1, headers_too: bool = False) -> None:
        import socket
        import threading

        self.gap_s = gap_s
        self.headers_too = headers_too
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        body = b'{"markets": []}' + b" " * 10_000
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        try:
            conn.recv(65536)
            if not self.headers_too:
                conn.sendall(head)
            for byte in (head if self.headers_too else b"") + body:
                if self._stop.wait(self.gap_s):
                    return
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_response_ends_at_its_whole_response_deadline(
    monkeypatch: pytest.MonkeyPatch, headers_too: bool
) -> None:
    server = Trickler(headers_too=headers_too)
    try:
        monkeypatch.setenv("POLYMARKET_GAMMA_HOST", server.url)
        monkeypatch.setenv("UPSTREAM_READ_TIMEOUT_S", "2")  # per read: never trips at 0.1 s a byte
        monkeypatch.setenv("UPSTREAM_RESPONSE_DEADLINE_S", "1")
        monkeypatch.setenv("UPSTREAM_RETRY_ATTEMPTS", "1")
        reset_app()
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            get_gamma().get("/markets/keyset")
        assert time.monotonic() - started < 1.0 + 1.5
    finally:
        server.close()


def test_the_request_deadline_bounds_retries_and_backoff(upstream_env: Upstream) -> None:
    from shared.core import deadline

    upstream_env.fail("status", host="gamma", status=503)
    started = time.monotonic()
    with deadline.within(1.5), pytest.raises(UpstreamServerError):
        get_gamma().get("/markets/keyset")  # 3 attempts with 1 s + 2 s backoff would take 3 s
    assert time.monotonic() - started < 1.5 + 0.5
    assert upstream_env.count("/markets/keyset") == 2  # the 2 s wait would have ended past it


def test_fail_fast_is_one_attempt_and_no_retry_after_wait(upstream_env: Upstream) -> None:
    from shared.core import deadline

    upstream_env.fail("rate_limit", host="gamma", retry_after=7)
    started = time.monotonic()
    with deadline.fail_fast(), pytest.raises(UpstreamRateLimited):
        get_gamma().get("/markets/keyset")
    assert time.monotonic() - started < 1.0 and upstream_env.count("/markets/keyset") == 1


def test_a_refused_connection_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("POLYMARKET_GAMMA_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("UPSTREAM_RETRY_ATTEMPTS", "1")
    reset_app()
    with pytest.raises(UpstreamUnavailable) as caught:
        get_gamma().get("/markets/keyset")
    assert caught.value.summary() == "network: connection refused"
    assert str(port) not in caught.value.summary()


# --- bounded reads: Retry-After, body caps, gzip, nesting (issue 11) ---------------------------


@pytest.mark.parametrize(("value", "seconds", "header"), [
    ("1e999", 3600, "3600"),  # infinity: as long as allowed
    ("1e308", 3600, "3600"),
    ("7200", 3600, "3600"),
    ("Fri, 31 Dec 9999 23:59:59 GMT", 3600, "3600"),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0, "1"),  # already past: at once
    ("2.5", 2.5, "3"),  # whole seconds, never earlier than asked
    ("-5", None, "5"),  # means nothing: the default
    ("nan", None, "5"),
    ("-inf", None, "5"),
    ("Mon, 99 Foo 99999 99:99:99 GMT", None, "5"),
])
def test_an_absurd_retry_after_is_cut_to_an_hour_or_ignored(value: str, seconds: float | None, header: str) -> None:
    assert parse_retry_after(value) == seconds
    error = UpstreamRateLimited("clob", retry_after_s=parse_retry_after(value))
    assert error.retry_after() == {"Retry-After": header}
    assert RetryPolicy(3, 0, 10).should_retry(error) == (seconds is None or seconds <= 10)


def test_every_retry_after_header_is_a_small_integer() -> None:
    from shared.core.errors import ModelError, UpstreamCircuitOpen, retry_after_header

    for seconds in (math.inf, math.nan, -1.0, 1e308, 0.2):
        assert 1 <= int(retry_after_header(seconds)["Retry-After"]) <= 3600
        assert 1 <= int(UpstreamRateLimited("gamma", retry_after_s=seconds).retry_after()["Retry-After"]) <= 3600
        assert 1 <= int(ModelError("rate_limited", retry_after_s=seconds).headers["Retry-After"]) <= 3600
    assert UpstreamCircuitOpen("clob", retry_after_s=1e308).headers["Retry-After"] == "3600"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_json_depth_is_the_nesting_a_parser_would_recurse_into() -> None:
    from shared.core.json_depth import json_depth
    from shared.upstream.polymarket import MAX_JSON_DEPTH
    from tests.conftest import SAMPLES

    deepest = 0
    for path in SAMPLES.glob("*.json"):
        raw = path.read_bytes()
        assert json_depth(raw) == _depth(json.loads(raw)), path.name
        deepest = max(deepest, json_depth(raw))
    assert deepest <= 7 < MAX_JSON_DEPTH  # every real payload, far under the limit
    assert json_depth(b'["[[[[", {"a": "\\"[[[[\\\\"}, "}}]]"]') == 2  # brackets in strings, escapes
    assert json_depth(b"[" * 80_000) == 80_000  # never closed: the parser still recurses that deep
    assert json_depth(b'[1, "no end [[[[[[') == 1  # an unterminated string: the parser stops there
    assert json_depth(b'"\\' * 100_000) == 0  # a pathological string, still one linear pass


BAD_BODIES = {
    "nested": (b"[" * 50_000 + b"]" * 50_000, None),
    "nested_object": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, None),
    "nested_behind_bom": (b"\xef\xbb\xbf" + b"[" * 50_000 + b"]" * 50_000, None),
    "utf16": ("[[1]]".encode("utf-16"), None),
    "unsupported_coding": (b'{"markets": []}', "br"),
    "corrupt_gzip": (b"\x1f\x8b\x08\x00not gzip at all", "gzip"),
    "gzip_cut_short": (gzip.compress(b'{"markets": []}')[:-6], "gzip"),
    "data_after_gzip": (gzip.compress(b'{"markets": []}') + b"more", "gzip"),
    "over_the_cap": (b'{"pad": "' + b" " * 70_000 + b'"}', None),
    "over_the_cap_decompressed": (gzip.compress(b'{"pad": "' + b" " * 70_000 + b'"}'), "gzip"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
@pytest.mark.parametrize("host", ["clob", "gamma"])
def test_a_body_refused_while_read_is_a_bad_body_on_both_clients(
    hostile_env: Any, monkeypatch: pytest.MonkeyPatch, host: str, case: str
) -> None:
    monkeypatch.setenv("UPSTREAM_MAX_BODY_BYTES", str(2**16))  # the smallest cap allowed: 64 KiB
    reset_app()
    body, coding = BAD_BODIES[case]
    hostile_env.on("body", host=host, body=body, status=200)
    if coding:
        hostile_env.on("header", host=host, name="Content-Encoding", value=coding)
    with pytest.raises(UpstreamBadResponse) as caught:  # not a network error, and not retried
        if host == "clob":
            clob = get_clob()
            clob.call(clob.client.get_order_book, "1")
        else:
            get_gamma().get("/markets/keyset")
    assert hostile_env.standin.count(host=host) == 1
    assert getattr(get_container(), host).stats.snapshot()["last_error_kind"] == "bad_body"
    assert caught.value.status == 502 and "sent an unreadable response" in caught.value.message


@pytest.mark.parametrize("host", ["clob", "gamma"])
def test_gzip_and_large_real_pages_are_read_as_before(hostile_env: Any, host: str) -> None:
    hostile_env.on("gzip", host=host)
    if host == "clob":
        clob = get_clob()
        book = clob.call(clob.client.get_order_book, _a_token(hostile_env))
        assert book["bids"] or book["asks"]
    else:
        page = get_gamma().get("/markets/keyset", {"closed": "false", "limit": 100, "include_tag": "true"})
        assert len(page["markets"]) == 100
    assert getattr(get_container(), host).stats.snapshot()["failures"] == 0


def test_an_error_page_is_not_mistaken_for_a_bad_body(hostile_env: Any) -> None:
    # A 503 HTML page with CSS braces: only a JSON array or object is scanned for nesting.
    page = "<html><style>" + "a{b{c{" * 40 + "}}}" * 40 + "</style></html>"
    hostile_env.on("body", host="gamma", body=page, status=503, content_type="text/html")
    with pytest.raises(UpstreamServerError):
        get_gamma().get("/markets/keyset")


def _a_token(hostile: Any) -> str:
    import httpx

    rows = httpx.get(f"{hostile.gamma_url}/markets/keyset", params={"closed": "false", "limit": "20"}).json()
    for row in rows["markets"]:
        token = json.loads(row["clobTokenIds"])[0]
        if httpx.get(f"{hostile.clob_url}/book", params={"token_id": token}).status_code == 200:
            return str(token)
    raise AssertionError("no token with a book")
