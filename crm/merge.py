"""Merging two fan records that turn out to be one person (a /link code, or staff by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import BadInput, FanNotFound
from crm.fan_tables import move_rows
from crm.models import Fan
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, reevaluate


@dataclass(frozen=True)
class MergeResult:
    kept: int
    removed: int
    tier_move: TierMove | None


async def merge_fans(
    session: AsyncSession, settings: CrmSettings, keep_id: int, other_id: int, *, now: datetime
) -> MergeResult:
    """Move everything of ``other`` onto ``keep`` and delete ``other``. Nothing is lost.

    The rows of every table in :data:`crm.fan_tables.FAN_TABLES` move (a topic or delivery the
    kept record already has is not doubled); scores add up (both are sums over the same epoch);
    the stronger pin and the earlier first-seen survive; opting out on either record keeps the
    merged one opted out.
    """
    if keep_id == other_id:
        raise BadInput("cannot merge a fan with itself", code="merge.self")
    keep = await session.get(Fan, keep_id)
    other = await session.get(Fan, other_id)
    if keep is None:
        raise FanNotFound(f"#{keep_id}")
    if other is None:
        raise FanNotFound(f"#{other_id}")

    await move_rows(session, keep_id, other_id)

    keep.score_base += other.score_base
    keep.first_seen_at = min(keep.first_seen_at, other.first_seen_at)
    keep.last_seen_at = max(keep.last_seen_at, other.last_seen_at)
    keep.opted_out = keep.opted_out or other.opted_out
    if other.tier_pinned and (keep.tier_pinned is None
                              or settings.tiers.rank(other.tier_pinned) > settings.tiers.rank(keep.tier_pinned)):
        keep.tier_pinned, keep.tier_pinned_by, keep.tier_pinned_at = (
            other.tier_pinned, other.tier_pinned_by, other.tier_pinned_at)
    if settings.tiers.rank(other.tier) > settings.tiers.rank(keep.tier):
        keep.tier = other.tier
    if keep.referral_code is None and other.referral_code:
        code, other.referral_code = other.referral_code, None
        await session.flush()
        keep.referral_code = code
    keep.referred_by = keep.referred_by or (other.referred_by if other.referred_by != keep_id else None)
    await session.flush()
    await session.delete(other)
    await session.flush()
    moves = await reevaluate(session, settings, now, fan_ids=[keep_id], reason="merge")
    await session.refresh(keep)
    return MergeResult(keep_id, other_id, moves[0] if moves else None)

