"""The staff inbox's bookkeeping: which Discord thread belongs to which conversation, and what staff see.

Platform-free (the Discord side is ``bot/discord_adapter/inbox.py``). A conversation gets its
thread in three steps, each committed: :func:`claim_thread` (a conditional update of
``thread_claimed_at``, so of two instances only one creates the thread), the thread is created
(named with the conversation id, so it can be found again), :func:`store_thread_ref`. A crash
between the last two leaves a claim and no reference; the claim expires after ``ttl`` and the
next attempt looks for the thread by name before creating one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.models import Conversation, Fan, Interaction, Outbox, table
from crm.profiles import amount_of, fan_documents, iso
from crm.settings import CrmSettings

#: How long a claim keeps other attempts from creating the thread (a crash's claim expires).
CLAIM_TTL = timedelta(seconds=60)
#: Failed relays younger than this are reported in their thread (older ones were before the feature).
REPORT_WINDOW = timedelta(days=7)
RELAY_FAILED = "inbox_relay_failed"

_c = table(Conversation).c
_o = table(Outbox).c


@dataclass(frozen=True)
class ThreadClaim:
    """``thread_ref``: the thread already stored; else ``won``: whether this attempt may create it."""

    thread_ref: str | None
    won: bool


async def claim_thread(session: AsyncSession, conversation_id: int, now: datetime,
                       ttl: timedelta = CLAIM_TTL) -> ThreadClaim | None:
    """Claim the right to create ``conversation_id``'s inbox thread; None if there is no such conversation."""
    ref = (await session.execute(select(_c.thread_ref).where(_c.id == conversation_id))).first()
    if ref is None:
        return None
    if ref[0]:
        return ThreadClaim(ref[0], False)
    result = await session.execute(
        update(table(Conversation))
        .where(_c.id == conversation_id, _c.thread_ref.is_(None),
               or_(_c.thread_claimed_at.is_(None), _c.thread_claimed_at <= now - ttl))
        .values(thread_claimed_at=now))
    return ThreadClaim(None, result.rowcount == 1)  # type: ignore[attr-defined]


async def store_thread_ref(session: AsyncSession, conversation_id: int, thread_ref: str) -> None:
    """Remember the thread created for a conversation (kept if one was stored meanwhile)."""
    await session.execute(update(table(Conversation))
                          .where(_c.id == conversation_id, _c.thread_ref.is_(None))
                          .values(thread_ref=thread_ref))


async def forget_thread(session: AsyncSession, conversation_id: int, thread_ref: str) -> None:
    """The stored thread is gone (deleted by staff): the next attempt creates a new one."""
    await session.execute(update(table(Conversation))
                          .where(_c.id == conversation_id, _c.thread_ref == thread_ref)
                          .values(thread_ref=None, thread_claimed_at=None))


async def conversation_for_thread(session: AsyncSession, thread_ref: str) -> Conversation | None:
    """The conversation whose inbox thread this is (the newest, should a thread be reused)."""
    return (await session.execute(select(Conversation).where(Conversation.thread_ref == thread_ref)
                                  .order_by(Conversation.id.desc()).limit(1))).scalar_one_or_none()


async def inbox_context(session: AsyncSession, settings: CrmSettings, conversation_id: int,
                        now: datetime) -> dict[str, Any] | None:
    """What the thread's context card shows: the fan document (tier, score, preferences, tags,
    notes), the conversation (platform, waiting since, due) and the fan's last purchase."""
    conv = await session.get(Conversation, conversation_id)
    if conv is None:
        return None
    fan = await session.get(Fan, conv.fan_id)
    if fan is None:
        return None
    (doc,) = await fan_documents(session, [fan], settings, now, interactions=0)
    tz = settings.scoring.tz
    ic = table(Interaction).c
    purchase = (await session.execute(
        select(ic.occurred_at, ic.amount_cents, ic.currency, ic.summary)
        .where(ic.fan_id == fan.id, ic.kind == "purchase")
        .order_by(ic.occurred_at.desc()).limit(1))).first()
    doc["last_purchase"] = None if purchase is None else {
        "at": iso(purchase[0], tz), "amount": amount_of(purchase[1]), "currency": purchase[2], "summary": purchase[3]}
    doc["conversation"] = {"id": conv.id, "platform": conv.platform, "status": conv.status,
                           "waiting_since": iso(conv.waiting_since, tz), "due_at": iso(conv.due_at, tz),
                           "overdue": bool(conv.due_at and conv.due_at < now)}
    return doc


async def report_failed_relays(session: AsyncSession, now: datetime, window: timedelta = REPORT_WINDOW) -> int:
    """Queue a notice in the inbox thread for each relay to a fan that failed for good, once each.

    The notice is an outbox row keyed by the failed relay's id, so polling again (from any
    instance) queues nothing new. Returns how many notices were queued now.
    """
    failed = (await session.execute(
        select(_o.id, _o.conversation_id, _o.fan_id, _o.last_error)
        .where(_o.kind == "relay", _o.status == outbox.FAILED, _o.conversation_id.is_not(None),
               _o.created_at >= now - window))).all()
    queued = 0
    for relay_id, conversation_id, fan_id, error in failed:
        row = await outbox.enqueue(session, platform="discord", kind=RELAY_FAILED, recipient="inbox",
                                   payload={"conversation_id": conversation_id, "relay_id": relay_id,
                                            "reason": error or ""},
                                   now=now, key=f"relay-failed:{relay_id}", fan_id=fan_id,
                                   conversation_id=conversation_id)
        queued += row is not None
    return queued
