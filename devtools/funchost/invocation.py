"""Calling a user function: its ``context`` argument, output bindings, sync and async functions."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func


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


class OutputBinding(func.Out):
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
