"""Timer-trigger schedules as Azure Functions reads them: NCRONTAB and TimeSpan (dev-only).

Used by ``devtools.funchost`` to run timer triggers without Core Tools; ``devtools/`` is
kept out of the deployed package (.funcignore), where the real Functions host does this.

NCRONTAB has six fields, ``{second} {minute} {hour} {day} {month} {day-of-week}``, each a
``*``, a value, a range ``a-b``, a step ``*/n`` / ``a-b/n`` / ``a/n``, or a comma list of those;
months and weekdays also take names (``Jan``, ``Mon``), and day-of-week 0 and 7 are Sunday.
Like the Functions host, a five-field expression is read as having ``0`` seconds. A TimeSpan
(``hh:mm:ss`` or ``d.hh:mm:ss``) means "every interval". ``%NAME%`` parts are app settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_SETTING_RE = re.compile(r"%([^%\s]+)%")
_TIMESPAN_RE = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?")
# NCRONTAB can describe dates that never come (e.g. 30 February): give up after this long.
_SEARCH_LIMIT = timedelta(days=366 * 30)


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, resolved or ever fires."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _WEEKDAYS),  # 7 is Sunday too; folded into 0 below
)


def resolve_settings(expression: str, environ: Mapping[str, str]) -> str:
    """Replace each ``%NAME%`` with the app setting ``NAME``, as the Functions host does."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        value = environ.get(name)
        if value is None or not value.strip():
            raise ScheduleError(f"%{name}% does not resolve to a value (app setting {name} is not set)")
        return value.strip()

    return _SETTING_RE.sub(setting, expression)


def _value(text: str, field: _Field) -> int:
    lowered = text.strip().lower()
    if field.names and lowered in field.names:
        return field.names[lowered]
    if not lowered.isdigit():
        raise ScheduleError(f"{field.name} field: {text!r} is not a number")
    number = int(lowered)
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name} field: {number} is outside {field.low}-{field.high}")
    return number


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field.name} field: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, field), _value(last, field)
        elif base:
            # "a/n" means from a to the end of the range, every n
            start = _value(base, field)
            end = field.high if slash else start
        else:
            raise ScheduleError(f"{field.name} field: empty item in {text!r}")
        if start > end:
            raise ScheduleError(f"{field.name} field: range {part!r} runs backwards")
        values.update(range(start, end + 1, step))
    if field.name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; weekdays count from 0 = Sunday."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ScheduleError(
                f"NCRONTAB {expression!r} needs 6 fields "
                "({second} {minute} {hour} {day} {month} {day-of-week}), got "
                f"{len(fields)}")
        parsed = [_parse_field(text, field) for text, field in zip(fields, _FIELDS, strict=True)]
        return cls(expression, *parsed)

    def matches(self, moment: datetime) -> bool:
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and self._day_matches(moment)
        )

    def _day_matches(self, moment: datetime) -> bool:
        # NCRONTAB requires both day fields to match ("Friday the 13th"), unlike Vixie cron's "or".
        weekday = (moment.weekday() + 1) % 7
        return moment.month in self.months and moment.day in self.days and weekday in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``, in ``moment``'s wall-clock time zone."""
        zone = moment.tzinfo
        current = moment.replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        limit = current + _SEARCH_LIMIT
        # Jump a whole month/day/hour/minute whenever that unit cannot match, so sparse
        # schedules take a few hundred steps rather than one per second.
        while current <= limit:
            if current.month not in self.months:
                year, month = (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
                current = datetime(year, month, 1)
            elif not self._day_matches(current):
                current = datetime(current.year, current.month, current.day) + timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0, second=0) + timedelta(hours=1)
            elif current.minute not in self.minutes:
                current = current.replace(second=0) + timedelta(minutes=1)
            elif current.second not in self.seconds:
                current += timedelta(seconds=1)
            else:
                return current.replace(tzinfo=zone)
        raise ScheduleError(f"NCRONTAB {self.expression!r} never fires")


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
