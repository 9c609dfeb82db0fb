"""A local host for the Azure Functions app, for machines without Core Tools (dev-only).

``func start`` cannot be installed everywhere (it needs internet); this serves the app's
Python v2 programming-model functions the way Core Tools would, closely enough for development:

* ``local.settings.json`` ``Values`` go into the environment (the process environment wins);
* with no ``POSTGRES_HOST``, an embedded PostgreSQL is started (``devtools.embedded_db``);
* every HTTP trigger is served at ``/<routePrefix>/<route>`` (``host.json``), its route made of
  literal and ``{name}`` segments (a route with anything else is refused at start-up, naming the
  function), with 404/405 JSON errors; response bodies and headers pass through untouched (a
  gzip body stays gzip);
* CORS for the usual local frontend origins (``LOCAL_CORS_ORIGINS``) unless ``--cors``,
  ``CORS_ALLOWED_ORIGINS`` or ``Host.CORS`` says otherwise; the choice is also handed to the app
  as ``CORS_ALLOWED_ORIGINS``, so its own headers and the host's preflights agree;
* timer triggers run on their NCRONTAB schedules (computed by croniter) in background threads.

Auth levels are not enforced (Core Tools does not enforce keys locally either). ``devtools/`` is
kept out of the deployed package (.funcignore); in Azure the real Functions host does all this.

    python -m devtools.funchost [--port 7071] [--host 127.0.0.1] [--app function_app:app]
                                [--no-timers] [--cors ORIGINS] [--cors-credentials] [--root DIR]

In tests and benchmarks, ``LocalHost(app, port=0)`` serves an app in-process (``with`` it, then use
``.url``), and ``invoke_http(app, "GET", "/api/health")`` routes one request without a socket.

One concern per module:

* ``settings``: local.settings.json and host.json's routePrefix;
* ``routes``: route templates and matching paths to them;
* ``functions``: indexing a FunctionApp into HTTP and timer functions;
* ``invocation``: the ``context`` argument, output bindings, calling sync and async functions;
* ``messages``: the host's requests and responses, its JSON errors, converting return values;
* ``cors``: preflights, CORS headers, where the allowed origins come from;
* ``dispatch``: one request to one function, without sockets (404, 405, HEAD);
* ``timers``: timer schedules (NCRONTAB via croniter, TimeSpan) and running timer triggers;
* ``server``: ``LocalHost``, serving on a socket;
* ``__main__``: the command line.
"""

from devtools.funchost.cors import LOCAL_CORS_ORIGINS, CorsPolicy, resolve_cors
from devtools.funchost.dispatch import HttpDispatcher, invoke_http
from devtools.funchost.functions import (
    FunctionIndex,
    HttpFunction,
    TimerFunction,
    collect_functions,
    load_app,
)
from devtools.funchost.invocation import InvocationContext, Invoker
from devtools.funchost.messages import HostResponse, IncomingRequest
from devtools.funchost.routes import RouteError, RouteTemplate, split_path
from devtools.funchost.server import LocalHost
from devtools.funchost.settings import (
    DEFAULT_ROUTE_PREFIX,
    LocalSettings,
    SettingsError,
    apply_settings,
    load_local_settings,
    read_route_prefix,
)
from devtools.funchost.timers import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    TimerRunner,
    parse_schedule,
    resolve_settings,
    timer_zone,
)

__all__ = [
    "DEFAULT_ROUTE_PREFIX",
    "LOCAL_CORS_ORIGINS",
    "CorsPolicy",
    "CronSchedule",
    "FunctionIndex",
    "HostResponse",
    "HttpDispatcher",
    "HttpFunction",
    "IncomingRequest",
    "IntervalSchedule",
    "InvocationContext",
    "Invoker",
    "LocalHost",
    "LocalSettings",
    "RouteError",
    "RouteTemplate",
    "ScheduleError",
    "SettingsError",
    "TimerFunction",
    "TimerRunner",
    "apply_settings",
    "collect_functions",
    "invoke_http",
    "load_app",
    "load_local_settings",
    "parse_schedule",
    "read_route_prefix",
    "resolve_cors",
    "resolve_settings",
    "split_path",
    "timer_zone",
]
