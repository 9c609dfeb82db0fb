"""Bounded reads against a hostile Polymarket, through the HTTP API (issue 11, breaks 1, 4, 8, 9).

A deeply nested body, an absurd ``Retry-After``, a trickle, a gzip bomb, a body too large to
read: each must end in stale data or a documented error, soon, with the process alive and its
memory flat. What can crash or balloon a process runs the app in a subprocess (the local host
over real HTTP), which is also where its memory is measured; the rest serve it in-process.
Bounds are generous (the request deadline plus 2 s, 200 MB of growth); the figures measured are
printed in the session summary.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import REPORT_LINES, ROOT, reset_app, reset_services
from tests.test_faults import assert_documented_error

SLACK_S = 2.0
DEADLINE_S = 5.0  # REQUEST_DEADLINE_S's default
RSS_GROWTH_BOUND_MB = 200.0
# Settings under which each fault shows as itself, at once: no backoff, no open circuit, short TTLs.
APP_ENV = {
    "UPSTREAM_RETRY_BACKOFF_S": "0",
    "UPSTREAM_BREAKER_FAILURES": "1000",
    "MARKETS_REFRESH_MIN_INTERVAL_S": "0",
    "PRICE_REFRESH_MIN_INTERVAL_S": "0",
    "PRICE_CACHE_TTL_S": "1",
    "BOOK_CACHE_TTL_S": "1",
    "PRICE_HISTORY_CACHE_TTL_S": "1",
}

# The app on the local host in a process of its own: a crash there fails a test, not the run.
WORKER = """
import sys
from pathlib import Path

import function_app
from devtools.funchost import LocalHost

