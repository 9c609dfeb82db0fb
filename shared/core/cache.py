"""In-process caching primitives: single-flight calls and a bounded LRU with expiry."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")

# Background refreshes (stale-while-revalidate) run here, never on a request's thread.
_background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="refresh")


class Lazy(Generic[T]):
    """One process-wide object, made by ``factory`` on first use (thread-safe), and forgotten
    by ``reset`` (tests; the next use re-reads settings), closed on the way if ``close`` is given.
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], None] | None = None) -> None:
        self._factory = factory
        self._close = close
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    def peek(self) -> T | None:
        """The object if it has been made, without making it."""
        return self._value

    def reset(self) -> None:
        with self._lock:
            value, self._value = self._value, None
        if value is not None and self._close is not None:
            self._close(value)


class SingleFlight(Generic[T]):
    """Concurrent callers with the same key share one execution and its result or error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, Future[T]] = {}

    def _claim(self, key: Hashable) -> tuple[Future[T], bool]:
        with self._lock:
            future = self._calls.get(key)
            if future is not None:
                return future, False
            future = Future()
            self._calls[key] = future
            return future, True

    def _execute(self, key: Hashable, future: Future[T], fn: Callable[[], T]) -> None:
        try:
            result = fn()
        except BaseException as error:  # handed to every waiter
            with self._lock:
                self._calls.pop(key, None)
            future.set_exception(error)
        else:
            with self._lock:
                self._calls.pop(key, None)
            future.set_result(result)

    def run(self, key: Hashable, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` unless a call for ``key`` is in flight; either way wait for its result."""
        future, leader = self._claim(key)
        if leader:
            self._execute(key, future, fn)
        return future.result(timeout=timeout)

    def start(self, key: Hashable, fn: Callable[[], T]) -> Future[T]:
        """Start ``fn`` in the background unless a call for ``key`` is already in flight."""
        return self.begin(key, fn)[0]

    def begin(self, key: Hashable, fn: Callable[[], T]) -> tuple[Future[T], bool]:
        """``start``, also saying whether this call started ``fn`` (True) or joined one."""
        future, leader = self._claim(key)
        if leader:
            _background.submit(self._execute, key, future, fn)
        return future, leader

    def in_flight(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._calls


class TTLCache(Generic[V]):
    """A bounded LRU whose entries expire; bounded so arbitrary keys cannot grow memory."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable, *, allow_expired: bool = False) -> tuple[V, float] | None:
        """(value, age in seconds), or None when absent (or expired unless allowed)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, value = entry
            age = self._clock() - stored_at
            if age > self.ttl_s and not allow_expired:
                return None
            self._entries.move_to_end(key)
            return value, age

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# Process-wide caches of what was derived from the built parts (e.g. serialised answers keyed by
# ETag): forgotten with them (``shared.container.reset_container``), since a new database may
# reuse ids and so tags.
_derived: list[TTLCache[object]] = []


def derived_cache(max_entries: int, ttl_s: float) -> TTLCache[V]:
    cache: TTLCache[V] = TTLCache(max_entries, ttl_s)
    _derived.append(cache)  # type: ignore[arg-type]  # only cleared, never read, through this list
    return cache


def clear_derived() -> None:
    for cache in _derived:
        cache.clear()
