"""Indexing a ``FunctionApp``: its HTTP and timer triggers, as this host runs them."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.funchost.routes import RouteError, RouteTemplate
from devtools.funchost.settings import DEFAULT_ROUTE_PREFIX

log = logging.getLogger(__name__)


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
    """Index a ``FunctionApp`` (or an iterable of built functions) into what this host can run.

    Raises ``RouteError``, naming the function, for a route this host does not serve.
    """
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
            try:
                template = RouteTemplate(prefixed)
            except RouteError as error:
                raise RouteError(f"function {name}: {error}") from None
            http.append(HttpFunction(
                name=name,
                template=template,
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
