"""The write-behind of price samples: requests queue them, one thread writes them in batches."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from shared.core.cache import TTLCache
from shared.core.errors import AppError
from shared.db.database import Database
from shared.prices import store
from shared.prices.rejections import Rejections

log = logging.getLogger("polymarket_api.prices")


class SampleWriter:
    """Writes samples to ``price_samples`` in batches, off the request path.

    Samples wait in a bounded queue (oldest dropped first when full, counted and logged, never
    silently) and are retried with backoff while the database fails. Keys already written
    recently are skipped, so re-reading an unchanged book writes nothing.
    """

    def __init__(self, database: Callable[[], Database], max_pending: int = 100_000, batch_size: int = 1_000,
                 interval_s: float = 0.25, rejections: Rejections | None = None) -> None:
        # A provider, not a pool: the pool is built on first use (and again after it failed).
        self._database = database
        self.rejections = rejections or Rejections()
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: OrderedDict[tuple[str, datetime], store.Sample] = OrderedDict()
        self._recent: TTLCache[bool] = TTLCache(max_entries=200_000, ttl_s=6 * 3600)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    def add(self, samples: Iterable[store.Sample]) -> None:
        dropped = 0
        now = datetime.now(UTC)
        refused: list[tuple[str, str]] = []  # (token, why) of samples that could not be served back
        with self._lock:
            for sample in samples:
                if sample.key in self._pending or self._recent.get(sample.key) is not None:
                    continue
                problem = sample.problem(now)
                if problem is not None:
                    refused.append((sample.token_id, problem))
                    continue
                self._pending[sample.key] = sample
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                dropped += 1
            self.dropped += dropped
            backlog = len(self._pending)
        if refused:
            self.rejections.add("samples", len(refused), *refused[0])
        if dropped:
            log.error("price history writer dropped %d samples (queue full, %d total): %s",
                      dropped, self.dropped, self.last_error or "database slow")
        self._ensure_thread()
        if backlog >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {"pending": self.pending(), "written": self.written, "dropped": self.dropped,
                "failures": self.failures, "last_error": self.last_error}

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="price-samples-writer", daemon=True)
                self._thread.start()

    def _write_batch(self) -> bool:
        """Write the oldest batch; False when the database failed."""
        with self._write_lock:
            with self._lock:
                batch = list(islice(self._pending.values(), self.batch_size))
            if not batch:
                return True
            try:
                added = self._database().run(lambda cur: store.insert_samples(cur, batch))
            except Exception as error:  # kept for retry, reported below
                self.failures += 1
                self.last_error = error.code if isinstance(error, AppError) else type(error).__name__
                log.warning("price samples not written yet (%s); %d waiting", self.last_error, self.pending())
                return False
            with self._lock:
                for sample in batch:
                    if self._pending.get(sample.key) is sample:
                        del self._pending[sample.key]
                    self._recent.put(sample.key, True)
            self.written += added
            self.last_error = None
            return True

    def _drain(self) -> bool:
        while self.pending():
            if not self._write_batch():
                return False
        return True

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            self._wake.wait(backoff or self.interval_s)
            self._wake.clear()
            backoff = 0.0 if self._drain() else min(30.0, max(1.0, backoff * 2))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything pending now; False if the database failed or time ran out."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline or not self._write_batch():
                return False
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.pending() and not self.flush(timeout_s):
            log.error("price history writer stopped with %d samples unwritten", self.pending())
