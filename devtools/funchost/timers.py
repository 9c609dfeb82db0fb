"""Timer triggers: each on its own thread, on its schedule, in ``WEBSITE_TIME_ZONE``."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest

from devtools.funchost.functions import TimerFunction
from devtools.funchost.invocation import Invoker
from devtools.funchost.ncrontab import Schedule, ScheduleError, parse_schedule, resolve_settings

log = logging.getLogger(__name__)


def timer_zone(environ: Mapping[str, str]) -> tzinfo:
    """UTC unless WEBSITE_TIME_ZONE names an IANA zone (as on Linux plans)."""
    name = (environ.get("WEBSITE_TIME_ZONE") or "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("WEBSITE_TIME_ZONE=%r is not an IANA time zone; timers use UTC", name)
        return UTC


class TimerRunner:
    """Runs each timer trigger on its own thread, so one slow timer never delays another.

    Runs of one timer never overlap (as in Azure); occurrences missed while a run was still going
    are skipped. Failures are logged and the schedule carries on.
    """

    past_due_after = timedelta(seconds=1)

    def __init__(self, timers: Sequence[TimerFunction], invoker: Invoker,
                 environ: Mapping[str, str] | None = None) -> None:
        self.timers = tuple(timers)
        self.invoker = invoker
        self.environ = os.environ if environ is None else environ
        self.zone = timer_zone(self.environ)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.schedules: dict[str, Schedule] = {}

    def start(self) -> None:
        for timer in self.timers:
            try:
                schedule = parse_schedule(resolve_settings(timer.schedule, self.environ))
                schedule.next_after(self._now())  # fail now, not in the thread, if it never fires
            except ScheduleError as error:
                log.error("timer %s is disabled: %s", timer.name, error)
                continue
            self.schedules[timer.name] = schedule
            thread = threading.Thread(target=self._run, args=(timer, schedule), name=f"timer-{timer.name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s is still running a function; leaving it behind", thread.name)
        self._threads.clear()

    def _now(self) -> datetime:
        return datetime.now(self.zone)

    def _run(self, timer: TimerFunction, schedule: Schedule) -> None:
        last: datetime | None = None
        if timer.run_on_startup:
            now = self._now()
            self._fire(timer, now, last, schedule.next_after(now))
            last = now
        scheduled = schedule.next_after(self._now())
        while True:
            while (delay := (scheduled - self._now()).total_seconds()) > 0:
                if self._stop.wait(delay):
                    return
            if self._stop.is_set():
                return
            # Strictly after both the occurrence and now: an early wake-up cannot fire twice,
            # and occurrences missed during a long run are skipped.
            following = schedule.next_after(max(scheduled, self._now()))
            self._fire(timer, scheduled, last, following)
            last, scheduled = scheduled, schedule.next_after(max(scheduled, self._now()))

    def _fire(self, timer: TimerFunction, scheduled: datetime, last: datetime | None, following: datetime) -> None:
        now = self._now()
        request = TimerRequest(
            past_due=now - scheduled > self.past_due_after,
            schedule_status={
                "Last": last.isoformat() if last else None,
                "Next": following.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        kwargs: dict[str, Any] = {timer.binding_name: request}
        context = self.invoker.context(timer.name)
        if timer.wants_context:
            kwargs["context"] = context
        started = time.perf_counter()
        try:
            self.invoker.call(timer.user_function, kwargs)
        except Exception:
            log.exception("timer %s failed (invocation %s)", timer.name, context.invocation_id)
        else:
            log.info("timer %s ran in %.1f ms", timer.name, (time.perf_counter() - started) * 1000)
