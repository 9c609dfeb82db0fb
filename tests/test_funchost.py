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
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import httpx
import psycopg2
import pytest

from devtools.embedded_db import ensure_database
from devtools.funchost import (
    LOCAL_CORS_ORIGINS,
    CorsPolicy,
    CronSchedule,
    IntervalSchedule,
    Invoker,
    LocalHost,
    LocalSettings,
    RouteError,
    RouteTemplate,
    ScheduleError,
    SettingsError,
    TimerRunner,
    apply_settings,
    collect_functions,
    invoke_http,
    load_local_settings,
    parse_schedule,
    read_route_prefix,
    resolve_cors,
    resolve_settings,
    split_path,
)
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


def test_route_params_and_precedence(http: httpx.Client) -> None:
    assert http.get("/api/items/new").json() == {"by": "literal"}  # literal beats {name}
    assert http.get("/api/items/abc").json() == {"by": "name", "name": "abc"}
    assert http.get("/api/items/42").json() == {"by": "name", "name": "42"}
    assert http.get("/api/files/report.pdf").text == "report.pdf"
    # A parameter is one whole, non-empty segment.
    for path in ("/api/items", "/api/items/a/b", "/api/files/a/b/c.txt"):
        assert http.get(path).status_code == 404, path


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
    with caplog.at_level(logging.ERROR, logger="devtools.funchost"):
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
    template = RouteTemplate("api/markets/{condition_id}/sentiment")
    assert template.match(split_path("/api/Markets/0xabc/SENTIMENT/")) == {"condition_id": "0xabc"}
    assert template.match(split_path("/api/markets/0xabc")) is None
    assert template.match(split_path("/api/markets/0xabc/sentiment/x")) is None
    assert template.match(["api", "markets", "", "sentiment"]) is None  # a parameter is never empty
    assert RouteTemplate("").match([]) == {}
    assert RouteTemplate("api/items/new").precedence < RouteTemplate("api/items/{name}").precedence
    for bad in ("a/{x", "a/x}", "a/{x}/{X}", "a//b", "a/{x-y}", "f/{name}.{ext}", "a/{{x}}"):
        with pytest.raises(RouteError):
            RouteTemplate(bad)


@pytest.mark.parametrize(("route", "what"), [
    ("items/{id:int}", "a route constraint, {id:int},"),
    ("orders/{order:guid}/lines", "a route constraint, {order:guid},"),
    ("whoami/{who?}", "an optional parameter, {who?},"),
    ("files/{*path}", "a catch-all parameter, {*path},"),
    ("items/{n=7}", "a parameter default, {n=7},"),
])
def test_a_route_the_host_does_not_serve_fails_at_startup(route: str, what: str) -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route=route, methods=["GET"])
    def refused(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("never served")

    with pytest.raises(RouteError) as error:
        LocalHost(app, port=0)
    assert str(error.value).startswith(f"function refused: route 'api/{route}' has {what} which the local host")
    assert "serves literal segments and {name} parameters" in str(error.value)


def test_invoke_http_without_sockets() -> None:
    functions = collect_functions(sample_app.app, "api").http
    assert invoke_http(functions, "GET", "/api/items/7").json() == {"by": "name", "name": "7"}
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


def _vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()}


