"""The reply promise, read back: who is waiting, reminders and breaches (each once), and figures.

Reads the waits :mod:`crm.conversations` writes (import these through it). Reminders and breaches
are claimed with a conditional ``UPDATE … WHERE reminded_at IS NULL … RETURNING`` in the caller's
transaction, together with the outbox row they queue: of two runs (a restart, two instances on one
PostgreSQL database) exactly one sets the marker and queues the message, and the outbox key
(``sla_reminder:<wait id>``) would refuse a second row anyway.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, distinct, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.models import Conversation, ConversationWait, Fan, table
from crm.reply_hours import add_reply_hours
from crm.settings import CrmSettings

_c, _w, _f = table(Conversation).c, table(ConversationWait).c, table(Fan).c
#: Waits ended this way count as answered (``elsewhere``: staff answered outside superfan).
ANSWERED_BY = ("reply", "elsewhere")
#: Waits closed this way were not requests (spam, a thank-you): left out of the figures.
NOT_REQUESTS = ("spam", "thanks")


@dataclass(frozen=True)
class Unanswered:
    """A conversation waiting for a reply, as the digest and ``superfan inbox`` list it."""

    conversation_id: int
    fan_id: int
    display_name: str
    tier: str
    platform: str
    waiting_since: datetime
    due_at: datetime
    overdue: bool
    hours_waiting: float
    thread_ref: str | None


@dataclass(frozen=True)
class SlaFigures:
    """How the promise was kept over the last ``window_days`` (waits that started in the window).

    ``within_sla_pct`` is within-SLA answers over the waits already decided (answered, or still
    open past due); None when there are none. Median first response is wall-clock hours.
    """

    window_days: int
    conversations: int
    answered: int
    within_sla: int
    within_sla_pct: float | None
    median_first_response_hours: float | None
    breaches: int


async def unanswered(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[Unanswered]:
    """Waiting conversations: overdue first, then higher tiers, then the longest wait."""
    rows = await session.execute(
        select(_c.id, _c.fan_id, _f.display_name, _f.tier, _c.platform, _c.waiting_since, _c.due_at, _c.thread_ref)
        .select_from(table(Conversation).join(table(Fan), _f.id == _c.fan_id))
        .where(_c.status == "waiting", _c.waiting_since.is_not(None), _c.due_at.is_not(None)))
    rank = {key: n for n, key in enumerate(settings.tiers.keys)}
    items = [Unanswered(cid, fan_id, name, tier, platform, since, due, due <= now,
                        round(max(0.0, (now - since).total_seconds()) / 3600.0, 2), thread)
             for cid, fan_id, name, tier, platform, since, due, thread in rows]
    items.sort(key=lambda u: (not u.overdue, -rank.get(u.tier, -1), u.waiting_since, u.conversation_id))
    return items


async def claim_reminders(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[int]:
    """Waits now due within ``remind_before_hours`` of reply time and not reminded: mark them and,
    with a staff inbox, queue an ``sla_reminder``; the ids of their conversations, each once ever.

    "Within R reply hours of due" is ``due_at <= add_reply_hours(now, R)``: one indexed
    comparison (a due time always falls inside open time, so the two readings agree).
    """
    rules = settings.sla
    if rules.remind_before_hours <= 0:
        return []
    cutoff = add_reply_hours(now, rules.remind_before_hours, rules.calendar)
    claimed = (await session.execute(
        update(table(ConversationWait))
        .where(_w.ended_at.is_(None), _w.reminded_at.is_(None), _w.due_at > now, _w.due_at <= cutoff)
        .values(reminded_at=now).returning(_w.id, _w.conversation_id, _w.fan_id, _w.due_at))).all()
    await _mirror(session, claimed, reminded_at=now)
    if rules.inbox:
        for wait_id, cid, fan_id, due in claimed:
            await outbox.enqueue(session, platform="discord", kind="sla_reminder", recipient="inbox",
                                 payload={"conversation_id": cid, "due_at": due.isoformat()}, now=now,
                                 key=f"sla_reminder:{wait_id}", fan_id=fan_id, conversation_id=cid)
    return sorted(cid for _, cid, _, _ in claimed)


async def claim_breaches(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[int]:
    """Open waits past due and not yet recorded as breached: mark them (``breached_at``) and,
    with a staff inbox, queue an ``sla_breach``; the ids of their conversations, each once ever."""
    claimed = (await session.execute(
        update(table(ConversationWait))
        .where(_w.ended_at.is_(None), _w.breached_at.is_(None), _w.due_at <= now)
        .values(breached_at=now).returning(_w.id, _w.conversation_id, _w.fan_id, _w.due_at))).all()
    await _mirror(session, claimed, breached_at=now)
    if settings.sla.inbox:
        for wait_id, cid, fan_id, due in claimed:
            await outbox.enqueue(session, platform="discord", kind="sla_breach", recipient="inbox",
                                 payload={"conversation_id": cid, "due_at": due.isoformat()}, now=now,
                                 key=f"sla_breach:{wait_id}", fan_id=fan_id, conversation_id=cid)
    return sorted(cid for _, cid, _, _ in claimed)


async def _mirror(session: AsyncSession, claimed: Sequence[Any], **marker: datetime) -> None:
    """Copy a claimed marker to the conversations (the fan card and inbox read them there)."""
    ids = sorted({cid for _, cid, _, _ in claimed})
    for start in range(0, len(ids), 500):
        await session.execute(update(table(Conversation)).where(_c.id.in_(ids[start : start + 500]))
                              .values(**marker))


def wait_verdicts(now: datetime) -> tuple[Any, Any, Any, Any]:
    """How a wait stands at ``now``, as SQL conditions on ``conversation_waits`` (each false, never
    NULL, when it does not hold): a request (not closed as spam or a thank-you), answered within SLA,
    a breach (answered late, or open past due), and undecided (open, not yet due). A request is
    exactly one of the last three."""
    request = or_(_w.ended_by.is_(None), _w.ended_by.not_in(NOT_REQUESTS))
    answered = and_(_w.ended_at.is_not(None), _w.ended_at <= now, _w.ended_by.is_not(None),
                    _w.ended_by.in_(ANSWERED_BY))
    unanswered = or_(_w.ended_at.is_(None), _w.ended_at > now, _w.ended_by.is_(None), _w.ended_by.not_in(ANSWERED_BY))
    return (request, and_(answered, _w.ended_at <= _w.due_at),
            and_(request, or_(and_(answered, _w.ended_at > _w.due_at), and_(unanswered, _w.due_at <= now))),
            and_(request, unanswered, _w.due_at > now))


async def sla_figures(session: AsyncSession, settings: CrmSettings, now: datetime,
                      window_days: int = 7) -> SlaFigures:
    """The promise over the last ``window_days``: waits that started in the window (spam and
    thank-you closures left out), answered, within SLA (answered by the due time), breaches (answered
    late, or open past due), and the median first response of conversations opened in the window.
    Computed from the times themselves, so it is right even if a breach was never claimed.

    The waits are counted in one aggregate query (``started_at`` index); only the first responses
    of the window are read, for their median."""
    since = now - timedelta(days=window_days)
    _, within_sla, breach, _ = wait_verdicts(now)
    answered = and_(_w.ended_at.is_not(None), _w.ended_at <= now, _w.ended_by.in_(ANSWERED_BY))
    conversations, answered_n, within, breaches = (await session.execute(
        select(func.count(distinct(_w.conversation_id)), func.count().filter(answered),
               func.count().filter(within_sla), func.count().filter(breach))
        .where(_w.started_at >= since, _w.started_at <= now))).one()
    decided = within + breaches
    firsts = list((await session.execute(
        select(_c.first_response_seconds).where(_c.opened_at >= since, _c.opened_at <= now,
                                                _c.first_response_seconds.is_not(None)))).scalars())
    return SlaFigures(
        window_days=window_days, conversations=int(conversations), answered=int(answered_n), within_sla=int(within),
        within_sla_pct=round(100.0 * within / decided, 1) if decided else None,
        median_first_response_hours=round(statistics.median(firsts) / 3600.0, 2) if firsts else None,
        breaches=int(breaches))
