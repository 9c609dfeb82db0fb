"""Sparklines and movers on the market list, from the captured history (``shared.history``):
no upstream call.

- A sparkline is the first outcome's display price over the last 24 hours (one point per 30
  minutes, the close: at most 48) or 7 days (one per 4 hours: at most 42), ending at the
  catalogue's refresh time; one batched read per page, kept per (snapshot, page).
- A mover's change is the first outcome's captured price at the catalogue's refresh time (the
  list price, captured by that refresh) less its captured price a window earlier
  (``latest_before``); where our captures do not
  reach that far back, Gamma's one-day change for the 24-hour window (``source`` says which),
  else none (sorted last). Computed once per snapshot and window, for every market in one
  batched read, on the first request that sorts by it: the order (and so cursor paging) holds
  for the snapshot's life.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.db.database import Cursor

SparklineWindow = Literal["24h", "7d"]
# window -> (span, the stored resolution read, seconds per sparkline point)
SPARKLINES: dict[str, tuple[int, str, int]] = {"24h": (86_400, "5m", 1_800), "7d": (7 * 86_400, "1h", 4 * 3_600)}
MAX_SPARKLINE_POINTS = 48
MOVER_WINDOWS: dict[str, int] = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400}
# sort name -> (window, by absolute value)
MOVER_SORTS: dict[str, tuple[str, bool]] = {
    **{f"change_{w}": (w, False) for w in MOVER_WINDOWS},
    **{f"abs_change_{w}": (w, True) for w in MOVER_WINDOWS},
}
GAMMA_WINDOW = "24h"  # the window Gamma's one_day_price_change stands in for


def first_token(body: dict[str, Any]) -> str | None:
    outcomes = body.get("outcomes") or []
    return outcomes[0]["token_id"] if outcomes and outcomes[0].get("token_id") else None


def sparklines(cur: Cursor, tokens: Sequence[str], end: datetime, window: str) -> dict[str, list[dict[str, Any]]]:
    """Per token with a captured series, its sparkline points ``{"t": unix, "p": price}`` ending at ``end``."""
    from shared.history.series import series

    span, resolution, step = SPARKLINES[window]
    # A second past ``end``: the refresh's own capture, stamped within that second, is the last point.
    read = series(cur, list(tokens), end - timedelta(seconds=span), end + timedelta(seconds=1), resolution)
    out: dict[str, list[dict[str, Any]]] = {}
    for token, points in read.items():
        closes: dict[int, float] = {}
        for p in points:  # ascending: the last point of each step is its close
            ts = int(p.ts.timestamp())
            closes[ts - ts % step] = p.price
        out[token] = [{"t": t, "p": closes[t]} for t in sorted(closes)][-MAX_SPARKLINE_POINTS:]
    return out


@dataclass(frozen=True)
class Change:
    window: str
    value: float
    source: Literal["captures", "gamma"]

    def as_json(self) -> dict[str, Any]:
        return {"window": self.window, "value": self.value, "source": self.source}


def changes(cur: Cursor, markets: Sequence[tuple[str, float | None]], as_of: datetime, window: str
            ) -> dict[str, Change]:
    """``markets``: (condition id, Gamma's one-day change). The change of each that has one:
    its first outcome's captured price at ``as_of`` less that at ``as_of`` minus the window."""
    from shared.history.series import latest_before

    cur.execute("SELECT condition_id, token_id FROM outcome_tokens WHERE outcome_index = 0 AND condition_id = ANY(%s)",
                ([cid for cid, _ in markets],))
    tokens = {row["condition_id"]: row["token_id"] for row in cur.fetchall()}
    wanted = list(tokens.values())
    now = latest_before(cur, wanted, as_of) if wanted else {}
    then = latest_before(cur, wanted, as_of - timedelta(seconds=MOVER_WINDOWS[window])) if wanted else {}
    out: dict[str, Change] = {}
    for condition_id, gamma in markets:
        token = tokens.get(condition_id)
        current, before = (now.get(token), then.get(token)) if token is not None else (None, None)
        if current is not None and before is not None:
            out[condition_id] = Change(window, round(current.price - before.price, 6), "captures")
        elif window == GAMMA_WINDOW and gamma is not None:
            out[condition_id] = Change(window, gamma, "gamma")
    return out


class Movers:
    """The changes of one snapshot, per window, computed once (a lock: one computation each)."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self._changes: dict[str, dict[str, Change]] = {}
        self._lock = threading.Lock()
        self.adopted: set[tuple[str, bool, bool]] = set()  # (sort, descending, active_only) orders given

    def get(self, window: str, compute: Any) -> dict[str, Change]:
        with self._lock:
            found = self._changes.get(window)
            if found is None:
                found = self._changes[window] = compute(window)
            return found
