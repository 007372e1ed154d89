"""Dead letters: platform events superfan could not understand, kept whole instead of dropped.

A webhook acknowledges a signed request only once everything in it is committed; an event that
cannot be parsed is committed here, with a short reason (never fan content), in the same
transaction as the request's other events. After an upgrade, ``superfan dead-letters replay``
parses them again and marks the ones it could record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import insert_ignore
from crm.models import DeadLetter, table

#: Longest reason kept (the column holds 200): reasons are short, fixed phrases.
REASON_CHARS = 200


class DeadLetterIn(NamedTuple):
    """One event to keep: ``raw`` is its JSON text as received, ``reason`` says what was wrong."""

    platform: str
    event_id: str | None
    event_type: str | None
    reason: str
    raw: str


async def keep(session: AsyncSession, letter: DeadLetterIn, now: datetime) -> bool:
    """Store ``letter``; False when the same event (platform and event id) is already kept.

    A request answered 5xx is delivered again whole, so the same unusable event can come twice.
    """
    values = {
        "platform": letter.platform, "event_id": letter.event_id,
        "event_type": letter.event_type[:32] if letter.event_type else None,
        "reason": letter.reason[:REASON_CHARS], "raw": letter.raw, "received_at": now,
    }
    result = await session.execute(insert_ignore(session, table(DeadLetter), "platform", "event_id").values(values))
    return bool(getattr(result, "rowcount", 1))


async def waiting(session: AsyncSession) -> int:
    """How many dead letters have not been replayed yet (for ``/healthz``)."""
    stmt = select(func.count()).select_from(DeadLetter).where(DeadLetter.replayed_at.is_(None))
    return int((await session.execute(stmt)).scalar_one())


async def listing(session: AsyncSession, ids: Sequence[int] = (), *, include_replayed: bool = True
                  ) -> list[DeadLetter]:
    """Dead letters oldest first: the given ids, or all of them."""
    stmt = select(DeadLetter).order_by(DeadLetter.id)
    if ids:
        stmt = stmt.where(DeadLetter.id.in_(list(ids)))
    if not include_replayed:
        stmt = stmt.where(DeadLetter.replayed_at.is_(None))
    return list((await session.execute(stmt)).scalars())


async def mark_replayed(session: AsyncSession, letter_id: int, now: datetime) -> None:
    """Record that ``letter_id`` was understood by a replay (it stays listed, with the time)."""
    await session.execute(update(DeadLetter).where(DeadLetter.id == letter_id).values(replayed_at=now)
                          .execution_options(synchronize_session=False))
