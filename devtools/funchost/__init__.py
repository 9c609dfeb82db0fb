"""A local host for the Azure Functions app, for machines without Core Tools (dev-only).

``func start`` cannot be installed everywhere (it needs internet); this serves the app's
Python v2 programming-model functions the way Core Tools would, closely enough for development:

* ``local.settings.json`` ``Values`` go into the environment (the process environment wins);
* with no ``POSTGRES_HOST``, an embedded PostgreSQL is started (``devtools.embedded_db``);
* every HTTP trigger is served at ``/<routePrefix>/<route>`` (``host.json``), with Azure route
  templates (``{id:int}``, ``{name?}``, ``{*rest}``) and 404/405 JSON errors; response bodies
  and headers pass through untouched (a gzip body stays gzip);
* CORS for the usual local frontend origins (``LOCAL_CORS_ORIGINS``) unless ``--cors``,
  ``CORS_ALLOWED_ORIGINS`` or ``Host.CORS`` says otherwise; the choice is also handed to the app
  as ``CORS_ALLOWED_ORIGINS``, so its own headers and the host's preflights agree;
* timer triggers run on their NCRONTAB schedules in background threads.

Auth levels are not enforced (Core Tools does not enforce keys locally either). ``devtools/`` is
kept out of the deployed package (.funcignore); in Azure the real Functions host does all this.

    python -m devtools.funchost [--port 7071] [--host 127.0.0.1] [--app function_app:app]
                                [--no-timers] [--cors ORIGINS] [--cors-credentials] [--root DIR]

In tests and benchmarks, ``LocalHost(app, port=0)`` serves an app in-process (``with`` it, then use
``.url``), and ``invoke_http(app, "GET", "/api/health")`` routes one request without a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import azure.functions as func
from azure.functions.timer import TimerRequest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request

from devtools.funchost.ncrontab import Schedule, ScheduleError, parse_schedule, resolve_settings

log = logging.getLogger("devtools.funchost")

DEFAULT_PORT = 7071
DEFAULT_ROUTE_PREFIX = "api"
# The origins `make run` and `make demo` allow when nothing else is configured: the dev servers
# of the usual frontend tool chains (3000: Next.js, Create React App; 5173: Vite), by name and
# by address. Local only: the deployed app allows no origin unless CORS_ALLOWED_ORIGINS says so.
LOCAL_CORS_ORIGINS = ("http://localhost:3000", "http://localhost:5173", "http://127.0.0.1:3000",
                      "http://127.0.0.1:5173")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
# Hop-by-hop headers are the server's business, and the body length is recomputed here.
_DROPPED_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


# --- local.settings.json --------------------------------------------------------------------


class SettingsError(ValueError):
    """local.settings.json exists but cannot be used."""


@dataclass(frozen=True)
class LocalSettings:
    """What the host uses from ``local.settings.json``; ``path`` is None when there is none."""

    values: dict[str, str] = field(default_factory=dict)
    cors: str | None = None
    cors_credentials: bool = False
    local_http_port: int | None = None
    path: Path | None = None


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def load_local_settings(root: Path) -> LocalSettings:
    """Read ``<root>/local.settings.json``; a missing file means no settings."""
    path = root / "local.settings.json"
    if not path.is_file():
        return LocalSettings()
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise SettingsError(f"{path} is not valid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(document, dict):
        raise SettingsError(f"{path} must hold a JSON object")
    values: dict[str, str] = {}
    raw_values = document.get("Values") or {}
    if _truthy(document.get("IsEncrypted")):
        # Core Tools encrypts with a machine key we do not have; better no values than garbage.
        log.warning("%s is encrypted (IsEncrypted=true); its Values are ignored", path)
    elif isinstance(raw_values, dict):
        values = {str(k): _setting_text(v) for k, v in raw_values.items() if v is not None}
    host = document.get("Host") or {}
    cors = host.get("CORS")
    port = host.get("LocalHttpPort")
    return LocalSettings(
        values=values,
        cors=str(cors) if cors not in (None, "") else None,
        cors_credentials=_truthy(host.get("CORSCredentials")),
        local_http_port=int(port) if isinstance(port, int | str) and str(port).isdigit() else None,
        path=path,
    )


def apply_settings(
    values: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Copy settings into the environment without overwriting; returns (applied, kept) names."""
    env = os.environ if environ is None else environ
    applied: list[str] = []
    kept: list[str] = []
    for name, value in values.items():
        if name in env:
            kept.append(name)
        else:
            env[name] = value
            applied.append(name)
    return applied, kept


# --- host.json ------------------------------------------------------------------------------


def read_route_prefix(host_json: Path | Mapping[str, Any] | None) -> str:
    """``extensions.http.routePrefix`` from host.json (a path or parsed document); default ``api``."""
    if host_json is None:
        return DEFAULT_ROUTE_PREFIX
    if isinstance(host_json, Path):
        if not host_json.is_file():
            return DEFAULT_ROUTE_PREFIX
        host_json = json.loads(host_json.read_text(encoding="utf-8-sig"))
    http = ((host_json.get("extensions") or {}).get("http")) or {}
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    return DEFAULT_ROUTE_PREFIX if prefix is None else str(prefix).strip("/")


