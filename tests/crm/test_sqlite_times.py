"""Times as SQLite stores them: the bulk formatter must write exactly what SQLAlchemy writes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from crm.db import parse_sqlite_datetime, sqlite_datetimes

_as_sqlalchemy_writes = sqlite.DATETIME().bind_processor(sqlite.dialect())
utc_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
    lambda t: t.replace(tzinfo=UTC))


@given(st.lists(utc_times, min_size=1, max_size=20))
def test_bulk_text_is_sqlalchemys_text_and_reads_back_to_the_same_time(times):
    texts = sqlite_datetimes([t.timestamp() for t in times], times)
    assert texts == [_as_sqlalchemy_writes(t.replace(tzinfo=None)) for t in times]
    assert [parse_sqlite_datetime(text) for text in texts] == times


def test_microseconds_at_the_edge_of_a_second_and_before_1970():
    times = [datetime(2026, 5, 1, 23, 59, 59, 999_999, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
             datetime(2026, 5, 2, tzinfo=UTC)]
    assert sqlite_datetimes([t.timestamp() for t in times], times) == [
        "2026-05-01 23:59:59.999999", "1969-12-31 23:59:59.500000", "2026-05-02 00:00:00.000000"]
