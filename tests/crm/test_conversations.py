"""Conversations and the reply promise: what a creator and their staff see happen to a fan's DM."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from crm import conversations as conv
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Conversation, ConversationWait, Interaction, Outbox
from crm.reply_hours import parse_reply_hours
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
