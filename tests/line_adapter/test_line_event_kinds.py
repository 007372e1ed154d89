"""Event kinds a creator wants from LINE: paid membership, unsend, edits; and an INFO line for the rest."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from crm.models import DeadLetter, Interaction
from tests.line_adapter.conftest import T0, LineRig, event_id, ms, text_event, user

FAN = user(7)


def raw_event(kind: str, *, at: Any = T0, uid: str = FAN, **fields: Any) -> dict[str, Any]:
    """An event as LINE sends it (plain JSON: the installed SDK may not model every type yet)."""
    return {"type": kind, "mode": "active", "timestamp": ms(at), "webhookEventId": event_id(),
            "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": uid}, **fields}


async def rows(rig: LineRig) -> list[Interaction]:
    async with rig.sessions() as session:
        return list((await session.execute(select(Interaction).order_by(Interaction.id))).scalars())


async def test_paid_membership_joined_and_renewed_are_commitment_left_is_recorded_without_points(rig: LineRig) -> None:
    weight = rig.crm.settings.scoring.weights["membership"]
    assert weight == 25.0  # the documented default ([scoring.weights] membership)
    for n, kind in enumerate(("joined", "renewed", "left")):
        event = raw_event("membership", at=T0 + timedelta(days=30 * n), replyToken=f"rt-m{n}",
                          membership={"type": kind, "membershipId": 3189})
        assert await rig.post(event) == 200
    assert [(r.kind, r.summary, r.points) for r in await rows(rig)] == [
        ("membership", "joined", weight), ("membership", "renewed", weight), ("membership_left", "left", 0.0)]
    assert rig.replies_to(FAN) == []  # nothing is said to the fan: LINE tells them itself


async def test_a_membership_of_an_unknown_type_is_a_dead_letter(rig: LineRig) -> None:
    assert await rig.post(raw_event("membership", membership={"type": "paused"})) == 200
    assert await rows(rig) == []
    async with rig.sessions() as session:
        reasons = (await session.execute(select(DeadLetter.reason))).scalars().all()
    assert reasons == ["membership type is not joined, left or renewed"]


async def test_every_line_message_remembers_its_message_id(rig: LineRig) -> None:
    """The storing side is crm/ingest's (it writes InteractionIn.message_ref into the column)."""
    message = text_event(FAN, "hello there")
    assert await rig.post(message) == 200
    assert [r.message_ref for r in await rows(rig)] == [message.message.id]


async def test_unsend_redacts_the_stored_text_and_keeps_the_row_and_points(rig: LineRig) -> None:
    message = text_event(FAN, "oops, my phone number is 0912-345-678", group="C" + "1" * 32)
    other = text_event(FAN, "this one stays", group="C" + "1" * 32, at=T0 + timedelta(minutes=5))
    assert await rig.post(message, other) == 200
    before = await rows(rig)
    unsend = raw_event("unsend", at=T0 + timedelta(minutes=6), unsend={"messageId": message.message.id})
    unsend["source"] = {"type": "group", "groupId": "C" + "1" * 32, "userId": FAN}
    assert await rig.post(unsend) == 200
    assert await rig.post(unsend) == 200  # a redelivery changes nothing more
    after = await rows(rig)
    assert [(r.id, r.summary, r.points) for r in after] == [
        (before[0].id, None, before[0].points), (before[1].id, "this one stays", before[1].points)]


async def test_an_edited_message_replaces_the_stored_summary(rig: LineRig) -> None:
    message = text_event(FAN, "see you at 7", group="C" + "1" * 32)
    assert await rig.post(message) == 200
    edited = raw_event("messageEdited", at=T0 + timedelta(minutes=1), replyToken="rt-e",
                       message={"id": message.message.id, "type": "text", "text": "see  you at\n8 instead"})
    edited["source"] = {"type": "group", "groupId": "C" + "1" * 32, "userId": FAN}
    assert await rig.post(edited) == 200
    (row,) = await rows(rig)
    assert (row.summary, row.occurred_at) == ("see you at 8 instead", T0)  # the message keeps its own time


async def test_an_edit_follows_the_privacy_setting_and_never_revives_unsent_text(rig: LineRig) -> None:
    from crm.message_edits import edit_message, redact_message

    first, second = text_event(FAN, "first"), text_event(FAN, "second", at=T0 + timedelta(minutes=2))
    assert await rig.post(first, second) == 200
    quiet = replace(rig.crm.settings, store_text=False)
    async with rig.sessions.begin() as session:
        assert await edit_message(session, quiet, "line", first.message.id, "edited", T0) is True
        assert await redact_message(session, "line", [second.message.id]) == 1
        assert await edit_message(session, rig.crm.settings, "line", second.message.id, "edited", T0) is False
        assert await edit_message(session, rig.crm.settings, "line", "no-such-message", "edited", T0) is False
    assert [r.summary for r in await rows(rig)] == [None, None]


@pytest.mark.parametrize(("kind", "fields"), [
    ("beacon", {"beacon": {"hwid": "d41d8cd98f", "type": "enter"}}),
    ("videoPlayComplete", {"videoPlayComplete": {"trackingId": "track_id"}}),
    ("accountLink", {"link": {"result": "ok", "nonce": "secret-nonce"}}),
    ("activated", {"chatControl": {"expireAt": 1462629479859}}),
    ("botSuspended", {}),
])
async def test_types_superfan_does_not_use_get_an_info_line_and_nothing_stored(
        rig: LineRig, caplog: pytest.LogCaptureFixture, kind: str, fields: dict[str, Any]) -> None:
    event = raw_event(kind, **fields)
    with caplog.at_level(logging.INFO, logger="bot.line_adapter"):
        assert await rig.post(event) == 200
    assert await rows(rig) == []
    async with rig.sessions() as session:
        assert (await session.execute(select(DeadLetter))).first() is None
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(kind in line and event["webhookEventId"] in line for line in lines), lines
    assert not any("secret-nonce" in line or FAN in line for line in lines)