def test_host_answers_vary_by_origin_and_expose_headers() -> None:
    policy = CorsPolicy.parse("http://ok.example", expose_headers=("ETag", "X-Data-Simulated"))
    with LocalHost(sample_app.app, port=0, cors=policy) as host, client(host) as c:
        for response in (c.get("/api/nope", headers={"Origin": "http://ok.example"}),
                         c.delete("/api/echo", headers={"Origin": "http://ok.example"}),
                         c.get("/api/hello", headers={"Origin": "http://ok.example"})):
            assert response.headers["access-control-allow-origin"] == "http://ok.example"
            assert response.headers["access-control-expose-headers"] == "ETag, X-Data-Simulated"
            assert "origin" in _vary(response)
        # Without an Origin, or from another one: no grant, but the same Vary (caches).
        for headers in ({}, {"Origin": "http://evil.example"}):
            for response in (c.get("/api/nope", headers=headers), c.delete("/api/echo", headers=headers),
                             c.get("/api/hello", headers=headers)):
                assert "access-control-allow-origin" not in response.headers
                assert "access-control-expose-headers" not in response.headers
                assert "origin" in _vary(response)
        preflight = c.options("/api/hello", headers={"Origin": "http://ok.example",
                                                     "Access-Control-Request-Method": "GET"})
        assert {"origin", "access-control-request-method", "access-control-request-headers"} <= _vary(preflight)
    # "*" is the same answer for everyone: sent with or without an Origin, no Vary needed.
    with LocalHost(sample_app.app, port=0, cors=CorsPolicy.parse("*")) as host, client(host) as c:
        for headers in ({}, {"Origin": "http://x.example"}):
            response = c.get("/api/nope", headers=headers)
            assert response.headers["access-control-allow-origin"] == "*"
            assert "origin" not in _vary(response)
    assert CorsPolicy.parse("none") is None and CorsPolicy.parse(" NONE ") is None


def test_demo_mode_labels_the_hosts_own_answers() -> None:
    with LocalHost(sample_app.app, port=0, cors="http://ok.example", simulated=True) as host, client(host) as c:
        for response in (c.get("/api/nope"), c.delete("/api/echo"), c.get("/api/boom")):
            assert response.status_code in (404, 405, 500)
            assert response.headers["x-data-simulated"] == "true"
            assert response.json()["simulated"] is True and response.json()["error"]["code"]
        preflight = c.options("/api/hello", headers={"Origin": "http://ok.example",
                                                     "Access-Control-Request-Method": "GET"})
        assert preflight.status_code == 204 and preflight.headers["x-data-simulated"] == "true"
        # The app's own answers are the app's to label (the real app does, see tests/test_http.py).
        assert "x-data-simulated" not in c.get("/api/hello").headers
    with LocalHost(sample_app.app, port=0) as host, client(host) as c:
        missing = c.get("/api/nope")
        assert "x-data-simulated" not in missing.headers and "simulated" not in missing.json()


def test_cors_origins_come_from_one_setting_with_local_defaults(tmp_path: Path) -> None:
    nothing = LocalSettings()
    host_cors = LocalSettings(cors="http://host.example", path=tmp_path / "local.settings.json")
    assert resolve_cors(None, {}, nothing) == (",".join(LOCAL_CORS_ORIGINS), "the local defaults")
    assert resolve_cors(None, {"CORS_ALLOWED_ORIGINS": "  "}, nothing)[0] == ",".join(LOCAL_CORS_ORIGINS)
    assert resolve_cors(None, {}, host_cors)[0] == "http://host.example"
    assert resolve_cors(None, {"CORS_ALLOWED_ORIGINS": "https://app.example"}, host_cors) == (
        "https://app.example", "CORS_ALLOWED_ORIGINS")
    assert resolve_cors("http://cli.example", {"CORS_ALLOWED_ORIGINS": "https://app.example"}, host_cors) == (
        "http://cli.example", "--cors")
    assert resolve_cors("none", {}, nothing) == ("none", "--cors")
    assert set(LOCAL_CORS_ORIGINS) == {"http://localhost:3000", "http://localhost:5173",
                                       "http://127.0.0.1:3000", "http://127.0.0.1:5173"}


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


def occurrences(expression: str, after: datetime, count: int) -> list[datetime]:
    schedule = parse_schedule(expression)
    found = [schedule.next_after(after)]
    while len(found) < count:
        found.append(schedule.next_after(found[-1]))
    return found


