"""Handled-event claims: the first delivery of an event wins, a redelivery is recognised."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.errors import BadInput
from crm.models import ProcessedEvent
from crm.processed_events import claim_event, set_event_result

EID = "01JD5ZQX4W8K3N6M2P7R9T1V0B"


async def test_first_claim_wins_and_a_redelivery_is_recognised(sessions, now):
    async with sessions.begin() as s:
        assert await claim_event(s, "line", EID, now) is True
        assert await claim_event(s, "line", EID, now) is False  # same transaction
    async with sessions.begin() as s:
        assert await claim_event(s, "line", EID, now + timedelta(minutes=5)) is False  # after the commit
        assert await claim_event(s, "discord", EID, now) is True  # ids are per platform
    async with sessions() as s:
        rows = (await s.execute(select(ProcessedEvent.platform, ProcessedEvent.processed_at)
                                .order_by(ProcessedEvent.id))).all()
    assert rows == [("line", now), ("discord", now)]  # the first claim's time is kept


async def test_a_rolled_back_claim_leaves_the_event_unclaimed(sessions, now):
    """The claim shares the effect's transaction: if the effect is lost, the next delivery runs it."""
    with pytest.raises(RuntimeError):
        async with sessions.begin() as s:
            assert await claim_event(s, "line", EID, now)
            raise RuntimeError("crash before commit")
    async with sessions.begin() as s:
        assert await claim_event(s, "line", EID, now) is True


async def test_the_result_is_kept_beside_the_claim(sessions, now):
    async with sessions.begin() as s:
        await claim_event(s, "line", EID, now)
        await set_event_result(s, "line", EID, "done:checkin")
    async with sessions() as s:
        assert (await s.execute(select(ProcessedEvent.result))).scalar_one() == "done:checkin"


@pytest.mark.parametrize(("platform", "event_id"), [("line", ""), ("", EID), ("line", "x" * 129)])
async def test_unusable_ids_are_refused_with_a_message(sessions, now, platform, event_id):
    async with sessions.begin() as s:
        with pytest.raises(BadInput, match="an event needs"):
            await claim_event(s, platform, event_id, now)