# --- route templates ------------------------------------------------------------------------


class RouteError(ValueError):
    """A route template that Azure would reject."""


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ALPHA_RE = re.compile(r"[A-Za-z]+")
Check = Callable[[str], bool]


def _integer_in(low: int, high: int) -> Check:
    return lambda value: bool(_INT_RE.fullmatch(value)) and low <= int(value) <= high


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _compile_constraint(name: str, args: tuple[str, ...]) -> Check | None:
    """ASP.NET Core route constraints, as Azure uses them; None for ones not checked here."""
    numbers: list[int] = []
    if name in ("min", "max", "range", "length", "minlength", "maxlength"):
        try:
            numbers = [int(arg) for arg in args]
        except ValueError:
            raise RouteError(f"constraint {name}({', '.join(args)}) needs integer arguments") from None
    elif args and name != "regex":
        return None  # e.g. a custom constraint with arguments: not ours to judge
    match name, numbers:
        case "int", []:
            return _integer_in(*_INT32)
        case "long", []:
            return _integer_in(*_INT64)
        case "bool", []:
            return lambda value: value.lower() in ("true", "false")
        case "alpha", []:
            return lambda value: bool(_ALPHA_RE.fullmatch(value))
        case "guid", []:
            return _is_guid
        case ("decimal" | "double" | "float"), []:
            return lambda value: bool(_FLOAT_RE.fullmatch(value))
        case "datetime", []:
            return _is_datetime
        case "min", [low]:
            return _integer_in(low, _INT64[1])
        case "max", [high]:
            return _integer_in(_INT64[0], high)
        case "range", [low, high]:
            return _integer_in(low, high)
        case "length", [exact]:
            return lambda value: len(value) == exact
        case "length", [low, high]:
            return lambda value: low <= len(value) <= high
        case "minlength", [low]:
            return lambda value: len(value) >= low
        case "maxlength", [high]:
            return lambda value: len(value) <= high
        case "required", []:
            return lambda value: value != ""
        case "regex", _:
            # Braces are doubled in templates; Azure matches case-insensitively, unanchored.
            pattern = re.compile(args[0].replace("{{", "{").replace("}}", "}"), re.IGNORECASE)
            return lambda value: pattern.search(value) is not None
    return None


@dataclass(frozen=True)
class RouteParameter:
    name: str
    constraints: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    optional: bool = False
    default: str | None = None
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


def _parse_parameter(body: str, template: str) -> tuple[RouteParameter, list[str]]:
    """Parse ``*name:c1:c2(arg)?`` / ``name=default``; returns the parameter and unknown constraints."""
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    name_match = re.match(r"[^:=?]+", body)
    if not name_match:
        raise RouteError(f"route {template!r}: a parameter has no name")
    name, rest = name_match.group(0).strip(), body[name_match.end():]
    constraints: list[str] = []
    checks: list[Check] = []
    unknown: list[str] = []
    while rest.startswith(":"):
        constraint = re.match(r":([A-Za-z_]\w*)", rest)
        if not constraint:
            raise RouteError(f"route {template!r}: bad constraint in {{{body}}}")
        kind, rest = constraint.group(1).lower(), rest[constraint.end():]
        args: tuple[str, ...] = ()
        if rest.startswith("("):
            depth = 0
            for end, char in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
            else:
                raise RouteError(f"route {template!r}: unbalanced parentheses in {{{body}}}")
            inner, rest = rest[1:end], rest[end + 1:]
            args = (inner,) if kind == "regex" else tuple(arg.strip() for arg in inner.split(","))
        check = _compile_constraint(kind, args)
        constraints.append(kind)
        if check is None:
            unknown.append(kind)
        else:
            checks.append(check)
    optional, default = False, None
    if rest.startswith("="):
        default, rest = rest[1:], ""
    elif rest == "?":
        optional, rest = True, ""
    if rest:
        raise RouteError(f"route {template!r}: cannot parse {{{body}}}")
    parameter = RouteParameter(name, tuple(constraints), tuple(checks), optional, default, catch_all)
    return parameter, unknown


Part = str | RouteParameter


def _tokenize(template: str) -> tuple[list[list[Part]], list[str]]:
    """Split a template into segments of literal text and parameters (``{{``/``}}`` escape braces)."""
    segments: list[list[Part]] = [[]]
    literal: list[str] = []
    unknown: list[str] = []

    def flush() -> None:
        if literal:
            segments[-1].append("".join(literal))
            literal.clear()

    i = 0
    while i < len(template):
        char = template[i]
        if template.startswith("{{", i) or template.startswith("}}", i):
            literal.append(char)
            i += 2
        elif char == "{":
            depth, end = 0, i + 1
            while end < len(template) and not (template[end] == "}" and depth == 0):
                depth += {"(": 1, ")": -1}.get(template[end], 0)
                end += 1
            if end >= len(template):
                raise RouteError(f"route {template!r}: unclosed '{{'")
            flush()
            parameter, bad = _parse_parameter(template[i + 1:end], template)
            segments[-1].append(parameter)
            unknown.extend(bad)
            i = end + 1
        elif char == "}":
            raise RouteError(f"route {template!r}: unmatched '}}'")
        elif char == "/":
            flush()
            segments.append([])
            i += 1
        else:
            literal.append(char)
            i += 1
    flush()
    return segments, unknown