def test_ncrontab_schedules_are_croniters_with_seconds_first() -> None:
    start = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Wednesday
    just_before = start - timedelta(seconds=1)
    # The app's schedules (shared.core.config.TRIGGER_SETTING_DEFAULTS): every 5 minutes, hourly at :17.
    assert occurrences("0 */5 * * * *", just_before, 4) == [start + timedelta(minutes=m) for m in (0, 5, 10, 15)]
    assert occurrences("0 */5 * * * *", start + timedelta(minutes=3, seconds=59), 1) == [start + timedelta(minutes=5)]
    assert occurrences("0 17 * * * *", start, 3) == [start + timedelta(hours=h, minutes=17) for h in (0, 1, 2)]
    # The first field is the second: honoured, and not read as a minute.
    assert occurrences("30 * * * * *", start, 2) == [start + timedelta(seconds=30), start + timedelta(seconds=90)]
    assert occurrences("15 30 9 * * *", start, 2) == [datetime(2025, 1, 1, 9, 30, 15, tzinfo=UTC),
                                                       datetime(2025, 1, 2, 9, 30, 15, tzinfo=UTC)]
    every_15s = CronSchedule.parse("*/15 * * * * *")
    assert every_15s.next_after(start) == start + timedelta(seconds=15)
    assert every_15s.next_after(start + timedelta(seconds=14, microseconds=5)) == start + timedelta(seconds=15)
    assert every_15s.croniter_expression == "* * * * * */15"  # croniter takes seconds last

    weekday_mornings = CronSchedule.parse("0 30 9 * * Mon-Fri")
    assert weekday_mornings.next_after(start) == datetime(2025, 1, 1, 9, 30, tzinfo=UTC)
    assert weekday_mornings.next_after(datetime(2025, 1, 3, 10, 0, tzinfo=UTC)) == datetime(
        2025, 1, 6, 9, 30, tzinfo=UTC)

    lists_and_ranges = "0 0,30 8-10/2 1 jan,JUL *"  # hours 8 and 10, January and July
    assert occurrences(lists_and_ranges, start, 5) == [
        datetime(2025, 1, 1, 8, 0, tzinfo=UTC), datetime(2025, 1, 1, 8, 30, tzinfo=UTC),
        datetime(2025, 1, 1, 10, 0, tzinfo=UTC), datetime(2025, 1, 1, 10, 30, tzinfo=UTC),
        datetime(2025, 7, 1, 8, 0, tzinfo=UTC)]

    friday_13th = CronSchedule.parse("0 0 0 13 * 5")  # NCRONTAB: both day fields must match
    assert friday_13th.next_after(start) == datetime(2025, 6, 13, tzinfo=UTC)
    sunday = datetime(2025, 1, 5, tzinfo=UTC)
    assert occurrences("0 0 0 * * 7", start, 1) == occurrences("0 0 0 * * Sun", start, 1) == [sunday]  # 7 is Sunday
    # Five fields: the second is 0.
    assert occurrences("*/5 * * * *", start + timedelta(seconds=3), 1) == [start + timedelta(minutes=5)]

    assert parse_schedule("00:05:00") == IntervalSchedule("00:05:00", timedelta(minutes=5))
    assert resolve_settings("%S%", {"S": "0 0 * * * *"}) == "0 0 * * * *"
    with pytest.raises(ScheduleError):
        CronSchedule.parse("0 0 0 30 2 *").next_after(start)  # 30 February never comes
    with pytest.raises(ScheduleError):
        resolve_settings("%MISSING%", {})


