"""Exported times in the creator's timezone: the fast text path says what ``datetime`` says, clock changes included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.exports import LocalTimes

ZONES = ["Asia/Taipei", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London", "UTC"]
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)).map(
    lambda at: at.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)  # no timing in tests: a loaded machine is slow, not wrong
@given(zone=st.sampled_from(ZONES), times=st.lists(stamps, min_size=1, max_size=30))
def test_stored_text_becomes_the_same_local_time_as_datetime_gives(zone, times):
    tz = ZoneInfo(zone)
    local = LocalTimes(tz)
    for at in sorted(times):
        assert local.iso(at.strftime("%Y-%m-%d %H:%M:%S.%f")) == at.astimezone(tz).isoformat()
        assert local.iso(at) == at.astimezone(tz).isoformat()  # what PostgreSQL's driver hands


@pytest.mark.parametrize(("zone", "change"), [("America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),
                                               ("America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC)),
                                               ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, tzinfo=UTC))])
def test_every_minute_around_a_clock_change(zone, change):
    tz = ZoneInfo(zone)
    local = LocalTimes(tz)
    for minute in range(-90, 90):
        at = change + timedelta(minutes=minute, seconds=7)
        assert local.iso(at.strftime("%Y-%m-%d %H:%M:%S.%f")) == at.astimezone(tz).isoformat()


async def test_sqlite_formatting_writes_what_row_by_row_formatting_writes(sessions, settings, now):
    """Taipei keeps one offset: SQLite formats the rows; they must equal the Python path's, field by field."""
    from decimal import Decimal

    from crm.exports import export_batches
    from crm.ingest import record_many
    from crm.interaction import InteractionIn
    from crm.models import Identity

    amounts = ["1280", "12.8", "12.85", "0.05", "100", "1234567.89"]
    items = [InteractionIn("line", f"U{n % 3}", "purchase", now - timedelta(days=n, microseconds=n * 7919),
                           f"p{n}", "小慧" if n % 3 else None, amount=Decimal(amount), currency="TWD")
             for n, amount in enumerate(amounts)]
    items += [InteractionIn("discord", "42", "message", now - timedelta(hours=n), f"m{n}", "阿明", text="嗨" if n else None)
              for n in range(3)]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
        s.add(Identity(fan_id=result.results[0].fan_id, platform="line", external_id="Usecond", display_name=None,
                       name_key=None, created_at=now))  # a second LINE account: rows still exported once
    tz = settings.scoring.tz
    async with sessions() as s:
        fast = [row for rows in [b async for b in export_batches(s, tz=tz)] for row in rows]
        slow = [row for rows in [b async for b in export_batches(s, tz=tz, formatted_in_sql=False)] for row in rows]
    assert [tuple(r) for r in fast] == slow
    assert len(slow) == len(items)
    assert sorted(r[6] for r in slow if r[4] == "purchase") == sorted(amounts)
    assert all(r[5].endswith("+08:00") for r in slow)
