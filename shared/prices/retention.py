"""Retention: stored samples older than PRICE_HISTORY_RETENTION_DAYS are deleted in batches,
within a time budget (the next run carries on)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db.database import Database
from shared.prices import store

log = logging.getLogger("polymarket_api.prices")

PRUNE_BATCH = 10_000
PRUNE_BUDGET_S = 240.0  # the Functions timeout is 5 min; the next run carries on


def prune(database: Callable[[], Database], retention_days: int, *, batch: int = PRUNE_BATCH,
          budget_s: float = PRUNE_BUDGET_S) -> dict[str, Any]:
    """Delete samples older than ``retention_days``, ``batch`` rows per transaction, and first
    any dated more than a day ahead (``misdated``: age alone would never remove them; written
    before times were checked)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    db = database()
    deleted = batches = misdated = 0
    stop_at = time.monotonic() + budget_s
    while time.monotonic() <= stop_at:
        removed = db.run(lambda cur: store.delete_misdated(cur, batch))
        misdated += removed
        if removed < batch:
            break
    if misdated:
        log.warning("deleted %d price samples dated before 2020 or more than a day ahead", misdated)
    while True:
        removed = db.run(lambda cur: store.delete_older_than(cur, cutoff, batch))
        batches += 1
        deleted += removed
        if removed == 0:
            return {"deleted": deleted, "batches": batches, "complete": True, "cutoff": cutoff,
                    "misdated": misdated}
        if time.monotonic() > stop_at:
            return {"deleted": deleted, "batches": batches, "complete": False, "cutoff": cutoff,
                    "misdated": misdated}
