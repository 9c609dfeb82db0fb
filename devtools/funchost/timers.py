"""Timer triggers: their schedules, and running each on its own thread in ``WEBSITE_TIME_ZONE``.

A schedule is NCRONTAB, as Azure reads it: six fields, seconds first,
``{second} {minute} {hour} {day} {month} {day-of-week}`` (``0 */5 * * * *``: every five minutes).
croniter computes the occurrences; it takes seconds as a sixth, *last*, field, so the seconds
field moves to the end before croniter reads it. As in NCRONTAB, not as in cron, both day fields
must match (``0 0 0 13 * Fri``: Friday the 13th only): croniter's ``day_or=False``. Like the
Functions host, a five-field expression is read as having ``0`` seconds.

Each field is a comma list of ``*``, ``n`` or ``a-b``, each with an optional ``/step``; months
and weekdays also take names (``Jan``, ``Mon``), and day-of-week 0 and 7 are Sunday. What croniter
accepts beyond that (``L``, ``W``, ``#``, ``?``, ``H``, ``R``, a seventh field for years) is not
NCRONTAB and is refused, as is a range that runs backwards (croniter would wrap it round).

A TimeSpan (``hh:mm:ss`` or ``d.hh:mm:ss``) means "every interval". ``%NAME%`` parts are app
settings, resolved from the environment.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest
from croniter import CroniterBadDateError, CroniterError, croniter

from devtools.funchost.functions import TimerFunction
from devtools.funchost.invocation import Invoker

log = logging.getLogger(__name__)

# --- schedules ------------------------------------------------------------------------------


class ScheduleError(ValueError):
    """A schedule that cannot be resolved or parsed, or that never fires."""


_SETTING_RE = re.compile(r"%([^%\s]+)%")
_TIMESPAN_RE = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?")
# NCRONTAB's fields, in its order, with what each takes.
_FIELDS = (("second", "0-59"), ("minute", "0-59"), ("hour", "0-23"), ("day", "1-31"),
           ("month", "1-12 or Jan-Dec"), ("day-of-week", "0-7 or Sun-Sat; 0 and 7 are Sunday"))
_ITEM_RE = re.compile(r"(?:\*|(\d+|[A-Za-z]{3})(?:-(\d+|[A-Za-z]{3}))?)(?:/\d+)?")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {**{name: i for i, name in enumerate(_MONTHS, start=1)}, **{name: i for i, name in enumerate(_WEEKDAYS)}}


def resolve_settings(expression: str, environ: Mapping[str, str]) -> str:
    """Replace each ``%NAME%`` with the app setting ``NAME``, as the Functions host does."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        value = environ.get(name)
        if value is None or not value.strip():
            raise ScheduleError(f"%{name}% does not resolve to a value (app setting {name} is not set)")
        return value.strip()

    return _SETTING_RE.sub(setting, expression)


def _to_croniter(fields: Sequence[str]) -> str:
    """NCRONTAB's ``sec min hour day month dow`` as croniter's ``min hour day month dow sec``."""
    second, *rest = fields
    return " ".join([*rest, second])


def _number(value: str | None) -> int | None:
    """A field value as a number (a name as its month or weekday); None if there is none to tell."""
    if value is None:
        return None
    return int(value) if value.isdigit() else _NAMES.get(value.lower())


def _check_field(expression: str, index: int, text: str) -> None:
    name, takes = _FIELDS[index]
    for item in text.split(","):
        found = _ITEM_RE.fullmatch(item)
        if not found:
            raise ScheduleError(f"NCRONTAB {expression!r}: the {name} field, {text!r}, is not *, n or a-b, "
                                "each with an optional /step, comma-separated")
        first, last = _number(found.group(1)), _number(found.group(2))
        if first is not None and last is not None and first > last:
            raise ScheduleError(f"NCRONTAB {expression!r}: the {name} field's range {item!r} runs backwards")
    # croniter judges the values (ranges, names, steps); alone in a pattern, so the error names the field.
    probe = ["*"] * len(_FIELDS)
    probe[index] = text
    try:
        croniter(_to_croniter(probe))
    except CroniterError:
        raise ScheduleError(f"NCRONTAB {expression!r}: the {name} field, {text!r}, is not valid "
                            f"(it takes {takes})") from None


@dataclass(frozen=True)
class CronSchedule:
    """An NCRONTAB expression (``expression``) and the same in croniter's field order."""

    expression: str
    croniter_expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != len(_FIELDS):
            raise ScheduleError(
                f"NCRONTAB {expression!r} needs 6 fields "
                "({second} {minute} {hour} {day} {month} {day-of-week}), got "
                f"{len(fields)}")
        for index, text in enumerate(fields):
            _check_field(expression, index, text)
        return cls(expression, _to_croniter(fields))

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``, in ``moment``'s time zone."""
        try:
            return croniter(self.croniter_expression, moment, day_or=False).get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(f"NCRONTAB {self.expression!r} never fires") from None


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule such as ``00:05:00``: every interval."""

    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expression: str) -> Schedule:
    """Parse an already-resolved schedule: a TimeSpan or an NCRONTAB expression."""
    text = expression.strip()
    timespan = _TIMESPAN_RE.fullmatch(text)
    if timespan:
        days, hours, minutes, seconds = (int(part or 0) for part in timespan.groups())
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ScheduleError(f"TimeSpan {text!r} is out of range")
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan {text!r} must be positive")
        return IntervalSchedule(text, interval)
    return CronSchedule.parse(text)


# --- running timers -------------------------------------------------------------------------



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
                schedule = self._schedule(timer)
            except ScheduleError as error:
                log.error("timer %s is disabled: %s", timer.name, error)
                continue
            self.schedules[timer.name] = schedule
            thread = threading.Thread(target=self._run, args=(timer, schedule), name=f"timer-{timer.name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _schedule(self, timer: TimerFunction) -> Schedule:
        """The timer's schedule, checked now rather than in its thread (ScheduleError: invalid, or
        never fires); an error says which app setting the expression came from."""
        resolved = resolve_settings(timer.schedule, self.environ)
        try:
            schedule = parse_schedule(resolved)
            schedule.next_after(self._now())
        except ScheduleError as error:
            if resolved != timer.schedule:
                raise ScheduleError(f"schedule {timer.schedule}: {error}") from None
            raise
        return schedule

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
