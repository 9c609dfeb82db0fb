"""Indexing guard: what Azure sees when it imports function_app with no environment at all.

Azure indexes functions by importing the module; an import that fails, or a handler parameter
that is not a binding, makes it silently index zero functions.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (route, methods, auth level); timers -> ("timer", schedule)
EXPECTED_HTTP = {
    "health_check": ("health", ["GET"], "ANONYMOUS"),
    "list_markets": ("markets", ["GET"], "ANONYMOUS"),
    "get_market": ("markets/{market}", ["GET"], "ANONYMOUS"),
    "resolve": ("resolve", ["GET"], "ANONYMOUS"),
    "list_tags": ("tags", ["GET"], "ANONYMOUS"),
    "get_market_sentiment": ("markets/{condition_id}/sentiment", ["GET"], "ANONYMOUS"),
    "list_events": ("events", ["GET"], "ANONYMOUS"),
    "get_event": ("events/{event}", ["GET"], "ANONYMOUS"),
    "get_price": ("price/{token_id}", ["GET"], "ANONYMOUS"),
    "get_price_candles": ("price/{token_id}/candles", ["GET"], "ANONYMOUS"),
    "get_prices": ("prices", ["GET"], "ANONYMOUS"),
    "get_book": ("book/{token_id}", ["GET"], "ANONYMOUS"),
    "get_openapi_document": ("openapi.json", ["GET"], "ANONYMOUS"),
    "get_api_docs": ("docs", ["GET"], "ANONYMOUS"),
    "get_api_docs_asset": ("docs/{asset}", ["GET"], "ANONYMOUS"),
}
EXPECTED_TIMERS = {
    "refresh_markets": "%MARKETS_REFRESH_SCHEDULE%",
    "backfill_price_history": "%MARKETS_REFRESH_SCHEDULE%",
    "prune_price_history": "%PRICE_HISTORY_PRUNE_SCHEDULE%",
    "compact_price_history": "%PRICE_HISTORY_COMPACT_SCHEDULE%",
}

_PROBE = """
import inspect, json
import function_app
out = []
for fn in function_app.app.get_functions():
    bindings = [json.loads(b) for b in fn.get_raw_bindings()]
    params = list(inspect.signature(fn.get_user_function()).parameters)
    out.append({"name": fn.get_function_name(), "bindings": bindings, "params": params})
print(json.dumps(out))
"""


def _index_in_empty_environment() -> list[dict]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # nothing else: no settings at all
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_function_is_indexed_with_its_route_methods_and_auth() -> None:
    functions = _index_in_empty_environment()
    names = [fn["name"] for fn in functions]
    assert sorted(names) == sorted([*EXPECTED_HTTP, *EXPECTED_TIMERS])
    assert len(names) == len(set(names))
    for fn in functions:
        trigger = fn["bindings"][0]
        if fn["name"] in EXPECTED_HTTP:
            route, methods, auth = EXPECTED_HTTP[fn["name"]]
            assert trigger["type"] == "httpTrigger"
            assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth)
        else:
            assert trigger["type"] == "timerTrigger"
            assert trigger["schedule"] == EXPECTED_TIMERS[fn["name"]]


def test_handlers_take_only_binding_parameters() -> None:
    for fn in _index_in_empty_environment():
        binding_names = {b["name"] for b in fn["bindings"]} | {"context"}
        extra = set(fn["params"]) - binding_names
        assert not extra, f"{fn['name']} takes non-binding parameters {extra}"


def test_import_does_no_io_and_creates_no_clients() -> None:
    import function_app  # noqa: F401  (imported for its side effects, which must be none)
    from shared.container import Container, get_container

    built = [name for name in Container.ORDER if get_container().peek(name) is not None]
    assert not built, f"importing function_app built {built}"


def test_binding_annotations_are_real_classes() -> None:
    import azure.functions as func

    from tests.conftest import registered_functions

    for name, fn in registered_functions().items():
        params = inspect.signature(fn.get_user_function()).parameters
        for param in params.values():
            if param.name == "context":
                # The worker insists a context annotation be azure.functions.Context; none is fine.
                assert param.annotation in (inspect.Parameter.empty, func.Context), name
            else:
                assert isinstance(param.annotation, type), f"{name}.{param.name} is annotated with a string"


def test_wrapped_handlers_keep_their_signature() -> None:
    from tests.conftest import registered_functions

    for fn in registered_functions().values():
        user_fn = fn.get_user_function()
        assert inspect.signature(user_fn).parameters, fn.get_function_name()
