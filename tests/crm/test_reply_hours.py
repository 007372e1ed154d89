"""Reply hours: rest days, holidays and working hours pause the reply clock, DST included.

The property tests hold ``add_reply_hours`` and ``reply_hours_between`` to a naive count: walk
the clock minute by minute and ask, for each minute, whether the creator's wall clock shows a
reply hour that day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.reply_hours import (
    MIDNIGHT,
    WEEKDAYS,
    ReplyHours,
    add_reply_hours,
    parse_reply_hours,
    reply_hours_between,
)

TAIPEI = "Asia/Taipei"
NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)


def _cal(tz: str = TAIPEI, hours: dict[str, list[str]] | None = None, rest: list[str] | None = None,
         holidays: list[str] | None = None) -> ReplyHours:
    calendar, problems = parse_reply_hours(tz, hours or {}, rest or [], holidays or [])
    assert calendar is not None, problems
    return calendar


def _local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz)).astimezone(UTC)  # type: ignore[misc]


# --- the naive clock --------------------------------------------------------------------------

@cache
def _day_rule(calendar: ReplyHours, day: date) -> tuple[tuple[time, time], ...]:
    if day in calendar.holidays or day.weekday() in calendar.rest_days:
        return ()
    if not calendar.hours:
        return ((MIDNIGHT, MIDNIGHT),)
    return tuple(calendar.hours.get(day.weekday(), ()))


def naive_open(calendar: ReplyHours, minute: datetime) -> bool:
    """Does the creator's wall clock show a reply hour during this minute?"""
    local = minute.astimezone(ZoneInfo(calendar.timezone))
    wall = local.time().replace(tzinfo=None)
    return any(start <= wall and (end == MIDNIGHT or wall < end) for start, end in _day_rule(calendar, local.date()))


def naive_due(start: datetime, minutes: int, calendar: ReplyHours) -> datetime:
    """The end of the ``minutes``-th open minute from ``start`` (minute-aligned)."""
    at, counted = start, 0
    while counted < minutes:
        if naive_open(calendar, at):
            counted += 1
        at += MINUTE
        assert at - start < timedelta(days=400), "no reply hours"
    return at


def naive_between(start: datetime, end: datetime, calendar: ReplyHours) -> float:
    at, counted = start, 0
    while at < end:
        counted += naive_open(calendar, at)
        at += MINUTE
    return counted / 60.0


@st.composite
def calendars(draw: st.DrawFn) -> ReplyHours:
    """24/7, rest days only, or working hours on whole hours (with rest days and a holiday)."""
    tz = draw(st.sampled_from([TAIPEI, NEW_YORK]))
    style = draw(st.sampled_from(["always", "rest", "hours"]))
    rest = draw(st.lists(st.sampled_from(WEEKDAYS), max_size=3, unique=True)) if style != "always" else []
    hours: dict[str, list[str]] = {}
    if style == "hours":
        for day in draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)):
            cuts = sorted(draw(st.lists(st.integers(0, 24), min_size=2, max_size=4, unique=True)))
            pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
            hours[day] = [f"{a:02d}:00-{b:02d}:00" for a, b in pairs]
    holidays = [draw(st.dates(date(2026, 3, 1), date(2026, 3, 12))).isoformat()] if style != "always" else []
    calendar, _ = parse_reply_hours(tz, hours, rest, holidays)
    if calendar is None:  # every weekday closed: refused by the config, nothing to count
        return _cal(tz)
    return calendar


#: Starts around both 2026 DST changes in New York (8 March, 1 November) and an ordinary week.
starts = st.builds(lambda base, m: base + timedelta(minutes=m),
                   st.sampled_from([datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC),
                                    datetime(2026, 11, 20, tzinfo=UTC)]),
                   st.integers(0, 4 * 24 * 60))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars(), starts, st.integers(1, 30 * 60))
def test_a_due_time_is_the_end_of_the_last_open_minute_counted(calendar, start, minutes):
    assert add_reply_hours(start, minutes / 60.0, calendar) == naive_due(start, minutes, calendar)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars(), starts, st.integers(0, 3 * 24 * 60))
def test_reply_hours_between_counts_the_open_minutes(calendar, start, minutes):
    end = start + timedelta(minutes=minutes)
    assert reply_hours_between(start, end, calendar) == pytest.approx(naive_between(start, end, calendar))


