"""Single flight over many tokens: concurrent single, batch and book requests share one
upstream fetch per token."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from shared.core import deadline
from shared.core.cache import TTLCache
from shared.core.errors import UpstreamError, UpstreamTimeout
from shared.prices.entries import Entry, Outcome
from shared.upstream.polymarket import CLOB

WAIT_S = 120.0  # a caller never waits longer than this on another caller's fetch


class BookFlight:
    """Per-token single flight that a batch can lead for many tokens at once.

    A caller claims the tokens nobody is fetching (it must settle them) and waits on the
    futures of those already in flight, so single, batch and book requests share fetches.
    """

    def __init__(self, lead: Callable[[list[str]], dict[str, Outcome]], max_tokens: int) -> None:
        self._lead = lead  # fetches the tokens a caller claimed
        self._lock = threading.Lock()
        self._calls: dict[str, Future[Outcome]] = {}
        # Each token's latest upstream failure: a request that gives up waiting on a fetch
        # already under way (a background retry) names its cause, not just "timeout".
        self._failures: TTLCache[UpstreamError] = TTLCache(max_tokens, 60.0)

    def claim(self, tokens: Iterable[str]) -> tuple[dict[str, Future[Outcome]], dict[str, Future[Outcome]]]:
        mine: dict[str, Future[Outcome]] = {}
        theirs: dict[str, Future[Outcome]] = {}
        with self._lock:
            for token in tokens:
                future = self._calls.get(token)
                if future is None:
                    future = self._calls[token] = Future()
                    mine[token] = future
                else:
                    theirs[token] = future
        return mine, theirs

    def settle(self, token: str, future: Future[Outcome], outcome: Outcome | BaseException) -> None:
        with self._lock:
            if self._calls.get(token) is future:
                del self._calls[token]
        if isinstance(outcome, BaseException) and not isinstance(outcome, UpstreamError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def in_flight(self, token: str) -> bool:
        with self._lock:
            return token in self._calls

    def read(self, tokens: list[str], recheck: Callable[[str], Entry | None] | None = None
             ) -> dict[str, Outcome]:
        """Fresh outcomes for ``tokens``, sharing in-flight fetches with other requests.

        ``recheck`` looks in the cache again once the fetch is ours: a fetch that finished
        between the caller's cache miss and its claim has just filled it, and a second upstream
        call would break "one fetch per token per TTL window".
        """
        mine, theirs = self.claim(tokens)
        outcomes: dict[str, Outcome] = {}
        if mine and recheck is not None:
            for token in list(mine):
                entry = recheck(token)
                if entry is not None:
                    self.settle(token, mine.pop(token), entry)
                    outcomes[token] = entry
        if mine:
            try:
                results = self._lead(list(mine))
            except BaseException as error:
                for token, future in mine.items():
                    self.settle(token, future, error)
                raise
            for token, future in mine.items():
                self.settle(token, future, results[token])
            outcomes.update(results)
        for token, future in theirs.items():
            try:
                outcomes[token] = future.result(timeout=deadline.remaining(WAIT_S))
            except FutureTimeout:
                known = self._failures.get(token)
                outcomes[token] = known[0] if known else UpstreamTimeout(CLOB, "waiting for another fetch")
        for token, outcome in outcomes.items():
            if isinstance(outcome, UpstreamError):
                self._failures.put(token, outcome)
        return outcomes