@dataclass(frozen=True)
class RouteSegment:
    parts: tuple[Part, ...]
    pattern: re.Pattern[str] | None = None  # only for complex segments such as "{name}.{ext}"

    @property
    def literal(self) -> str | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], str) else None

    @property
    def parameter(self) -> RouteParameter | None:
        only = self.parts[0] if len(self.parts) == 1 else None
        return only if isinstance(only, RouteParameter) else None

    @property
    def precedence(self) -> int:
        # ASP.NET Core inbound precedence: literal, complex, constrained, plain, catch-all.
        if self.literal is not None:
            return 1
        parameter = self.parameter
        if parameter is None:
            return 2
        if parameter.catch_all:
            return 5
        return 3 if parameter.constraints else 4


def _segment(parts: list[Part]) -> RouteSegment:
    if len(parts) <= 1:
        return RouteSegment(tuple(parts))
    regex: list[str] = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            regex.append(re.escape(part))
        else:
            if part.catch_all:
                raise RouteError("a catch-all parameter must be a whole segment")
            regex.append(f"(?P<p{index}>.+?)" + ("?" if part.optional else ""))
    return RouteSegment(tuple(parts), re.compile("".join(regex), re.IGNORECASE | re.DOTALL))


class RouteTemplate:
    """An Azure (ASP.NET Core) route template, prefix included, e.g. ``api/items/{id:int}``."""

    def __init__(self, template: str) -> None:
        self.text = template.strip("/")
        raw_segments, self.unknown_constraints = _tokenize(self.text) if self.text else ([], [])
        if any(not parts for parts in raw_segments):
            raise RouteError(f"route {template!r} has an empty segment")
        self.segments = tuple(_segment(parts) for parts in raw_segments)
        names = [p.name.lower() for s in self.segments for p in s.parts if isinstance(p, RouteParameter)]
        if len(names) != len(set(names)):
            raise RouteError(f"route {template!r} repeats a parameter name")
        for segment in self.segments[:-1]:
            if segment.parameter and segment.parameter.catch_all:
                raise RouteError(f"route {template!r}: a catch-all parameter must come last")
        self.precedence = tuple(segment.precedence for segment in self.segments)

    def __repr__(self) -> str:
        return f"RouteTemplate({self.text!r})"

    def match(self, path_segments: Sequence[str]) -> dict[str, str] | None:
        """Route values when the (decoded) path segments match, else None."""
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            parameter = segment.parameter
            if parameter is not None and parameter.catch_all:
                rest = "/".join(path_segments[index:])
                if rest:
                    if not parameter.accepts(rest):
                        return None
                    values[parameter.name] = rest
                elif parameter.default is not None:
                    values[parameter.name] = parameter.default
                return values
            if index >= len(path_segments):
                if parameter is not None and (parameter.optional or parameter.default is not None):
                    if parameter.default is not None:
                        values[parameter.name] = parameter.default
                    continue
                return None
            text = path_segments[index]
            if segment.literal is not None:
                if text.casefold() != segment.literal.casefold():
                    return None
            elif parameter is not None:
                if not text or not parameter.accepts(text):
                    return None
                values[parameter.name] = text
            elif not self._match_complex(segment, text, values):
                return None
        return values if len(path_segments) <= len(self.segments) else None

    @staticmethod
    def _match_complex(segment: RouteSegment, text: str, values: dict[str, str]) -> bool:
        assert segment.pattern is not None
        found = segment.pattern.fullmatch(text)
        if not found:
            return False
        for index, part in enumerate(segment.parts):
            if isinstance(part, RouteParameter):
                value = found.group(f"p{index}")
                if value is None:
                    continue
                if not part.accepts(value):
                    return False
                values[part.name] = value
        return True


def split_path(path: str) -> list[str]:
    """Decoded request path to segments; one trailing slash is ignored, as ASP.NET Core does."""
    path = path.lstrip("/")
    path = path.removesuffix("/")
    return path.split("/") if path else []


# --- function discovery ---------------------------------------------------------------------


