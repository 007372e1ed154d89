"""Platform events that have been acted on, so a redelivered event is noticed and not acted on twice.

Interactions dedupe themselves (``source_event_id`` is unique per platform); this is for events
whose effect is not one interaction row: a command that merges accounts, opts a fan out or
answers with a code. The adapter claims the event id in the same transaction as the effect, so
either both are committed or neither is, and a redelivery (LINE's ``isRedelivery``, a retried
Discord interaction) finds the claim and does nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import insert_ignore
from crm.errors import BadInput
from crm.models import ProcessedEvent, table

MAX_EVENT_ID = 128


def _checked(platform: str, event_id: str) -> None:
    if not platform or not event_id or len(event_id) > MAX_EVENT_ID:
        raise BadInput(f"an event needs a platform and an id of 1–{MAX_EVENT_ID} characters", code="event_id.bad",
                       max=MAX_EVENT_ID)


async def claim_event(session: AsyncSession, platform: str, event_id: str, now: datetime) -> bool:
    """True the first time ``(platform, event_id)`` is claimed, False for a redelivery.

    ``INSERT … ON CONFLICT DO NOTHING``: two transactions racing for one event cannot both win
    (the loser blocks on the unique index until the winner commits or rolls back). Claim inside
    the transaction that carries out the event, before its effects.
    """
    _checked(platform, event_id)
    result = await session.execute(
        insert_ignore(session, table(ProcessedEvent), "platform", "event_id"),
        {"platform": platform, "event_id": event_id, "processed_at": now, "result": None},
    )
    return bool(getattr(result, "rowcount", 0))


async def set_event_result(session: AsyncSession, platform: str, event_id: str, result: str) -> None:
    """Note what a claimed event came to (e.g. ``done:checkin``), for whoever looks into a redelivery."""
    _checked(platform, event_id)
    events = table(ProcessedEvent)
    await session.execute(
        update(events).where(events.c.platform == platform, events.c.event_id == event_id)
        .values(result=result[:500])
    )
