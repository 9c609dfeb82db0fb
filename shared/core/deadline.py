"""How long the work on this thread may still wait on Polymarket, and how hard it may try.

Three per-context facts, read by the upstream clients (``shared.upstream.polymarket``):

* a **deadline** (monotonic): every socket read and write of an upstream call is bounded by
  it, and no retry starts that would end past it. The HTTP layer sets one per request
  (``REQUEST_DEADLINE_S``); each upstream call adds its own whole-response deadline; the
  tighter one wins.
* **fail fast**: one attempt, no retries, no backoff, no ``Retry-After`` wait. A request that
  has stored data to answer with uses it, so a failure costs one attempt, never a retry loop.
* a **watch**: a request waiting on a background job (a catalogue refresh) is told as soon as
  one upstream attempt of that job fails (or none is answered in time), so it can answer stale
  at once while the job retries.

Context variables, so they follow the work onto helper threads that copy the context
(``contextvars.copy_context``) and never leak to background jobs that do not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
_fail_fast: ContextVar[bool] = ContextVar("fail_fast", default=False)
_watch: ContextVar[Watch | None] = ContextVar("watch", default=None)


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Bound the enclosed work by ``seconds`` from now (None: no new bound); an outer, tighter
    deadline still applies."""
    if seconds is None:
        yield
        return
    new = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(new if outer is None else min(outer, new))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """No deadline and no fail fast for the enclosed work: a background job that a request
    started, in a copy of the request's context, outlives the request."""
    deadline_token = _deadline.set(None)
    fail_fast_token = _fail_fast.set(False)
    try:
        yield
    finally:
        _fail_fast.reset(fail_fast_token)
        _deadline.reset(deadline_token)


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the deadline (never below 0), or ``default`` when there is none."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())


def capped(seconds: float) -> float:
    """``seconds``, or what is left of the deadline if that is less."""
    left = remaining()
    return seconds if left is None else min(seconds, left)


def allows(wait_s: float) -> bool:
    """Whether a wait of ``wait_s`` (and then another attempt) still fits before the deadline."""
    left = remaining()
    return left is None or wait_s < left


@contextmanager
def fail_fast(seconds: float | None = None) -> Iterator[None]:
    """One attempt per upstream call, within ``seconds`` (and the outer deadline)."""
    token = _fail_fast.set(True)
    try:
        with within(seconds):
            yield
    finally:
        _fail_fast.reset(token)


def is_fail_fast() -> bool:
    return _fail_fast.get()


class Watch:
    """What a request waiting on a background job needs to know to stop waiting: the job is
    done, one of its upstream attempts failed, or Polymarket has not answered it at all yet."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.failure: BaseException | None = None  # the latest failed attempt
        self.answered = False  # some attempt of the job got an answer
        self.started = time.monotonic()

    def attempt_failed(self, error: BaseException) -> None:
        with self._changed:
            self.failure = error
            self._changed.notify_all()

    def attempt_answered(self) -> None:
        with self._changed:
            self.answered = True
            self._changed.notify_all()

    def _wake(self, _: Future[Any]) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, future: Future[Any], first_answer_s: float, total_s: float | None) -> bool:
        """Wait until ``future`` is done (True), or (False) an attempt failed, or no attempt was
        answered within ``first_answer_s`` of the job's start, or ``total_s`` passed."""
        future.add_done_callback(self._wake)
        stop = None if total_s is None else time.monotonic() + total_s
        with self._changed:
            while not future.done() and self.failure is None:
                limit = stop if self.answered else self.started + first_answer_s
                if stop is not None and limit is not None:
                    limit = min(limit, stop)
                left = None if limit is None else limit - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
        return future.done()

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Run the enclosed job with this watch told of each of its upstream attempts."""
        token = _watch.set(self)
        try:
            yield
        finally:
            _watch.reset(token)


def attempt_answered() -> None:
    """Called by the upstream clients after each attempt that got an answer."""
    watch = _watch.get()
    if watch is not None:
        watch.attempt_answered()


def attempt_failed(error: BaseException) -> None:
    """Called by the upstream clients after each failed attempt."""
    watch = _watch.get()
    if watch is not None:
        watch.attempt_failed(error)