@dataclass(frozen=True)
class HttpFunction:
    name: str
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    binding_name: str
    user_function: Callable[..., Any]
    wants_context: bool = False
    output_name: str | None = None  # a named http output binding (func.Out), not $return
    auth_level: str = "anonymous"

    def accepts(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def method_list(self) -> str:
        return ",".join(sorted(self.methods)) if self.methods is not None else "ALL"


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str  # as declared, before %SETTING% resolution
    binding_name: str
    user_function: Callable[..., Any]
    run_on_startup: bool = False
    wants_context: bool = False


@dataclass(frozen=True)
class FunctionIndex:
    http: tuple[HttpFunction, ...]
    timers: tuple[TimerFunction, ...]
    unsupported: tuple[str, ...] = ()  # "name (queueTrigger)" for triggers this host cannot run


def _wants_context(user_function: Callable[..., Any]) -> bool:
    # The Python worker passes the invocation context to a parameter named "context".
    try:
        return "context" in inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        return False


def _app_functions(app: Any) -> list[Any]:
    # get_functions() remembers the names it has seen to reject duplicates, so a second call on
    # the same app fails; the worker calls it once per process, tests build several hosts.
    seen = getattr(app, "functions_bindings", None)
    if hasattr(app, "functions_bindings"):
        app.functions_bindings = None
    try:
        return list(app.get_functions())
    finally:
        if hasattr(app, "functions_bindings"):
            app.functions_bindings = seen


def collect_functions(app: Any, route_prefix: str = DEFAULT_ROUTE_PREFIX) -> FunctionIndex:
    """Index a ``FunctionApp`` (or an iterable of built functions) into what this host can run."""
    functions = _app_functions(app) if hasattr(app, "get_functions") else list(app)
    http: list[HttpFunction] = []
    timers: list[TimerFunction] = []
    unsupported: list[str] = []
    for function in functions:
        name = function.get_function_name()
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        user_function = function.get_user_function()
        kind = trigger.get("type") if trigger else None
        if kind == "httpTrigger" and trigger is not None:
            route = trigger.get("route") or name
            prefixed = "/".join(part for part in (route_prefix.strip("/"), route.strip("/")) if part)
            methods = trigger.get("methods")
            outputs = [b for b in bindings if b.get("type") == "http" and b.get("name") != "$return"]
            others = [b.get("type") for b in bindings if b.get("type") not in ("httpTrigger", "http")]
            if others:
                log.warning("%s: bindings %s are not provided by the local host", name, others)
            http.append(HttpFunction(
                name=name,
                template=RouteTemplate(prefixed),
                methods=frozenset(str(m).upper() for m in methods) if methods else None,
                binding_name=trigger["name"],
                user_function=user_function,
                wants_context=_wants_context(user_function),
                output_name=outputs[0]["name"] if outputs else None,
                auth_level=str(trigger.get("authLevel") or "anonymous").lower(),
            ))
        elif kind == "timerTrigger" and trigger is not None:
            timers.append(TimerFunction(
                name=name,
                schedule=str(trigger.get("schedule", "")),
                binding_name=trigger["name"],
                user_function=user_function,
                run_on_startup=bool(trigger.get("runOnStartup")),
                wants_context=_wants_context(user_function),
            ))
        else:
            unsupported.append(f"{name} ({kind or 'no trigger'})")
    return FunctionIndex(tuple(http), tuple(timers), tuple(unsupported))


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute or "app")
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute or 'app'!r}") from None


# --- invocation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceContext:
    trace_parent: str
    trace_state: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryContext:
    retry_count: int = 0
    max_retry_count: int = 0
    exception: Any = None


class InvocationContext(func.Context):
    """The ``context`` argument: what the Python worker provides, as far as it makes sense locally."""

    def __init__(self, function_name: str, function_directory: str, trace_context: TraceContext) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = trace_context
        self._retry_context = RetryContext()
        self._thread_local_storage = threading.local()
        self._thread_local_storage.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace_context

    @property
    def retry_context(self) -> Any:
        return self._retry_context