host = LocalHost(function_app.app, port=0, host_json=Path("host.json")).start()
print(host.url, flush=True)
sys.stdin.read()  # until the test closes stdin
host.stop()
"""


class Worker:
    """The subprocess host; ``peak_growth_mb`` measures its RSS high-water mark around a call."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        assert line.startswith("http://"), f"the worker did not start: {self.describe()}"
        self.url = line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        tail = self.log_path.read_text(errors="replace")[-1500:]
        return f"worker {state}; its stderr ends with:\n{tail}"

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def peak_growth_mb(self, call: Callable[[], Any]) -> tuple[Any, float]:
        """``call()``'s result, and how far the worker's peak RSS rose above its RSS before it."""
        before = self.rss_mb()
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # reset VmHWM (the peak) to now
        result = call()
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        return result, peak_kb / 1024 - before

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@dataclass
class App:
    http: httpx.Client
    hostile: Any
    worker: Worker | None = None

    def get(self, path: str, **params: str) -> httpx.Response:
        try:
            return self.http.get(path, params=params)
        except httpx.TransportError as error:
            details = self.worker.describe() if self.worker else ""
            raise AssertionError(f"{path}: no answer ({type(error).__name__}); {details}") from None

    def timed(self, path: str, **params: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.get(path, **params)
        return response, time.perf_counter() - started

    def ok(self, path: str, **params: str) -> dict[str, Any]:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def tokens(self, n: int) -> list[str]:
        """Tokens with a book, asked of the hostile upstream directly (before any switch is on)."""
        rows = httpx.get(f"{self.hostile.gamma_url}/markets/keyset",
                         params={"closed": "false", "limit": "100"}).json()["markets"]
        found = []
        for row in rows:
            token = json.loads(row.get("clobTokenIds") or "[]")[:1]
            if token and httpx.get(f"{self.hostile.clob_url}/book", params={"token_id": token[0]}).status_code == 200:
                found.append(token[0])
            if len(found) == n:
                return found
        raise AssertionError(f"fewer than {n} tokens with a book")

    def upstream_stats(self, host: str) -> dict[str, Any]:
        return self.get("/api/health", deep="true").json()["upstream_stats"][host]

    def assert_alive(self) -> None:
        if self.worker:
            assert self.worker.alive(), self.worker.describe()
        assert self.ok("/api/health")["status"] == "ok"


@pytest.fixture
def serve(database_env: dict[str, str], hostile_env: Any, monkeypatch: pytest.MonkeyPatch,
          tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``serve(isolated=False, **env)``: the app over real HTTP against the hostile upstream,
    in-process on the local host, or (``isolated=True``) in a worker process of its own."""
    import function_app
    from devtools.funchost import LocalHost

    hosts: list[Any] = []
    workers: list[Worker] = []
    clients: list[httpx.Client] = []

    def start(isolated: bool = False, **env: str) -> App:
        settings = {**APP_ENV, **env}
        worker = None
        if isolated:
            worker = Worker({**os.environ, **settings}, tmp_path / f"worker{len(workers)}.log")
            workers.append(worker)
            url = worker.url
        else:
            for key, value in settings.items():
                monkeypatch.setenv(key, value)
            reset_services()
            reset_app()
            host = LocalHost(function_app.app, port=0, host_json=ROOT / "host.json").start()
            hosts.append(host)
            url = host.url
        http = httpx.Client(base_url=url, timeout=60, trust_env=False)
        clients.append(http)
        return App(http, hostile_env, worker)

    yield start
    for http in clients:
        http.close()
    for host in hosts:
        host.stop()
    for worker in workers:
        worker.stop()
    reset_services()


def figure(text: str) -> None:
    REPORT_LINES.append(f"hostile transport: {text}")


def assert_error_or_stale(response: httpx.Response) -> None:
    """A documented 5xx (never a 500), or stored data labelled stale."""
    if response.status_code == 200:
        assert response.json()["freshness"]["source"] == "stale", response.text
    else:
        assert_documented_error(response)


# --- break 1: the recursion limit and deeply nested JSON ---------------------------------------


@pytest.mark.parametrize("first_import", ["function_app", "shared.prices.service"])
def test_the_recursion_limit_is_put_back_after_py_clob_client_is_imported(first_import: str) -> None:
    # py_ecc (imported by py-clob-client-v2) raises the limit to 100,000 for the whole process
    # when imported; shared.prices.service imports py-clob-client-v2 before shared.upstream.polymarket does.
    code = (
        "import sys\n"
        "before = sys.getrecursionlimit()\n"
        f"import {first_import}\n"
        "import function_app\n"
        "from shared.upstream.polymarket import get_clob, get_gamma\n"
        "after_import = sys.getrecursionlimit()\n"
        "get_clob(), get_gamma()\n"
        "print(before, after_import, sys.getrecursionlimit(), 'py_ecc' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET_", "POSTGRES_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after_import, after_clients, py_ecc_loaded = done.stdout.split()
    assert py_ecc_loaded == "True"  # the import the guard is about did happen
    assert int(before) == int(after_import) == int(after_clients) <= 10_000


NESTED = [
    # (host, path switched, API path, the API's answer to expect)
    ("gamma", "/markets/keyset", "/api/markets", "error"),
    ("clob", "/book", "/api/book/{a}", "error"),
    ("clob", "/books", "/api/prices?token_ids={a},{b}", "error"),
    ("clob", "/prices-history", "/api/price/{a}", "any"),  # the quote comes from /book
]


@pytest.mark.parametrize(("host", "switched", "api", "expect"), NESTED, ids=[f"{h}{p}" for h, p, _, _ in NESTED])
def test_deeply_nested_json_is_a_bad_body_and_the_worker_lives(
    serve: Callable[..., App], host: str, switched: str, api: str, expect: str
) -> None:
    app = serve(isolated=True)
    a, b = app.tokens(2)
    app.hostile.on("deep_nesting", host=host, path=switched, depth=80_000)
    path, _, query = api.format(a=a, b=b).partition("?")
    params = dict(pair.split("=") for pair in query.split("&")) if query else {}
    response, took = app.timed(path, **params)
    app.assert_alive()
    if expect == "error" or response.status_code >= 500:
        assert_documented_error(response)
    assert took < DEADLINE_S + SLACK_S, took
    stats = app.upstream_stats(host)
    assert stats["failures"] >= 1 and stats["last_error_kind"] == "bad_body", stats
    figure(f"{host} {switched} nested 80,000 deep: {response.status_code} in {took:.2f} s, worker alive")


# --- break 4: absurd Retry-After ---------------------------------------------------------------


RETRY_AFTERS = [
    # (what upstream sends, what a client is told): numbers too large and dates far ahead are cut
    # to an hour; a negative number or NaN means nothing, so the default applies.
    ("1e999", "3600"),
    ("1e308", "3600"),
    ("Fri, 31 Dec 9999 23:59:59 GMT", "3600"),
    ("-5", "5"),
    ("nan", "5"),
]


@pytest.mark.parametrize(("sent", "told"), RETRY_AFTERS, ids=[s for s, _ in RETRY_AFTERS])
def test_an_absurd_retry_after_is_a_503_with_a_small_retry_after(
    serve: Callable[..., App], sent: str, told: str
) -> None:
    app = serve()
    a, b = app.tokens(2)
    app.hostile.on("header", host="clob", name="Retry-After", value=sent, status=429)
    app.hostile.on("header", host="gamma", path="/markets/keyset", name="Retry-After", value=sent, status=429)
    for path, params in ((f"/api/book/{a}", {}), (f"/api/price/{a}", {}), ("/api/prices", {"token_ids": f"{a},{b}"}),
                         ("/api/markets", {})):
        response, took = app.timed(path, **params)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert_documented_error(response)
        assert response.headers["Retry-After"] == told, (path, response.headers["Retry-After"])
        assert took < DEADLINE_S + SLACK_S, (path, took)

    # A stored catalogue, then refresh=true against the same 429: stale, saying why, in a few words.
    # (A new instance: this one backs off its failed first load for as long as the 429 said.)
    app.hostile.clear()
    reset_services()
    app.ok("/api/markets")
    app.hostile.on("header", host="gamma", path="/markets/keyset", name="Retry-After", value=sent, status=429)
    body = app.ok("/api/markets", refresh="true")
    reason = body["freshness"]["stale_reason"]
    assert body["freshness"]["source"] == "stale" and "429" in reason, body["freshness"]
    assert not re.search(r"\d{5,}", reason), reason


# --- break 8, first half: a trickle ------------------------------------------------------------


TRICKLE_DEADLINE_S = 2.0


@pytest.mark.parametrize("body_only", [True, False], ids=["body", "headers"])
def test_a_trickling_upstream_is_answered_within_the_request_deadline(
    serve: Callable[..., App], body_only: bool
) -> None:
    app = serve(REQUEST_DEADLINE_S=str(TRICKLE_DEADLINE_S))
    a, b = app.tokens(2)
    app.ok(f"/api/book/{b}")  # b has a stored book, a has nothing
    time.sleep(1.1)  # past the book TTL: an answer for b needs Polymarket, and cannot have it
    app.hostile.on("trickle", host="gamma", path="/markets/keyset", bytes_per_s=1, body_only=body_only)
    app.hostile.on("trickle", host="clob", bytes_per_s=1, body_only=body_only)
    for path, params in (("/api/markets", {}), (f"/api/price/{a}", {}), (f"/api/book/{a}", {}),
                         ("/api/prices", {"token_ids": f"{a},{b}"}), (f"/api/book/{b}", {})):
        response, took = app.timed(path, **params)
        assert took < TRICKLE_DEADLINE_S + SLACK_S, (path, took)
        assert_error_or_stale(response)
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1, path
        figure(f"trickle ({'body' if body_only else 'headers and body'}) {path.split('/')[2]}: "
               f"{response.status_code} in {took:.2f} s")
    assert app.ok(f"/api/book/{b}")["freshness"]["source"] == "stale"


# --- break 9 and huge bodies: gzip bombs, bodies larger than any real page ----------------------


BOMB_MB = 200  # ~200 KB of gzip on the wire


def test_gzip_answers_within_the_cap_are_served_live(serve: Callable[..., App]) -> None:
    app = serve()
    a, b, c, d = app.tokens(4)
    app.hostile.on("gzip", host="gamma")  # every page of the first load, 100 markets each
    app.hostile.on("gzip", host="clob")
    assert len(app.ok("/api/markets", limit="500")["markets"]) > 100
    for path, params in ((f"/api/book/{a}", {}), ("/api/prices", {"token_ids": f"{b},{c}"}), (f"/api/price/{d}", {})):
        assert app.ok(path, **params)["freshness"]["source"] == "live", path


@pytest.mark.parametrize("where", ["book", "books", "gamma"])
def test_a_gzip_bomb_is_cut_at_the_cap_and_memory_stays_flat(serve: Callable[..., App], where: str) -> None:
    app = serve(isolated=True)
    a, b, c = app.tokens(3)
    app.ok(f"/api/book/{c}")  # one stored book: its answer turns stale, the others fail
    time.sleep(1.1)
    host, path, api, params = {
        "book": ("clob", "/book", f"/api/book/{a}", {}),
        "books": ("clob", "/books", "/api/prices", {"token_ids": f"{a},{b},{c}"}),
        "gamma": ("gamma", "/markets/keyset", "/api/markets", {}),
    }[where]
    app.hostile.on("gzip", host=host, path=path, bomb_mb=BOMB_MB)
    assert app.worker is not None
    (response, took), growth = app.worker.peak_growth_mb(lambda: app.timed(api, **params))
    if where == "books":
        assert_error_or_stale(response)  # c's book is stored: the batch may answer it stale
    else:
        assert_documented_error(response)
    assert took < DEADLINE_S + SLACK_S, took
    assert growth < RSS_GROWTH_BOUND_MB, f"peak RSS grew {growth:.0f} MB"
    app.assert_alive()
    stats = app.upstream_stats(host)
    assert stats["failures"] >= 1 and stats["last_error_kind"] == "bad_body", stats
    if where == "book":
        stale, _ = app.timed(f"/api/book/{c}")  # the same bomb, with a stored book to answer from
        assert stale.status_code == 200 and stale.json()["freshness"]["source"] == "stale", stale.text
    figure(f"gzip bomb ({BOMB_MB} MB in ~200 KB) on {host} {path}: {response.status_code} in {took:.2f} s, "
           f"peak RSS +{growth:.0f} MB")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_huge_switch_sends_that_many_megabytes_of_json(hostile_env: Any, chunked: bool) -> None:
    meter: dict[str, int] = {}
    hostile_env.on("huge", host="clob", path="/book", mb=2, chunked=chunked, meter=meter)
    answer = httpx.get(f"{hostile_env.clob_url}/book", params={"token_id": "1"})
    assert answer.status_code == 200 and len(answer.json()["pad"]) == 2 * 2**20
    assert ("content-length" in answer.headers) != chunked and meter["bytes"] == len(answer.content)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_cut_at_the_cap_not_read_whole(serve: Callable[..., App], chunked: bool) -> None:
    app = serve(isolated=True)
    (a,) = app.tokens(1)
    meter: dict[str, int] = {}
    app.hostile.on("huge", host="clob", path="/book", mb=100, chunked=chunked, meter=meter)
    assert app.worker is not None
    (response, took), growth = app.worker.peak_growth_mb(lambda: app.timed(f"/api/book/{a}"))
    assert_documented_error(response)
    assert took < DEADLINE_S + SLACK_S, took
    sent_mb = meter.get("bytes", 0) / 2**20
    assert sent_mb < 40, f"{sent_mb:.0f} MB of the 100 MB body were sent"  # the cap, plus socket buffers
    assert growth < RSS_GROWTH_BOUND_MB, f"peak RSS grew {growth:.0f} MB"
    app.assert_alive()
    assert app.upstream_stats("clob")["last_error_kind"] == "bad_body"
    figure(f"100 MB body ({'chunked' if chunked else 'Content-Length'}) on /book: {response.status_code} "
           f"in {took:.2f} s, {sent_mb:.1f} MB sent before the app hung up, peak RSS +{growth:.0f} MB")
