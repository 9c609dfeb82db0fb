"""The dev-only local Functions host: routing, invocation, settings, CORS, timers, embedded db, CLI.

HTTP behaviour is checked over real loopback sockets against ``tests/fixtures/sample_app.py``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import httpx
import psycopg2
import pytest

from devtools.embedded_db import ensure_database
from devtools.local_server import (
    CorsPolicy,
    Invoker,
    LocalHost,
    RouteError,
    RouteTemplate,
    SettingsError,
    TimerRunner,
    apply_settings,
    collect_functions,
    invoke_http,
    load_local_settings,
    read_route_prefix,
    split_path,
)
from devtools.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse_schedule, resolve_settings
from tests.fixtures import sample_app

ROOT = Path(__file__).resolve().parents[1]


def client(host: LocalHost) -> httpx.Client:
    # trust_env=False: a proxy configured in the environment must not capture loopback calls.
    return httpx.Client(base_url=host.url, trust_env=False, timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def served() -> Iterator[LocalHost]:
    with LocalHost(sample_app.app, port=0) as host:
        yield host


@pytest.fixture
def http(served: LocalHost) -> Iterator[httpx.Client]:
    with client(served) as c:
        yield c


# --- routing and invocation over HTTP ------------------------------------------------------


def test_literal_route_and_query(http: httpx.Client) -> None:
    response = http.get("/api/hello", params={"name": "ada"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"hello": "ada", "method": "GET"}
    # Azure matches case-insensitively and tolerates a trailing slash.
    assert http.get("/API/Hello/").json()["hello"] == "world"


def test_route_params_constraints_and_precedence(http: httpx.Client) -> None:
    assert http.get("/api/items/42").json() == {"by": "id", "id": 42}
    assert http.get("/api/items/new").json() == {"by": "literal"}  # literal beats {name}
    assert http.get("/api/items/abc").json() == {"by": "name", "name": "abc"}  # not an int
    assert http.get("/api/whoami").json()["who"] is None  # optional parameter
    assert http.get("/api/whoami/bob").json()["who"] == "bob"
    assert http.get("/api/whoami/b0b").status_code == 404  # alpha constraint
    assert http.get("/api/files/a/b/c.txt").text == "a/b/c.txt"  # catch-all


def test_post_with_body_headers_and_repeated_params(http: httpx.Client) -> None:
    response = http.post("/api/echo?tag=a&tag=b", json={"x": 1}, headers={"X-Test": "yes"})
    assert response.status_code == 201
    body = response.json()
    assert body["json"] == {"x": 1}
    assert body["params"] == {"tag": "a,b"}
    assert body["header"] == "yes"
    assert body["url"] == f"{str(http.base_url).rstrip('/')}/api/echo?tag=a&tag=b"


def test_unknown_path_is_404_and_wrong_method_is_405(http: httpx.Client) -> None:
    missing = http.get("/api/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert http.get("/hello").status_code == 404  # prefix required

    wrong = http.delete("/api/echo")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_head_is_answered_like_get_without_body(http: httpx.Client) -> None:
    get = http.get("/api/items/5")
    head = http.head("/api/items/5")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_handler_exception_is_500_json_without_traceback(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="devtools.local_server"):
        response = http.get("/api/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret internal detail" in caplog.text  # the traceback goes to the log


def test_async_handler_and_context(http: httpx.Client) -> None:
    assert http.get("/api/async-hello").json() == {"async": True}
    first = http.get("/api/whoami").json()
    second = http.get("/api/whoami", headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}).json()
    assert first["function_name"] == "whoami"
    assert first["invocation_id"] != second["invocation_id"]
    assert second["trace_parent"] == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


@pytest.mark.parametrize(("document", "path"), [
    ({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}, "/v1/hello"),
    ({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}, "/hello"),
    ({"version": "2.0"}, "/api/hello"),
])
def test_route_prefix_from_host_json(tmp_path: Path, document: dict, path: str) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps(document))
    with LocalHost(sample_app.app, port=0, host_json=host_json) as host, client(host) as c:
        assert c.get(path).status_code == 200
        assert c.get("/other/hello").status_code == 404


# --- routing without sockets ---------------------------------------------------------------


def test_route_templates() -> None:
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    template = RouteTemplate("api/orders/{order:guid}/lines/{n:int}")
    assert template.match(split_path(f"/api/orders/{guid}/lines/3")) == {"order": guid, "n": "3"}
    assert template.match(split_path("/api/orders/xyz/lines/3")) is None
    assert template.match(split_path(f"/api/orders/{guid}/lines/99999999999")) is None  # beyond int32
    assert RouteTemplate("a/{x:range(1,5)}").match(["a", "6"]) is None
    assert RouteTemplate("a/{x:regex(^\\d{{3}}$)}").match(["a", "123"]) == {"x": "123"}
    assert RouteTemplate("a/{x:custom}").match(["a", "anything"]) == {"x": "anything"}  # unknown: accepted
    assert RouteTemplate("a/{x=7}").match(["a"]) == {"x": "7"}
    assert RouteTemplate("f/{name}.{ext}").match(["f", "report.pdf"]) == {"name": "report", "ext": "pdf"}
    for bad in ("a/{x", "a/{x}/{x}", "a//b", "{*rest}/a"):
        with pytest.raises(RouteError):
            RouteTemplate(bad)


def test_invoke_http_without_sockets() -> None:
    functions = collect_functions(sample_app.app, "api").http
    assert invoke_http(functions, "GET", "/api/items/7").json() == {"by": "id", "id": 7}
    assert invoke_http(sample_app.app, "GET", "/x/hello", route_prefix="x").status == 200
    assert invoke_http(functions, "PUT", "/api/hello").status == 405


# --- local.settings.json -------------------------------------------------------------------


def test_local_settings_loaded_and_process_env_wins(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False,
        "Values": {"FROM_FILE": "file", "BOTH": "file", "NUMBER": 5, "FLAG": True},
        "Host": {"CORS": "http://a.example, http://b.example", "CORSCredentials": True, "LocalHttpPort": 7100},
    }))
    settings = load_local_settings(tmp_path)
    environ = {"BOTH": "process"}
    applied, kept = apply_settings(settings.values, environ)
    assert environ == {"BOTH": "process", "FROM_FILE": "file", "NUMBER": "5", "FLAG": "true"}
    assert kept == ["BOTH"] and sorted(applied) == ["FLAG", "FROM_FILE", "NUMBER"]
    assert settings.cors == "http://a.example, http://b.example"
    assert settings.cors_credentials is True and settings.local_http_port == 7100


def test_local_settings_missing_or_broken(tmp_path: Path) -> None:
    assert load_local_settings(tmp_path).values == {}
    (tmp_path / "local.settings.json").write_text("{not json")
    with pytest.raises(SettingsError):
        load_local_settings(tmp_path)
    assert read_route_prefix(tmp_path / "host.json") == "api"


# --- CORS ----------------------------------------------------------------------------------


def test_cors_preflight_and_simple_requests(tmp_path: Path) -> None:
    with LocalHost(sample_app.app, port=0, cors="http://ok.example") as host, client(host) as c:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        allowed = c.options("/api/echo", headers={"Origin": "http://ok.example", **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
        assert allowed.headers["access-control-allow-methods"] == "POST"
        assert allowed.headers["access-control-allow-headers"] == "content-type"
        assert int(allowed.headers["access-control-max-age"]) > 0

        denied = c.options("/api/echo", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers

        simple = c.get("/api/hello", headers={"Origin": "http://OK.example"})
        assert simple.headers["access-control-allow-origin"] == "http://OK.example"
        assert "Origin" in simple.headers["vary"]
        assert "access-control-allow-origin" not in c.get("/api/hello", headers={"Origin": "http://evil.example"}).headers
        assert "access-control-allow-origin" not in c.get("/api/hello").headers

        # The app's own header is kept.
        own = c.get("/api/files/x", headers={"Origin": "http://ok.example"})
        assert own.headers["access-control-allow-origin"] == "https://own.example"


def test_cors_wildcard_and_credentials() -> None:
    with LocalHost(sample_app.app, port=0, cors="*") as host, client(host) as c:
        assert c.get("/api/hello", headers={"Origin": "http://x.example"}).headers["access-control-allow-origin"] == "*"
    policy = CorsPolicy.parse("*", credentials=True)
    assert policy is not None
    with LocalHost(sample_app.app, port=0, cors=policy) as host, client(host) as c:
        response = c.get("/api/hello", headers={"Origin": "http://x.example"})
        assert response.headers["access-control-allow-origin"] == "http://x.example"
        assert response.headers["access-control-allow-credentials"] == "true"
    assert CorsPolicy.parse("") is None


# --- timers --------------------------------------------------------------------------------


def test_timers_fire_on_schedule_and_survive_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULE", "*/1 * * * * *")
    sample_app.TIMER_CALLS.clear()
    with LocalHost(sample_app.app, port=0, run_timers=True):
        fired = wait_for(lambda: len(sample_app.TIMER_CALLS["every_second"]) >= 1
                         and len(sample_app.TIMER_CALLS["from_setting"]) >= 2, timeout=5)
    count = len(sample_app.TIMER_CALLS["every_second"])
    time.sleep(1.2)
    assert fired
    assert len(sample_app.TIMER_CALLS["every_second"]) == count  # stopped with the host
    timer = sample_app.TIMER_CALLS["every_second"][0]
    assert isinstance(timer, func.TimerRequest)
    assert timer.past_due is False


def test_unresolved_schedule_disables_only_that_timer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SCHEDULE", raising=False)
    index = collect_functions(sample_app.app)
    runner = TimerRunner(index.timers, invoker=Invoker(), environ={})
    with caplog.at_level(logging.ERROR):
        runner.start()
        runner.stop()
    assert set(runner.schedules) == {"every_second"}
    assert "%SCHEDULE%" in caplog.text


def test_ncrontab_parsing_and_next_occurrence() -> None:
    start = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Wednesday
    every_15s = CronSchedule.parse("*/15 * * * * *")
    assert every_15s.next_after(start) == start + timedelta(seconds=15)
    assert every_15s.next_after(start + timedelta(seconds=14, microseconds=5)) == start + timedelta(seconds=15)

    weekday_mornings = CronSchedule.parse("0 30 9 * * Mon-Fri")
    assert weekday_mornings.next_after(start) == datetime(2025, 1, 1, 9, 30, tzinfo=UTC)
    assert weekday_mornings.next_after(datetime(2025, 1, 3, 10, 0, tzinfo=UTC)) == datetime(
        2025, 1, 6, 9, 30, tzinfo=UTC)

    lists_and_ranges = CronSchedule.parse("0 0,30 8-10/2 1 jan,JUL *")
    assert sorted(lists_and_ranges.hours) == [8, 10] and lists_and_ranges.months == {1, 7}
    assert lists_and_ranges.next_after(datetime(2025, 1, 1, 10, 30, tzinfo=UTC)) == datetime(
        2025, 7, 1, 8, 0, tzinfo=UTC)

    friday_13th = CronSchedule.parse("0 0 0 13 * 5")  # NCRONTAB: both day fields must match
    assert friday_13th.next_after(start) == datetime(2025, 6, 13, tzinfo=UTC)
    assert CronSchedule.parse("0 0 0 * * 7").weekdays == {0}  # 7 is Sunday
    assert CronSchedule.parse("*/5 * * * *").seconds == {0}  # five fields: at second 0

    assert parse_schedule("00:05:00") == IntervalSchedule("00:05:00", timedelta(minutes=5))
    assert resolve_settings("%S%", {"S": "0 0 * * * *"}) == "0 0 * * * *"
    for bad in ("* * * *", "61 * * * * *", "*/0 * * * * *", "5-1 * * * * *", "x * * * * *"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)
    with pytest.raises(ScheduleError):
        CronSchedule.parse("0 0 0 30 2 *").next_after(start)  # 30 February never comes
    with pytest.raises(ScheduleError):
        resolve_settings("%MISSING%", {})


# --- embedded PostgreSQL -------------------------------------------------------------------


def test_embedded_database_starts_and_answers(tmp_path: Path) -> None:
    environ: dict[str, str] = {}  # POSTGRES_HOST unset (and os.environ left alone)
    database = ensure_database(tmp_path, environ)
    assert database is not None
    try:
        assert database.data_dir == (tmp_path / ".devdata" / "pg").resolve()
        conn = psycopg2.connect(
            host=environ["POSTGRES_HOST"], port=int(environ["POSTGRES_PORT"]), user=environ["POSTGRES_USER"],
            password=environ["POSTGRES_PASSWORD"], dbname=environ["POSTGRES_DATABASE"],
            sslmode=environ["POSTGRES_SSLMODE"],
        )
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
                assert cur.fetchone() == (1,)
        finally:
            conn.close()
    finally:
        database.stop()
    assert not (database.data_dir / "postmaster.pid").exists()
    assert ensure_database(tmp_path, {"POSTGRES_HOST": "db.example"}) is None


# --- the command line ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_the_app_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"SOME_SECRET": "s3cr3t-value"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.local_server", "--port", str(port), "--root", str(tmp_path),
         "--app", "tests.fixtures.sample_app:app", "--no-timers"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/hello", trust_env=False, timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None  # stop waiting if it died
        assert wait_for(answers, timeout=20)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "embedded PostgreSQL" in output
    assert f"hello: [GET] http://127.0.0.1:{port}/api/hello" in output
    assert "GET /api/hello 200" in output
    assert "SOME_SECRET" in output and "s3cr3t-value" not in output  # names, never values
    assert not (tmp_path / ".devdata" / "pg" / "postmaster.pid").exists()  # the db stopped with it
