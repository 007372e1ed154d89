"""A LINE answer is an outbox row written in the same transaction as what it answers.

Before, answers were rendered after the commit and sent from in-memory tasks, so a crash
between the commit and the send lost them. Now :func:`attach` adds to a plan's ops whatever
queues its answer: a command's action is wrapped so that, inside its own savepoint, it runs, its
outcome is rendered (catalogue texts) and the answer is queued with the event's reply token; a
greeting (follow, join) is queued by a small action of its own. The outbox key is derived from
the webhook event id, so a redelivered event (its command answered ``AlreadyHandled``, its
follow a duplicate) never queues a second answer. ``bot/line_adapter/outbox_sender.py`` sends them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from linebot.v3.messaging import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import t
from bot.line_adapter import render
from bot.line_adapter.commands import PLATFORM
from bot.line_adapter.events import Plan
from bot.line_adapter.outbox_sender import payload_of
from bot.writer import Action
from crm import outbox
from crm.errors import CrmError
from crm.identity import fan_by_identity

_ANSWER_KEYS = uuid.UUID("0f9b6a4e-2d0c-4e57-8a35-6c1f1d9e7a42")
GREETINGS = {"welcome", "welcome_back", "join"}


def answer_key(event_id: str, respond: str) -> str:
    """The outbox key of an event's answer: a UUID (it doubles as LINE's retry key), one per event."""
    return str(uuid.uuid5(_ANSWER_KEYS, f"{respond}:{event_id}"))


def attach(plan: Plan, locale: str, reply_ttl: float) -> None:
    """Make ``plan`` queue its answer in the transaction that commits it (no-op when it has none)."""
    respond = plan.respond
    inbound = plan.inbound
    if respond is None or not inbound.reply_token:
        return
    if respond == "command":
        plan.ops = [_answering(op, plan, locale, reply_ttl) if isinstance(op, Action) else op for op in plan.ops]
    elif respond in GREETINGS:
        if respond != "join" and not plan.ops:
            return
        messages = [render.text(t(f"line.{respond}", locale))]

        async def greet(session: AsyncSession, now: datetime) -> int | None:
            if respond != "join" and inbound.user_id:
                fan = await fan_by_identity(session, PLATFORM, inbound.user_id)
                if fan is None or fan.opted_out:  # an opted-out fan's follow is not stored: no welcome
                    return None
            return await _queue(session, plan, messages, now, reply_ttl, push=False)

        plan.ops.append(Action(f"line {respond} answer", greet, ordered=False))


def _answering(action: Action, plan: Plan, locale: str, reply_ttl: float) -> Action:
    async def run(session: AsyncSession, now: datetime) -> Any:
        try:
            async with session.begin_nested():
                result = await action.run(session, now)
        except CrmError as exc:  # the command's own writes are rolled back; its apology is still sent
            result = exc
        messages = render.outcome(result, locale)
        if messages:
            push = plan.push_fallback and plan.inbound.chat == "user"
            await _queue(session, plan, messages, now, reply_ttl, push=push)
        return result

    return Action(action.name, run, action.ordered)


async def _queue(session: AsyncSession, plan: Plan, messages: list[Message], now: datetime, reply_ttl: float, *,
                 push: bool) -> int | None:
    inbound = plan.inbound
    to = inbound.user_id or f"{inbound.chat}:{inbound.event_id}"  # a group greeting is only ever a reply
    return await outbox.enqueue(session, platform="line", kind="answer", recipient=to,
                                payload=payload_of(messages, push=push), now=now,
                                key=answer_key(inbound.event_id, plan.respond or ""),
                                reply_token=inbound.reply_token, reply_until=now + timedelta(seconds=reply_ttl))