class _Out(func.Out):
    """A named output binding: the function sets its response here instead of returning it."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def _trace_context(headers: Mapping[str, str]) -> TraceContext:
    parent = headers.get("traceparent")
    if not parent:
        parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return TraceContext(trace_parent=parent, trace_state=headers.get("tracestate", ""))


class Invoker:
    """Calls user functions: sync ones on the caller's thread, async ones on one shared event loop.

    One long-lived loop (as in the Python worker) keeps loop-bound clients usable across calls.
    """

    def __init__(self, function_directory: Path | None = None) -> None:
        self.function_directory = str(function_directory or Path.cwd())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def context(self, function_name: str, headers: Mapping[str, str] | None = None) -> InvocationContext:
        return InvocationContext(function_name, self.function_directory, _trace_context(headers or {}))

    def call(self, user_function: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
        result = user_function(**kwargs)
        if inspect.isawaitable(result):
            return asyncio.run_coroutine_threadsafe(_awaited(result), self._event_loop()).result()
        return result

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="local-host-async", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


# --- requests and responses -----------------------------------------------------------------


# What the app puts on every answer in demo mode (shared.http); the host's own answers match it.
SIMULATED_HEADER = ("X-Data-Simulated", "true")


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str  # decoded, without the query string
    url: str = ""
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True)
class HostResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> HostResponse:
        return replace(self, headers=(*self.headers, *extra))


def error_response(status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = (), *,
                   simulated: bool = False) -> HostResponse:
    """The host's own JSON error; in demo mode labelled like the app's answers."""
    document: dict[str, Any] = {"error": {"code": code, "message": message}}
    labels: tuple[tuple[str, str], ...] = ()
    if simulated:
        document["simulated"] = True
        labels = (SIMULATED_HEADER,)
    body = json.dumps(document).encode()
    return HostResponse(status, (("Content-Type", "application/json"), *headers, *labels), body)


def _joined(pairs: Iterable[tuple[str, str]], separator: str) -> dict[str, str]:
    # The host hands repeated query parameters / headers to the worker as one joined value.
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]}{separator}{value}" if key in joined else value
    return joined


def to_host_response(result: Any) -> HostResponse:
    """Convert a function's return value the way the worker's http output converter does."""
    if result is None:
        return HostResponse(204)
    if isinstance(result, str):
        return HostResponse(200, (("Content-Type", "text/plain; charset=utf-8"),), result.encode())
    if isinstance(result, bytes | bytearray):
        return HostResponse(200, (("Content-Type", "application/octet-stream"),), bytes(result))
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")
    headers = [(str(k), str(v)) for k, v in result.headers.items()
               if str(k).lower() not in _DROPPED_RESPONSE_HEADERS]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = result.mimetype
        content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        headers.append(("Content-Type", content_type))
    return HostResponse(int(result.status_code), tuple(headers), result.get_body() or b"")


# --- CORS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorsPolicy:
    """Core Tools' CORS: listed origins (or ``*``), any method and header, optional credentials.

    ``expose_headers`` go in Access-Control-Expose-Headers of the answers the host completes (its
    own errors, and an app's answers that carry no CORS headers of their own).
    """

    origins: frozenset[str] = frozenset()
    any_origin: bool = False
    credentials: bool = False
    max_age: int = 86400
    expose_headers: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str | None, *, credentials: bool = False,
              expose_headers: Sequence[str] = ()) -> CorsPolicy | None:
        """``"http://a, http://b"`` or ``"*"``; None (no CORS at all) for an empty spec or ``none``."""
        items = [item.strip().rstrip("/").lower() for item in (spec or "").split(",") if item.strip()]
        if not items or items == ["none"]:
            return None
        return cls(frozenset(i for i in items if i != "*"), "*" in items, credentials,
                   expose_headers=tuple(expose_headers))

    @property
    def wildcard(self) -> bool:
        """``*`` is sent as such (the same answer for every origin) unless credentials are on."""
        return self.any_origin and not self.credentials

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.wildcard:
            return [("Access-Control-Allow-Origin", "*")]
        # Browsers refuse "*" with credentials, so echo the origin (and say responses vary by it).
        headers = [("Access-Control-Allow-Origin", origin)]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight(self, origin: str, method: str, request_headers: str | None) -> HostResponse:
        """Answer an OPTIONS preflight; like ASP.NET Core, a disallowed origin gets no CORS headers.

        The answer echoes the origin, method and headers asked for, so it varies by all three.
        """
        headers: list[tuple[str, str]] = [
            ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if self.allows(origin):
            headers += self._origin_headers(origin)
            headers.append(("Access-Control-Allow-Methods", method.upper()))
            if request_headers:
                headers.append(("Access-Control-Allow-Headers", request_headers))
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        return HostResponse(204, tuple(headers))

    def apply(self, response: HostResponse, origin: str | None) -> HostResponse:
        """Add CORS headers to an actual response; the app's own Access-Control-Allow-Origin wins.

        Unless the policy is a plain ``*`` (sent to everyone), what the answer says depends on the
        Origin, so it says ``Vary: Origin`` even to a request without one: a shared cache could
        otherwise hand that copy to a browser.
        """
        if response.header("Access-Control-Allow-Origin") is not None:
            return response
        allowed = self.wildcard or (origin is not None and self.allows(origin))
        headers = [(k, v) for k, v in response.headers if k.lower() != "vary"]
        vary = [v.strip() for v in (response.header("Vary") or "").split(",") if v.strip()]
        if "origin" not in (v.lower() for v in vary) and not self.wildcard:
            vary.append("Origin")
        if vary:
            headers.append(("Vary", ", ".join(vary)))
        if allowed:
            headers += self._origin_headers(origin or "*")
            if self.expose_headers and response.header("Access-Control-Expose-Headers") is None:
                headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return replace(response, headers=tuple(headers))


def resolve_cors(cli: str | None, environ: Mapping[str, str], settings: LocalSettings) -> tuple[str, str]:
    """The origins the local host allows, and where they came from: ``--cors``, else
    ``CORS_ALLOWED_ORIGINS`` (process environment or local.settings.json ``Values``), else
    ``Host.CORS``, else ``LOCAL_CORS_ORIGINS``. ``none`` turns CORS off."""
    if cli is not None and cli.strip():
        return cli.strip(), "--cors"
    configured = (environ.get("CORS_ALLOWED_ORIGINS") or "").strip()
    if configured:
        return configured, "CORS_ALLOWED_ORIGINS"
    if settings.cors:
        return settings.cors, f"Host.CORS in {settings.path}"
    return ",".join(LOCAL_CORS_ORIGINS), "the local defaults"


# --- HTTP dispatch --------------------------------------------------------------------------


class HttpDispatcher:
    """Routing, invocation and CORS for one request, with no sockets involved."""

    def __init__(
        self, functions: Sequence[HttpFunction], *, cors: CorsPolicy | None = None,
        invoker: Invoker | None = None, simulated: bool = False,
    ) -> None:
        self.functions = tuple(functions)
        self.cors = cors
        self.invoker = invoker or Invoker()
        # Demo mode: the host's own answers (errors, preflights) are labelled as the app's are.
        self.simulated = simulated
        self._ambiguities_reported: set[tuple[str, str]] = set()

    def host_error(self, status: int, code: str, message: str,
                   headers: Iterable[tuple[str, str]] = ()) -> HostResponse:
        return error_response(status, code, message, headers, simulated=self.simulated)

    def dispatch(self, request: IncomingRequest) -> HostResponse:
        origin = request.header("Origin")
        requested_method = request.header("Access-Control-Request-Method")
        if self.cors and request.method == "OPTIONS" and origin and requested_method:
            response = self.cors.preflight(origin, requested_method, request.header("Access-Control-Request-Headers"))
            return response.with_headers([SIMULATED_HEADER]) if self.simulated else response
        response = self._route(request)
        if self.cors:
            response = self.cors.apply(response, origin)
        return response

    def _route(self, request: IncomingRequest) -> HostResponse:
        method = request.method.upper()
        segments = split_path(request.path)
        matches = [(fn, values) for fn in self.functions if (values := fn.template.match(segments)) is not None]
        if not matches:
            return self.host_error(404, "not_found", f"no function is registered for {request.path}")
        candidates = [m for m in matches if m[0].accepts(method)]
        if not candidates and method == "HEAD":
            candidates = [m for m in matches if m[0].accepts("GET")]
        if not candidates:
            allowed = sorted({m for fn, _ in matches for m in (fn.methods or ALL_METHODS)})
            return self.host_error(
                405, "method_not_allowed", f"{method} is not allowed for {request.path}",
                (("Allow", ", ".join(allowed)),),
            )
        # Most specific template wins (literal over parameter); ties go to registration order.
        candidates.sort(key=lambda m: m[0].template.precedence)
        function, route_params = candidates[0]
        if len(candidates) > 1 and candidates[1][0].template.precedence == function.template.precedence:
            self._report_ambiguity(function, candidates[1][0])
        response = self.invoke(function, request, route_params)
        if method == "HEAD":
            # Same headers as GET (Content-Length included), no body.
            length = str(len(response.body))
            headers = (*(h for h in response.headers if h[0].lower() != "content-length"), ("Content-Length", length))
            response = replace(response, headers=headers, body=b"")
        return response

    def _report_ambiguity(self, first: HttpFunction, second: HttpFunction) -> None:
        key = (first.name, second.name)
        if key not in self._ambiguities_reported:
            self._ambiguities_reported.add(key)
            log.warning("routes of %s and %s are ambiguous; using %s (Azure would fail the request)",
                        first.name, second.name, first.name)

    def invoke(self, function: HttpFunction, request: IncomingRequest, route_params: Mapping[str, str]) -> HostResponse:
        headers = _joined(request.headers, ", ")
        req = func.HttpRequest(
            request.method.upper(), request.url or request.path, headers=headers,
            params=_joined(request.query, ","), route_params=dict(route_params), body=request.body,
        )
        kwargs: dict[str, Any] = {function.binding_name: req}
        out = _Out() if function.output_name else None
        if function.output_name:
            kwargs[function.output_name] = out
        context = self.invoker.context(function.name, req.headers)
        if function.wants_context:
            kwargs["context"] = context
        try:
            result = self.invoker.call(function.user_function, kwargs)
            if result is None and out is not None:
                result = out.get()
            return to_host_response(result)
        except Exception:
            # Logged with its traceback; the client only learns that something failed, as in Azure.
            log.exception("function %s failed (invocation %s)", function.name, context.invocation_id)
            return self.host_error(500, "internal", "internal error")


def invoke_http(
    app_or_functions: Any, method: str, path: str, *, query: str | Mapping[str, str] = "",
    headers: Mapping[str, str] | None = None, body: bytes = b"", route_prefix: str = DEFAULT_ROUTE_PREFIX,
    cors: CorsPolicy | None = None,
) -> HostResponse:
    """Route and invoke one request against an app without a server (handy in tests)."""
    from urllib.parse import parse_qsl, urlencode

    functions = app_or_functions
    if not (isinstance(functions, Sequence) and all(isinstance(f, HttpFunction) for f in functions)):
        functions = collect_functions(app_or_functions, route_prefix).http
    pairs = tuple(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else tuple(query.items())
    url = f"http://localhost{path}" + (f"?{urlencode(pairs)}" if pairs else "")
    request = IncomingRequest(method.upper(), path, url, pairs, tuple((headers or {}).items()), body)
    dispatcher = HttpDispatcher(functions, cors=cors)
    try:
        return dispatcher.dispatch(request)
    finally:
        dispatcher.invoker.close()


# --- timers ---------------------------------------------------------------------------------


def timer_zone(environ: Mapping[str, str]) -> tzinfo:
    """UTC unless WEBSITE_TIME_ZONE names an IANA zone (as on Linux plans)."""
    name = (environ.get("WEBSITE_TIME_ZONE") or "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("WEBSITE_TIME_ZONE=%r is not an IANA time zone; timers use UTC", name)
        return UTC


class TimerRunner:
    """Runs each timer trigger on its own thread, so one slow timer never delays another.

    Runs of one timer never overlap (as in Azure); occurrences missed while a run was still going
    are skipped. Failures are logged and the schedule carries on.
    """

    past_due_after = timedelta(seconds=1)

    def __init__(self, timers: Sequence[TimerFunction], invoker: Invoker,
                 environ: Mapping[str, str] | None = None) -> None:
        self.timers = tuple(timers)
        self.invoker = invoker
        self.environ = os.environ if environ is None else environ
        self.zone = timer_zone(self.environ)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.schedules: dict[str, Schedule] = {}

    def start(self) -> None:
        for timer in self.timers:
            try:
                schedule = parse_schedule(resolve_settings(timer.schedule, self.environ))
                schedule.next_after(self._now())  # fail now, not in the thread, if it never fires
            except ScheduleError as error:
                log.error("timer %s is disabled: %s", timer.name, error)
                continue
            self.schedules[timer.name] = schedule
            thread = threading.Thread(target=self._run, args=(timer, schedule), name=f"timer-{timer.name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s is still running a function; leaving it behind", thread.name)
        self._threads.clear()

    def _now(self) -> datetime:
        return datetime.now(self.zone)

    def _run(self, timer: TimerFunction, schedule: Schedule) -> None:
        last: datetime | None = None
        if timer.run_on_startup:
            now = self._now()
            self._fire(timer, now, last, schedule.next_after(now))
            last = now
        scheduled = schedule.next_after(self._now())
        while True:
            while (delay := (scheduled - self._now()).total_seconds()) > 0:
                if self._stop.wait(delay):
                    return
            if self._stop.is_set():
                return
            # Strictly after both the occurrence and now: an early wake-up cannot fire twice,
            # and occurrences missed during a long run are skipped.
            following = schedule.next_after(max(scheduled, self._now()))
            self._fire(timer, scheduled, last, following)
            last, scheduled = scheduled, schedule.next_after(max(scheduled, self._now()))

    def _fire(self, timer: TimerFunction, scheduled: datetime, last: datetime | None, following: datetime) -> None:
        now = self._now()
        request = TimerRequest(
            past_due=now - scheduled > self.past_due_after,
            schedule_status={
                "Last": last.isoformat() if last else None,
                "Next": following.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        kwargs: dict[str, Any] = {timer.binding_name: request}
        context = self.invoker.context(timer.name)
        if timer.wants_context:
            kwargs["context"] = context
        started = time.perf_counter()
        try:
            self.invoker.call(timer.user_function, kwargs)
        except Exception:
            log.exception("timer %s failed (invocation %s)", timer.name, context.invocation_id)
        else:
            log.info("timer %s ran in %.1f ms", timer.name, (time.perf_counter() - started) * 1000)


# --- server ---------------------------------------------------------------------------------


class _QuietRequestHandler(WSGIRequestHandler):
    # LocalHost logs one line per request itself (with timing); werkzeug's would duplicate it.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class LocalHost:
    """Serve an app's functions on a real socket; ``port=0`` picks a free port (see ``.url``).

    ``with LocalHost(app) as host: httpx.get(host.url + "/api/health")``
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        host_json: Path | Mapping[str, Any] | None = None,
        route_prefix: str | None = None,
        cors: CorsPolicy | str | None = None,
        run_timers: bool = False,
        root: Path | None = None,
        simulated: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.route_prefix = route_prefix.strip("/") if route_prefix is not None else read_route_prefix(host_json)
        self.index = collect_functions(app, self.route_prefix)
        for function in self.index.http:
            for constraint in function.template.unknown_constraints:
                log.warning("%s: route constraint %r is not checked locally", function.name, constraint)
        self.cors = CorsPolicy.parse(cors) if isinstance(cors, str) else cors
        self.invoker = Invoker(root)
        self.dispatcher = HttpDispatcher(self.index.http, cors=self.cors, invoker=self.invoker, simulated=simulated)
        self.timers = TimerRunner(self.index.timers, self.invoker) if run_timers else None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._timers_started = False

    @property
    def url(self) -> str:
        """Base URL, without the route prefix, e.g. ``http://127.0.0.1:7071``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, start_timers: bool = True) -> Self:
        if self._server is not None:
            return self
        self._server = make_server(self.host, self.port, self.wsgi_app, threaded=True,
                                   request_handler=_QuietRequestHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-host-http", daemon=True)
        self._thread.start()
        if start_timers:
            self.start_timers()
        return self

    def start_timers(self) -> None:
        """Start the timer triggers (when ``run_timers``); ``start()`` does this unless told not to."""
        if self.timers and not self._timers_started:
            self._timers_started = True
            self.timers.start()

    def stop(self) -> None:
        if self.timers:
            self.timers.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.invoker.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def describe(self) -> list[str]:
        """One line per function, as Core Tools lists them at start-up."""
        lines = [f"{fn.name}: [{fn.method_list}] {self.url}/{fn.template.text}" for fn in self.index.http]
        for timer in self.index.timers:
            state = "" if self.timers else ", not running (--no-timers)"
            lines.append(f"{timer.name}: timerTrigger ({timer.schedule}{state})")
        lines += [f"{entry}: not supported by the local host" for entry in self.index.unsupported]
        return lines

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        try:
            incoming = IncomingRequest(
                method=request.method.upper(),
                path=request.path,
                url=request.url,
                query=tuple(request.args.items(multi=True)),
                headers=tuple(request.headers.items()),
                body=request.get_data(cache=False),
            )
            response = self.dispatcher.dispatch(incoming)
        except Exception:
            log.exception("local host failed on %s %s", request.method, request.path)
            response = self.dispatcher.host_error(500, "internal", "internal error")
        headers = [(k, v) for k, v in response.headers if k.lower() not in _DROPPED_RESPONSE_HEADERS]
        no_body = response.status in (204, 304) or 100 <= response.status < 200
        if not no_body:
            # A HEAD answer keeps the length GET would have (the dispatcher put it in the headers).
            length = response.header("Content-Length") if request.method == "HEAD" else None
            headers.append(("Content-Length", length or str(len(response.body))))
        if request.method == "HEAD":
            no_body = True
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        start_response(f"{response.status} {phrase}", headers)
        log.info("%s %s %d %.1fms", request.method, request.path, response.status,
                 (time.perf_counter() - started) * 1000)
        return [] if no_body else [response.body]


# --- command line ---------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.funchost",
        description="Serve the Azure Functions app locally, like `func start` (dev-only).",
    )
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: Host.LocalHttpPort from local.settings.json, else {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer triggers")
    parser.add_argument("--cors", default=None,
                        help="allowed origins, comma-separated, '*' or 'none' (overrides CORS_ALLOWED_ORIGINS "
                             "and Host.CORS; default: " + ", ".join(LOCAL_CORS_ORIGINS) + ")")
    parser.add_argument("--cors-credentials", action="store_true", default=None,
                        help="allow credentials in CORS requests (overrides Host.CORSCredentials)")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="project root with host.json, local.settings.json and .devdata (default: cwd)")
    return parser.parse_args(argv)


def _load_settings(root: Path) -> LocalSettings:
    settings = load_local_settings(root)
    if not settings.path:
        log.info("no local.settings.json in %s; using the process environment only", root)
        return settings
    applied, kept = apply_settings(settings.values)
    # Names only: values can be secrets.
    log.info("loaded %d settings from %s: %s", len(applied), settings.path, ", ".join(applied) or "-")
    if kept:
        log.info("kept from the process environment: %s", ", ".join(kept))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root: Path = args.root.resolve()

    # Installed first so a Ctrl+C during start-up still shuts down cleanly (and stops the db).
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        settings = _load_settings(root)
    except ValueError as error:
        log.error("%s", error)
        return 2

    # Azure requires these app settings (triggers reference them as %NAME%); deploy.sh sets them.
    from shared.config import TRIGGER_SETTING_DEFAULTS, ConfigError, parse_cors_origins, read_simulated

    for name, value in TRIGGER_SETTING_DEFAULTS.items():
        os.environ.setdefault(name, value)

    # One list of origins for the host's preflights and the app's own headers: the app reads it
    # from CORS_ALLOWED_ORIGINS, so the host hands it the list it answers preflights with.
    cors_spec, cors_source = resolve_cors(args.cors, os.environ, settings)
    try:
        parse_cors_origins(cors_spec)
        simulated = read_simulated()
    except ConfigError as error:
        log.error("%s", error)
        return 2
    os.environ["CORS_ALLOWED_ORIGINS"] = cors_spec

    from devtools.embedded_db import ensure_database

    try:
        database = ensure_database(root)
    except Exception:
        log.exception("could not start the embedded PostgreSQL; set POSTGRES_HOST to use another server")
        return 1

    try:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        credentials = args.cors_credentials if args.cors_credentials is not None else settings.cors_credentials
        port = args.port if args.port is not None else (settings.local_http_port or DEFAULT_PORT)
        try:
            app = load_app(args.app)
            from shared.http import EXPOSED_HEADERS

            host = LocalHost(
                app, host=args.host, port=port, host_json=root / "host.json",
                cors=CorsPolicy.parse(cors_spec, credentials=credentials, expose_headers=EXPOSED_HEADERS),
                run_timers=not args.no_timers, root=root, simulated=simulated,
            )
        except Exception:
            log.exception("cannot load the functions of %s", args.app)
            return 1
        try:
            host.start(start_timers=False)
        except OSError as error:
            log.error("cannot listen on %s:%s: %s", args.host, port, error)
            return 1
        try:
            log.info("Functions:")
            for line in host.describe():
                log.info("    %s", line)
            if host.cors:
                origins = "*" if host.cors.any_origin else ", ".join(sorted(host.cors.origins))
                log.info("CORS allows %s (from %s)%s", origins, cors_source,
                         " (with credentials)" if host.cors.credentials else "")
            else:
                log.info("CORS is off (from %s)", cors_source)
            if simulated:
                log.info("demo mode: the host's own answers are labelled X-Data-Simulated too")
            log.info("listening on %s (Ctrl+C to stop)", host.url)
            host.start_timers()  # after the listing, so runOnStartup output follows it
            while not stopping.wait(0.5):
                pass
        finally:
            host.stop()
        log.info("stopped")
        return 0
    finally:
        if database is not None:
            database.stop()
