"""Sparklines and movers on the market list, from the captured history (``shared.history``):
no upstream call.

- A sparkline is the first outcome's display price over the last 24 hours (one point per 30
  minutes, the close: at most 48) or 7 days (one per 4 hours: at most 42), ending at the
  catalogue's refresh time; one batched read per page, kept per (snapshot, page).
- A mover's change is the first outcome's captured price at the catalogue's refresh time (the
  list price, captured by that refresh) less its captured price a window earlier
  (``latest_before``); where our captures do not
  reach that far back, Gamma's one-day change for the 24-hour window (``source`` says which),
  else none (sorted last). Computed once per snapshot and window, for every market in two
  batched reads (now, and a window before: the first is shared by the windows), on the first
  request that sorts by it (in the background: a request waits until its deadline, then 503),
  and at once for each new snapshot when the previous one was sorted by it. The order (and so
  cursor paging) holds for the snapshot's life.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from shared.core.errors import AppError
from shared.db.database import Cursor, Database

log = logging.getLogger("polymarket_api.markets")

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
GAMMA_WINDOW = "24h"
T = TypeVar("T")  # the window Gamma's one_day_price_change stands in for


def first_token(body: dict[str, Any]) -> str | None:
    outcomes = body.get("outcomes") or []
    return outcomes[0]["token_id"] if outcomes and outcomes[0].get("token_id") else None


def sparklines(cur: Cursor, tokens: Sequence[str], end: datetime, window: str) -> dict[str, list[dict[str, Any]]]:
    """Per token with a captured series or backfilled upstream history, its sparkline points
    ``{"t": unix, "p": price}`` ending at ``end``: one per step, the captures' close where they
    have one, else the last stored upstream point of the step (``shared.prices.backfill``)."""
    from shared.history.series import series
    from shared.prices.backfill import stored_points

    span, resolution, step = SPARKLINES[window]
    start = end - timedelta(seconds=span)
    # A second past ``end``: the refresh's own capture, stamped within that second, is the last point.
    read = series(cur, list(tokens), start, end + timedelta(seconds=1), resolution)
    upstream = stored_points(cur, list(tokens), start, end + timedelta(seconds=1))
    out: dict[str, list[dict[str, Any]]] = {}
    for token in dict.fromkeys([*read, *upstream]):
        closes: dict[int, float] = {}
        for t, price in upstream.get(token, ()):  # ascending: the last point of each step is its close
            closes[t - t % step] = price
        captured: dict[int, float] = {}
        for p in read.get(token, ()):
            ts = int(p.ts.timestamp())
            captured[ts - ts % step] = p.price
        closes.update(captured)  # captures win every step they reach
        out[token] = [{"t": t, "p": closes[t]} for t in sorted(closes)][-MAX_SPARKLINE_POINTS:]
    return out


def page_sparklines(database: Callable[[], Database], bodies: Sequence[dict[str, Any]], end: datetime | None,
                    window: str) -> dict[str, list[dict[str, Any]]] | None:
    """The sparklines of a page's markets (their first outcomes) in one read, ending at ``end``
    (the catalogue's refresh); None when the database fails (the page still answers, uncached)."""
    tokens = [t for body in bodies if (t := first_token(body))]
    if not tokens or end is None:
        return {}
    try:
        return database().run(lambda cur: sparklines(cur, tokens, end, window))
    except AppError as error:
        log.warning("sparklines not read (%s)", error.code)
        return None


def with_sparkline(body: dict[str, Any], lines: dict[str, list[dict[str, Any]]] | None,
                   window: str) -> dict[str, Any]:
    """``body`` with its ``sparkline`` (null when the read failed)."""
    line = None if lines is None else {"window": window, "points": lines.get(first_token(body) or "", [])}
    return {**body, "sparkline": line}


@dataclass(frozen=True)
class Change:
    window: str
    value: float
    source: Literal["captures", "gamma"]

    def as_json(self) -> dict[str, Any]:
        return {"window": self.window, "value": self.value, "source": self.source}


def captured_prices(cur: Cursor, condition_ids: Sequence[str], at: datetime) -> dict[str, float]:
    """Per market with a capture that old, its first outcome's captured price at ``at``."""
    from shared.history.series import latest_before

    cur.execute("SELECT condition_id, token_id FROM outcome_tokens WHERE outcome_index = 0 AND condition_id = ANY(%s)",
                (list(condition_ids),))
    tokens = {row["token_id"]: row["condition_id"] for row in cur.fetchall() if row["token_id"]}
    points = latest_before(cur, list(tokens), at) if tokens else {}
    return {tokens[token]: point.price for token, point in points.items() if point is not None}


def changes(now: dict[str, float], then: dict[str, float], gamma: Sequence[tuple[str, float | None]],
            window: str) -> dict[str, Change]:
    """Per market, its captured price ``now`` less ``then`` (a window earlier); where ``then``
    has none, Gamma's one-day change (``gamma``: condition id, change) for the 24-hour window."""
    out: dict[str, Change] = {}
    for condition_id, one_day in gamma:
        current, before = now.get(condition_id), then.get(condition_id)
        if current is not None and before is not None:
            out[condition_id] = Change(window, round(current - before, 6), "captures")
        elif window == GAMMA_WINDOW and one_day is not None:
            out[condition_id] = Change(window, one_day, "gamma")
    return out


class Movers:
    """One snapshot's captured prices (per offset back from its refresh) and changes (per
    window), each computed once: the lock makes a second request wait for the first's."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self._values: dict[tuple[str, Any], Any] = {}
        self._lock = threading.RLock()
        self.adopted: set[tuple[str, bool, bool]] = set()  # (sort, descending, active_only) orders given

    def ready(self, key: tuple[str, Any]) -> Any | None:
        return self._values.get(key)

    def windows(self) -> list[str]:
        """The windows whose changes were computed."""
        return [key[1] for key in list(self._values) if key[0] == "changes"]

    def once(self, key: tuple[str, Any], compute: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._values:
                self._values[key] = compute()
            return cast(T, self._values[key])