@pytest.mark.parametrize(("expression", "error"), [
    ("* * * *", "needs 6 fields"),
    ("0 0 0 * * * 2025", "needs 6 fields"),  # croniter would read a seventh field as the year
    ("61 * * * * *", "the second field, '61', is not valid (it takes 0-59)"),
    ("0 60 * * * *", "the minute field, '60', is not valid"),
    ("0 0 24 * * *", "the hour field, '24', is not valid"),
    ("0 0 0 32 * *", "the day field, '32', is not valid"),
    ("0 0 0 * 13 *", "the month field, '13', is not valid"),
    ("0 0 0 * * 8", "the day-of-week field, '8', is not valid"),
    ("*/0 * * * * *", "the second field, '*/0', is not valid"),
    ("x * * * * *", "the second field, 'x', is not *, n or a-b"),
    ("0 0 0 * Mon *", "the month field, 'Mon', is not valid"),
    ("5-1 * * * * *", "the second field's range '5-1' runs backwards"),  # croniter would wrap it
    ("0 0 0 * * Fri-Mon", "range 'Fri-Mon' runs backwards"),
    # croniter's own extensions are not NCRONTAB.
    ("0 0 0 L * *", "the day field, 'L', is not *, n or a-b"),
    ("0 0 0 * * 5#3", "the day-of-week field, '5#3', is not *, n or a-b"),
    ("0 0 0 ? * *", "the day field, '?', is not *, n or a-b"),
    ("H * * * * *", "the second field, 'H', is not *, n or a-b"),
])
def test_invalid_ncrontab_is_refused_naming_the_field(expression: str, error: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(expression)
    assert f"NCRONTAB {expression!r}" in str(raised.value) and error in str(raised.value)


@pytest.mark.parametrize(("value", "error"), [
    ("61 * * * * *", ("timer from_setting is disabled: schedule %SCHEDULE%: NCRONTAB '61 * * * * *': "
                      "the second field, '61', is not valid (it takes 0-59)")),
    ("0 0 0 30 2 *", "timer from_setting is disabled: schedule %SCHEDULE%: NCRONTAB '0 0 0 30 2 *' never fires"),
    ("", "timer from_setting is disabled: %SCHEDULE% does not resolve to a value (app setting SCHEDULE is not set)"),
])
def test_an_invalid_schedule_disables_its_timer_naming_the_function_and_the_setting(
    value: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    index = collect_functions(sample_app.app)
    runner = TimerRunner(index.timers, invoker=Invoker(), environ={"SCHEDULE": value})
    with caplog.at_level(logging.ERROR):
        runner.start()
        runner.stop()
    assert set(runner.schedules) == {"every_second"}
    assert error in caplog.text


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
        [sys.executable, "-m", "devtools.funchost", "--port", str(port), "--root", str(tmp_path),
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


@contextmanager
def cli_host(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, Callable[[], str]]]:
    """The local host's command line serving the sample app (no database: POSTGRES_HOST is set)."""
    port = free_port()
    log = tmp_path / f"host-{port}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "CORS_", "POLYMARKET_"))}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.funchost", "--port", str(port), "--root", str(tmp_path),
             "--app", "tests.fixtures.sample_app:app", "--no-timers", *args],
            cwd=ROOT, env={**base, "POSTGRES_HOST": "127.0.0.1", **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"{url}/api/hello", trust_env=False, timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None
        assert wait_for(answers, timeout=30) and process.poll() is None, log.read_text()
        yield url, log.read_text
    finally:
        process.terminate()
        process.wait(timeout=15)


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(f"{url}/api/hello", trust_env=False, timeout=5, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"})


def test_cli_allows_the_local_frontend_origins_by_default(tmp_path: Path) -> None:
    from shared.api.cors import EXPOSED_HEADERS

    with cli_host(tmp_path) as (url, output):
        for origin in LOCAL_CORS_ORIGINS:
            response = _preflight(url, origin)
            assert response.status_code == 204, origin
            assert response.headers["access-control-allow-origin"] == origin
            assert response.headers["access-control-allow-methods"] == "GET"
            assert response.headers["access-control-allow-headers"] == "if-none-match"
            assert int(response.headers["access-control-max-age"]) > 0
            assert "origin" in _vary(response)
            got = httpx.get(f"{url}/api/nope", headers={"Origin": origin}, trust_env=False, timeout=5)
            assert got.headers["access-control-allow-origin"] == origin
            assert got.headers["access-control-expose-headers"] == ", ".join(EXPOSED_HEADERS)
        for other in ("http://localhost:8080", "https://localhost:3000", "http://example.com"):
            assert "access-control-allow-origin" not in _preflight(url, other).headers, other
        # The app is handed the same list, so its own headers agree with the host's preflights.
        handed = httpx.get(f"{url}/api/cors-setting", trust_env=False, timeout=5).json()["CORS_ALLOWED_ORIGINS"]
        assert handed.split(",") == list(LOCAL_CORS_ORIGINS)
        assert "from the local defaults" in output()


def test_cli_cors_is_overridden_by_one_setting_then_the_flag(tmp_path: Path) -> None:
    setting = {"CORS_ALLOWED_ORIGINS": "https://app.example.com"}
    with cli_host(tmp_path, env=setting) as (url, _):
        assert _preflight(url, "https://app.example.com").headers["access-control-allow-origin"] == \
            "https://app.example.com"
        assert "access-control-allow-origin" not in _preflight(url, "http://localhost:3000").headers
        assert httpx.get(f"{url}/api/cors-setting", trust_env=False).json()["CORS_ALLOWED_ORIGINS"] == \
            "https://app.example.com"
    with cli_host(tmp_path, "--cors", "http://localhost:4200", env=setting) as (url, _):
        assert _preflight(url, "http://localhost:4200").headers["access-control-allow-origin"] == \
            "http://localhost:4200"
        assert "access-control-allow-origin" not in _preflight(url, "https://app.example.com").headers
        assert httpx.get(f"{url}/api/cors-setting", trust_env=False).json()["CORS_ALLOWED_ORIGINS"] == \
            "http://localhost:4200"
    with cli_host(tmp_path, "--cors", "none") as (url, output):
        assert _preflight(url, "http://localhost:3000").status_code == 405  # no CORS: the route is GET only
        assert "CORS is off" in output()
    bad = subprocess.run(
        [sys.executable, "-m", "devtools.funchost", "--root", str(tmp_path), "--cors", "localhost:3000",
         "--app", "tests.fixtures.sample_app:app", "--no-timers"],
        cwd=ROOT, env={**os.environ, "POSTGRES_HOST": "127.0.0.1"}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "CORS_ALLOWED_ORIGINS" in bad.stdout + bad.stderr


def test_cli_refuses_an_app_with_a_route_it_does_not_serve(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.funchost", "--root", str(tmp_path), "--port", str(free_port()),
         "--app", "tests.fixtures.sample_app:constrained", "--no-timers"],
        cwd=ROOT, env={**os.environ, "POSTGRES_HOST": "127.0.0.1"}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "function item_by_id: route 'api/items/{id:int}' has a route constraint, {id:int}," in output
    assert "Traceback" not in output


def test_demo_labels_and_allows_the_default_origins(tmp_path: Path) -> None:
    """`make demo` as it runs: the host's own answers and the app's 304s are labelled simulated."""
    port = free_port()
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "CORS_", "POLYMARKET_"))}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "devtools.demo", "--port", str(port), "--markets", "60"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"{url}/api/health", trust_env=False, timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None
        assert wait_for(answers, timeout=90) and process.poll() is None, log.read_text()
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as c:
            origin = {"Origin": "http://localhost:5173"}
            preflight = c.options("/api/markets", headers={**origin, "Access-Control-Request-Method": "GET"})
            assert preflight.status_code == 204 and preflight.headers["x-data-simulated"] == "true"
            assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
            for response in (c.get("/api/nope", headers=origin), c.post("/api/markets", headers=origin)):
                assert response.status_code in (404, 405)
                assert response.headers["x-data-simulated"] == "true" and response.json()["simulated"] is True
                assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
            page = c.get("/api/markets", params={"limit": "20"}, headers=origin)
            assert page.headers["content-encoding"] == "gzip" and page.json()["simulated"] is True
            again = c.get("/api/markets", params={"limit": "20"},
                          headers={**origin, "If-None-Match": page.headers["etag"]})
            assert again.status_code == 304 and again.headers["x-data-simulated"] == "true"
            assert {"origin", "accept-encoding"} <= _vary(again)
            assert again.headers["access-control-allow-origin"] == "http://localhost:5173"
            document = c.get("/api/openapi.json")
            assert document.headers["x-data-simulated"] == "true" and "simulated" not in document.json()
    finally:
        process.terminate()
        process.wait(timeout=30)