# --- the documented examples ---------------------------------------------------------------------

def test_a_dm_on_saturday_night_with_sunday_off_falls_due_on_monday_night_not_sunday_night():
    calendar = _cal(rest=["sun"])
    saturday_night = _local(TAIPEI, 2026, 12, 5, 22, 0)
    assert add_reply_hours(saturday_night, 24, calendar) == _local(TAIPEI, 2026, 12, 7, 22, 0)


def test_with_working_hours_a_saturday_night_dm_is_due_on_tuesday_morning():
    # Weekdays 09:00-21:00 (12 h a day), Saturday 10:00-14:00, Sunday off.
    hours = {d: ["09:00-21:00"] for d in ("mon", "tue", "wed", "thu", "fri")} | {"sat": ["10:00-14:00"]}
    calendar = _cal(hours=hours, rest=["sun"])
    saturday_night = _local(TAIPEI, 2026, 12, 5, 22, 0)
    # Monday gives 12 hours, Tuesday 09:00 + the other 12: due Tuesday 21:00; 16 h is Tuesday 13:00.
    assert add_reply_hours(saturday_night, 24, calendar) == _local(TAIPEI, 2026, 12, 8, 21, 0)
    assert add_reply_hours(saturday_night, 14, calendar) == _local(TAIPEI, 2026, 12, 8, 11, 0)


def test_a_holiday_and_a_lunch_break_pause_the_clock():
    calendar = _cal(hours={"thu": ["10:00-12:00", "14:00-18:00"], "fri": ["10:00-18:00"]},
                    holidays=["2026-12-25"])
    thursday_morning = _local(TAIPEI, 2026, 12, 24, 11, 0)
    # 1 h before lunch, 4 h after; Friday the 25th is a holiday; next open day is Thursday the 31st.
    assert add_reply_hours(thursday_morning, 5, calendar) == _local(TAIPEI, 2026, 12, 24, 18, 0)
    assert add_reply_hours(thursday_morning, 6, calendar) == _local(TAIPEI, 2026, 12, 31, 11, 0)
    assert reply_hours_between(thursday_morning, _local(TAIPEI, 2026, 12, 31, 11, 0), calendar) == 6.0


def test_a_working_day_is_eight_hours_on_the_days_new_york_changes_its_clocks():
    calendar = _cal(NEW_YORK, hours={"sun": ["00:00-24:00"]})
    # 8 March 2026 has 23 hours, 1 November 2026 has 25.
    assert reply_hours_between(_local(NEW_YORK, 2026, 3, 8, 0, 0), _local(NEW_YORK, 2026, 3, 9, 0, 0), calendar) == 23
    assert reply_hours_between(_local(NEW_YORK, 2026, 11, 1, 0, 0), _local(NEW_YORK, 2026, 11, 2, 0, 0),
                               calendar) == 25
    nine_to_five = _cal(NEW_YORK, hours={"sun": ["09:00-17:00"]})
    start = _local(NEW_YORK, 2026, 3, 8, 9, 0)
    assert add_reply_hours(start, 8, nine_to_five) == _local(NEW_YORK, 2026, 3, 8, 17, 0)


def test_without_hours_the_clock_runs_around_the_clock():
    start = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert add_reply_hours(start, 24, ReplyHours()) == start + timedelta(hours=24)


@pytest.mark.parametrize(("hours", "rest", "holidays", "problem"), [
    ({"monday": ["10:00-18:00"]}, [], [], "not a weekday"),
    ({"mon": ["10:00-25:00"]}, [], [], "HH:MM-HH:MM"),
    ({"mon": ["18:00-10:00"]}, [], [], "HH:MM-HH:MM"),
    ({"mon": ["10:00"]}, [], [], "HH:MM-HH:MM"),
    ({"mon": ["10:00-14:00", "13:00-18:00"]}, [], [], "overlapping"),
    ({}, ["sunday"], [], "not a weekday"),
    ({}, [], ["25/12/2026"], "not a date"),
    ({}, list(WEEKDAYS), [], "no reply hours"),
])
def test_bad_reply_hours_are_refused_with_a_reason(hours, rest, holidays, problem):
    calendar, problems = parse_reply_hours(TAIPEI, hours, rest, holidays)
    assert calendar is None and any(problem in p for p in problems), problems
