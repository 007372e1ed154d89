"""Conversations and the reply promise: what a creator and their staff see happen to a fan's DM."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select

from crm import conversations as conv
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Conversation, ConversationWait, Interaction, Outbox
from crm.settings import CrmSettings, SlaRules


def _dm(user: str, at: datetime, text: str = "請問週末有直播嗎？", event: str | None = None,
        kind: str = "dm_in") -> InteractionIn:
    return InteractionIn("line", user, kind, at, event or f"ev-{user}-{at.timestamp()}-{text}", "小美", text=text)


async def _conversations(sessions):
    async with sessions() as s:
        return list((await s.execute(select(Conversation).order_by(Conversation.id))).scalars())


async def test_a_line_dm_opens_a_conversation_due_a_day_later_and_a_group_message_does_not(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now), _dm("U2", now, kind="message")], settings, now)
    (c,) = await _conversations(sessions)
    assert (c.status, c.platform, c.waiting_since, c.due_at) == ("waiting", "line", now, now + timedelta(hours=24))


def _sla(**kw) -> CrmSettings:
    return replace(CrmSettings(), sla=replace(SlaRules(), **kw))


async def _fan(sessions, settings, now, user="U1") -> int:
    async with sessions.begin() as s:
        rec = await record_many(s, [_dm(user, now - timedelta(days=30), "hi", kind="message")], settings, now)
    return rec.fan_ids[0]


async def _outbox(sessions, kind):
    async with sessions() as s:
        return list((await s.execute(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id))).scalars())


async def test_dms_of_one_group_join_one_conversation_and_the_earliest_starts_the_clock(sessions, settings, now):
    settings = _sla(inbox=True)
    async with sessions.begin() as s:  # arrivals out of order, as LINE may batch them
        await record_many(s, [_dm("U1", now + timedelta(minutes=5), "還有一件事"), _dm("U1", now, "請問")],
                          settings, now)
    (c,) = await _conversations(sessions)
    assert c.waiting_since == now and c.last_inbound_at == now + timedelta(minutes=5)
    queued = await _outbox(sessions, "inbox_message")
    assert sorted(m.payload for m in queued) == sorted(
        f'{{"conversation_id": {c.id}, "text": "{t}", "at": "{at.isoformat()}"}}'
        for t, at in (("還有一件事", now + timedelta(minutes=5)), ("請問", now)))


async def test_a_reply_ends_the_wait_relays_to_the_fan_and_a_thank_you_does_not_restart_the_clock(
        sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now)], settings, now)
    (c,) = await _conversations(sessions)
    replied = now + timedelta(hours=3)
    async with sessions.begin() as s:
        relay_id = await conv.note_reply(s, settings, c.id, text="有的，晚上八點！", by="staff", now=replied)
    (relay,) = await _outbox(sessions, "relay")
    assert (relay.id, relay.platform, relay.recipient, relay.payload) == (
        relay_id, "line", "U1", '{"text": "有的，晚上八點！"}')
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", replied + timedelta(minutes=1), "謝謝！"),
                              _dm("U1", replied + timedelta(minutes=2), "[sticker] OK")], settings, replied)
    (c,) = await _conversations(sessions)
    assert (c.status, c.waiting_since, c.first_response_seconds) == ("answered", None, 3 * 3600)
    async with sessions() as s:
        (wait,) = (await s.execute(select(ConversationWait))).scalars()
        out = (await s.execute(select(Interaction.kind).where(Interaction.kind == "dm_out"))).scalars().all()
    assert (wait.ended_by, wait.response_seconds) == ("reply", 3 * 3600) and out == ["dm_out"]
    # A real question restarts the clock on the same conversation.
    later = replied + timedelta(days=1)
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", later, "那下週呢？")], settings, later)
    (c2,) = await _conversations(sessions)
    assert (c2.id, c2.status, c2.waiting_since, c2.due_at) == (c.id, "waiting", later, later + timedelta(hours=24))


async def test_resolving_is_recorded_and_the_next_dm_opens_a_new_conversation(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now)], settings, now)
    (c,) = await _conversations(sessions)
    async with sessions.begin() as s:
        await conv.resolve(s, settings, c.id, how="elsewhere", by="creator", now=now + timedelta(hours=1))
        await conv.resolve(s, settings, c.id, how="spam", by="creator", now=now + timedelta(hours=2))  # no-op
        assert await conv.open_conversation(s, c.fan_id) is None
    later = now + timedelta(days=2)
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", later, "你好")], settings, later)
    first, second = await _conversations(sessions)
    assert (first.status, first.resolution, first.resolved_at) == ("resolved", "elsewhere", now + timedelta(hours=1))
    assert (second.status, second.waiting_since) == ("waiting", later)
    async with sessions() as s:
        assert (await conv.open_conversation(s, c.fan_id)).id == second.id
        figures = await conv.sla_figures(s, settings, later)
    assert (figures.conversations, figures.answered, figures.within_sla, figures.breaches) == (2, 1, 1, 0)


async def test_reminders_and_breaches_happen_once_across_runs_and_sessions(sessions, now):
    settings = _sla(inbox=True, remind_before_hours=4)
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now), _dm("U2", now + timedelta(hours=2))], settings, now)
    (a, b) = await _conversations(sessions)
    early = now + timedelta(hours=19)
    async with sessions.begin() as s:
        assert await conv.claim_reminders(s, settings, early) == []
    remind_at = now + timedelta(hours=20, minutes=30)

    async def claim():  # two instances at once: one session each
        async with sessions.begin() as s:
            return await conv.claim_reminders(s, settings, remind_at)

    assert sorted(await asyncio.gather(claim(), claim())) == [[], [a.id]]
    due = now + timedelta(hours=26)
    async with sessions.begin() as s:
        assert await conv.claim_breaches(s, settings, due) == [a.id, b.id]
        assert await conv.claim_reminders(s, settings, due) == []  # past due: no late reminder
    async with sessions.begin() as s:
        assert await conv.claim_breaches(s, settings, due + timedelta(hours=1)) == []
    assert [m.conversation_id for m in await _outbox(sessions, "sla_reminder")] == [a.id]
    assert [m.conversation_id for m in await _outbox(sessions, "sla_breach")] == [a.id, b.id]
    async with sessions() as s:
        (c,) = [c for c in await _conversations(sessions) if c.id == a.id]
        listed = await conv.unanswered(s, settings, due)
    assert (c.reminded_at, c.breached_at) == (remind_at, due)
    assert [u.conversation_id for u in listed] == [a.id, b.id] and all(u.overdue for u in listed)


async def test_without_an_inbox_the_clock_runs_but_nothing_is_queued_for_discord(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now)], settings, now)
        assert await conv.claim_breaches(s, settings, now + timedelta(days=2)) != []
    assert await _outbox(sessions, "inbox_message") == [] and await _outbox(sessions, "sla_breach") == []


async def test_unanswered_lists_overdue_first_then_higher_tiers_then_the_longest_wait(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, [_dm("U1", now - timedelta(hours=30)), _dm("U2", now - timedelta(hours=2)),
                              _dm("U3", now - timedelta(hours=5))], settings, now)
    convs = {c.fan_id: c for c in await _conversations(sessions)}
    async with sessions.begin() as s:
        from crm.models import Fan
        fan_u2 = convs[sorted(convs)[1]].fan_id
        await s.execute(Fan.__table__.update().where(Fan.id == fan_u2).values(tier=settings.tiers.keys[-1]))
        listed = await conv.unanswered(s, settings, now)
    order = [u.fan_id for u in listed]
    assert order == [sorted(convs)[0], fan_u2, sorted(convs)[2]]
    assert listed[0].overdue and listed[0].hours_waiting == 30.0


async def test_a_reply_to_an_unknown_conversation_is_a_clear_error(sessions, settings, now):
    import pytest

    from crm.errors import CrmError

    async with sessions.begin() as s:
        with pytest.raises(CrmError) as caught:
            await conv.note_reply(s, settings, 12345, text="hi", by="staff", now=now)
    assert caught.value.code == "conversation.not_found"
