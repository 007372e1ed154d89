"""The creator's reply hours: the clock the 24-hour reply promise is counted on.

A creator who answers fans 10:00–18:00 on weekdays and rests on Sundays should not see a DM sent
on Saturday night fall due on Sunday night: only open time counts. :class:`ReplyHours` holds the
open intervals per weekday, the rest days and the dated holidays, in the creator's time zone;
:func:`add_reply_hours` and :func:`reply_hours_between` count real (UTC) time inside them.

DST: each day's intervals are wall-clock times of that local date, turned into UTC one interval at
a time, so a "10:00–18:00" day is 8 hours whatever the offset that day. A wall time that a DST
change skips maps to the same instant as the first valid time after it; in the hour a change
repeats, a boundary means its first occurrence. With no hours set the clock runs all day, and
rest days and holidays still stop it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from crm.clock import as_utc

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MIDNIGHT = time(0, 0)
#: An interval is ``(start, end)`` in local wall time; an ``end`` of 00:00 means the end of the day.
Interval = tuple[time, time]
_ALL_DAY: tuple[Interval, ...] = ((MIDNIGHT, MIDNIGHT),)


@dataclass(frozen=True)
class ReplyHours:
    """When the creator answers fans. Empty ``hours`` = every day, all day (minus days off).

    When ``hours`` is set, a weekday missing from it has no reply hours (like a rest day).
    Build one with :func:`parse_reply_hours` from config values, which checks them.
    """

    timezone: str = "Asia/Taipei"
    hours: Mapping[int, tuple[Interval, ...]] = field(default_factory=dict)  # weekday (0 = Monday)
    rest_days: frozenset[int] = frozenset()
    holidays: frozenset[date] = frozenset()

    def __hash__(self) -> int:  # ``hours`` is a mapping: hash its items (settings are cache keys)
        return hash((self.timezone, tuple(sorted(self.hours.items())), self.rest_days, self.holidays))

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def always_open(self) -> bool:
        """True when the clock never stops (the plain 24/7 case, counted without a calendar walk)."""
        return not self.hours and not self.rest_days and not self.holidays

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The open wall-clock intervals of one local date (none on a rest day or holiday)."""
        if day in self.holidays or day.weekday() in self.rest_days:
            return ()
        if not self.hours:
            return _ALL_DAY
        return self.hours.get(day.weekday(), ())

    def open_spans(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The open intervals of one local date as UTC ``(start, end)`` pairs, in order."""
        for start, end in self.intervals_on(day):
            lo = datetime.combine(day, start, self.tz).astimezone(UTC)
            end_day = day + timedelta(days=1) if end == MIDNIGHT else day
            hi = datetime.combine(end_day, end, self.tz).astimezone(UTC)
            if hi > lo:
                yield lo, hi

    def has_open_time(self) -> bool:
        """Whether any weekday has reply hours at all (else a due time would never come)."""
        return any(self.intervals_on_weekday(wd) for wd in range(7))

    def intervals_on_weekday(self, weekday: int) -> tuple[Interval, ...]:
        if weekday in self.rest_days:
            return ()
        return _ALL_DAY if not self.hours else self.hours.get(weekday, ())


def add_reply_hours(start: datetime, hours: float, calendar: ReplyHours) -> datetime:
    """The moment ``hours`` of reply time have passed since ``start`` (UTC).

    This is a conversation's due time: ``add_reply_hours(waiting_since, reply_within_hours)``.
    Exactly at the end of an open interval counts as inside it (due at 18:00, not at the next
    opening). Raises ValueError when the calendar has no reply hours on any weekday.
    """
    start = as_utc(start)
    remaining = timedelta(hours=hours)
    if remaining <= timedelta(0):
        return start
    if calendar.always_open:
        return start + remaining
    if not calendar.has_open_time():
        raise ValueError("the reply hours have no open time on any weekday")
    day = start.astimezone(calendar.tz).date() - timedelta(days=1)  # a span may start the day before
    while True:
        for lo, hi in calendar.open_spans(day):
            lo = max(lo, start)
            if hi <= lo:
                continue
            if remaining <= hi - lo:
                return lo + remaining
            remaining -= hi - lo
        day += timedelta(days=1)


def reply_hours_between(start: datetime, end: datetime, calendar: ReplyHours) -> float:
    """Hours of reply time from ``start`` to ``end`` (0 when ``end`` is not after ``start``).

    Used to ask "how much reply time is left before due" (reminders) and how long a fan waited
    in the creator's working time.
    """
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return 0.0
    if calendar.always_open:
        return (end - start).total_seconds() / 3600.0
    total = timedelta(0)
    day = start.astimezone(calendar.tz).date() - timedelta(days=1)
    last = end.astimezone(calendar.tz).date()
    while day <= last:
        for lo, hi in calendar.open_spans(day):
            lo, hi = max(lo, start), min(hi, end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total.total_seconds() / 3600.0


def parse_reply_hours(timezone: str, hours: Mapping[str, list[str]], rest_days: list[str],
                      holidays: list[str]) -> tuple[ReplyHours | None, list[str]]:
    """Config values (``hours = { mon = ["10:00-18:00"] }``, ``rest_days = ["sun"]``,
    ``holidays = ["2026-12-25"]``) → a calendar, or None and one problem per line.

    Refused: unknown weekdays, times that are not HH:MM, an interval that ends before it starts
    or crosses midnight (write two), overlapping intervals, a calendar with no open time at all.
    """
    problems: list[str] = []
    parsed: dict[int, tuple[Interval, ...]] = {}
    for name, spans in hours.items():
        if name.lower() not in WEEKDAYS:
            problems.append(f"sla.hours has {name!r}, which is not a weekday ({', '.join(WEEKDAYS)})")
            continue
        intervals: list[Interval] = []
        for span in spans:
            interval = _interval(span)
            if interval is None:
                problems.append(f"sla.hours.{name} has {span!r}: write HH:MM-HH:MM, ending after it starts "
                                "(24:00 for midnight)")
            else:
                intervals.append(interval)
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            if end == MIDNIGHT or start < end:
                problems.append(f"sla.hours.{name} has overlapping intervals")
                break
        parsed[WEEKDAYS.index(name.lower())] = tuple(intervals)
    rest: set[int] = set()
    for name in rest_days:
        if name.lower() in WEEKDAYS:
            rest.add(WEEKDAYS.index(name.lower()))
        else:
            problems.append(f"sla.rest_days has {name!r}, which is not a weekday ({', '.join(WEEKDAYS)})")
    days: set[date] = set()
    for text in holidays:
        try:
            days.add(date.fromisoformat(text))
        except ValueError:
            problems.append(f"sla.holidays has {text!r}, which is not a date (YYYY-MM-DD)")
    if problems:
        return None, problems
    calendar = ReplyHours(timezone, parsed, frozenset(rest), frozenset(days))
    if not calendar.has_open_time():
        return None, ["sla.hours and sla.rest_days leave no reply hours on any weekday"]
    return calendar, []


def _interval(span: str) -> Interval | None:
    start_text, sep, end_text = span.partition("-")
    start, end = _time(start_text), _time(end_text, end=True)
    if not sep or start is None or end is None:
        return None
    if end != MIDNIGHT and end <= start:
        return None
    return start, end


def _time(text: str, *, end: bool = False) -> time | None:
    hh, sep, mm = text.strip().partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and len(hh) <= 2):
        return None
    h, m = int(hh), int(mm)
    if end and (h, m) == (24, 0):
        return MIDNIGHT
    if h > 23 or m > 59:
        return None
    return time(h, m)
