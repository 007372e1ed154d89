"""What crm/interaction.validate refuses or repairs before anything is stored, and crm/clock.parse_iso."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from crm.clock import parse_iso
from crm.errors import BadInput
from crm.interaction import InteractionIn, validate, validate_many

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def event(**changes: object) -> InteractionIn:
    return InteractionIn("line", "U1", "message", AT, "ev-1")._replace(**changes)


def refused(item: InteractionIn) -> str:
    """The code both validate and the batch path refuse ``item`` with (they must agree)."""
    with pytest.raises(BadInput) as one:
        validate(item)
    with pytest.raises(BadInput) as many:
        validate_many([event(), item])
    assert one.value.code == many.value.code
    return one.value.code


@pytest.mark.parametrize("at", [
    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC),
    datetime(2200, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
])
def test_times_outside_1970_to_2200_are_refused(at: datetime) -> None:
    assert refused(event(occurred_at=at)) == "time.out_of_range"


@pytest.mark.parametrize("at", [
    datetime(1970, 1, 1, tzinfo=UTC),  # the earliest
    datetime(1998, 5, 4, 10, 0, tzinfo=timezone(timedelta(hours=8))),  # an old order imported from a shop's history
    datetime(2199, 12, 31, 23, 59, tzinfo=UTC),
])
def test_history_and_the_near_future_are_accepted(at: datetime) -> None:
    assert validate(event(occurred_at=at)).occurred_at == at
    assert validate_many([event(occurred_at=at)])[0].occurred_at == at


@pytest.mark.parametrize("bad", ["U1\x00", "\x00", "U\x1f1", "U1\x7f", "U\u20281", "U\x851", "U1\ud800"])
def test_control_characters_in_ids_are_refused(bad: str) -> None:
    assert refused(event(external_id=bad)) == "external_id.bad_characters"
    assert refused(event(source_event_id=f"ev-{bad}")) == "event_id.bad_characters"


def test_a_nul_in_text_or_name_is_replaced_so_any_database_can_store_it() -> None:
    item = validate(event(text="hi\x00there", display_name="A\x00nn"))
    assert (item.text, item.display_name) == ("hi\ufffdthere", "A\ufffdnn")
    assert validate_many([event(text="x\x00")])[0].text == "x\ufffd"


def test_ordinary_ids_and_text_pass_unchanged() -> None:
    item = event(external_id="fan@example.com", source_event_id="order:A-1001/2", text="多謝 🎉\n")
    assert validate(item) is item


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_parse_iso_says_out_of_range_instead_of_overflowing(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_iso(text)


def test_parse_iso_still_reads_offsets_and_z() -> None:
    assert parse_iso("2026-11-22T20:15:00+08:00") == datetime(2026, 11, 22, 12, 15, tzinfo=UTC)
    assert parse_iso("2026-11-22T12:15:00Z") == datetime(2026, 11, 22, 12, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_iso("2026-11-22T12:15:00")
