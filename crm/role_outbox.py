"""The tier-change outbox for platform roles: which changes still await a role sync, and marking them.

Every tier change is a ``tier_changes`` row whose ``roles_synced_at`` stays NULL until an adapter
has applied the fan's *current* tier on its platform; replaying a row is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan, Identity, TierChange

CHUNK = 500


async def pending_changes(session: AsyncSession, *, after: int = 0, limit: int = CHUNK) -> list[tuple[int, int]]:
    """``(change id, fan id)`` of unsynced tier changes with an id above ``after``, oldest first."""
    rows = await session.execute(
        select(TierChange.id, TierChange.fan_id)
        .where(TierChange.roles_synced_at.is_(None), TierChange.id > after)
        .order_by(TierChange.id).limit(limit))
    return [(int(cid), int(fid)) for cid, fid in rows]


async def latest_change_id(session: AsyncSession) -> int | None:
    """The newest tier change: a reconcile covers everything up to it."""
    value = (await session.execute(select(func.max(TierChange.id)))).scalar()
    return None if value is None else int(value)


async def mark_synced(session: AsyncSession, ids: Sequence[int], now: datetime) -> int:
    """Mark these changes as applied on the platform."""
    marked = 0
    for start in range(0, len(ids), CHUNK):
        result = await session.execute(
            update(TierChange).where(TierChange.id.in_(ids[start : start + CHUNK]))
            .values(roles_synced_at=now).execution_options(synchronize_session=False))
        marked += int(getattr(result, "rowcount", 0) or 0)
    return marked


async def mark_synced_through(session: AsyncSession, last_id: int, now: datetime) -> int:
    """Mark every unsynced change up to ``last_id`` (after a full reconcile)."""
    result = await session.execute(
        update(TierChange).where(TierChange.roles_synced_at.is_(None), TierChange.id <= last_id)
        .values(roles_synced_at=now).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


async def platform_tiers(session: AsyncSession, platform: str, *, fan_ids: Sequence[int] | None = None,
                         external_ids: Sequence[str] | None = None) -> list[tuple[int, str, str]]:
    """``(fan id, external id, tier)`` of a platform's identities, selected by fan or by account."""
    out: list[tuple[int, str, str]] = []
    column, keys = ((Identity.fan_id, list(fan_ids)) if fan_ids is not None
                    else (Identity.external_id, list(external_ids or [])))
    for start in range(0, len(keys), CHUNK):
        rows = await session.execute(
            select(Identity.fan_id, Identity.external_id, Fan.tier).join(Fan, Fan.id == Identity.fan_id)
            .where(Identity.platform == platform, column.in_(keys[start : start + CHUNK])))
        out.extend((int(fid), str(eid), str(tier)) for fid, eid, tier in rows)
    return out
