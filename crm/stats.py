"""Community figures for `/stats`, `superfan stats` and the digest: tiers and the true-fans goal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan
from crm.profiles import fan_documents, ranked_fans
from crm.settings import CrmSettings


async def tier_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Fan.tier, func.count()).group_by(Fan.tier))
    return {tier: int(n) for tier, n in rows}


async def fans_at(session: AsyncSession, tiers: Sequence[str]) -> int:
    """How many fans are at one of ``tiers``: what :func:`tier_counts` adds up for them, read from
    the tier index's ranges instead of all of it (at 100k fans, 0.1 ms instead of 6)."""
    return int((await session.execute(select(func.count()).select_from(Fan).where(Fan.tier.in_(tiers))))
               .scalar_one())


async def community_stats(session: AsyncSession, settings: CrmSettings, now: datetime, *,
                          top: int = 10) -> dict[str, Any]:
    """Fans per tier, true fans against the goal, and the top fans by today's score."""
    counts = await tier_counts(session)
    rules = settings.tiers
    true_keys = rules.keys[rules.rank(rules.true_fan_tier):]
    true_count = sum(counts.get(k, 0) for k in true_keys)
    goal = settings.goal.target
    best = await ranked_fans(session, settings, now, top=top)
    return {
        "generated_at": now.astimezone(settings.scoring.tz).isoformat(timespec="seconds"),
        "fans": sum(counts.values()),
        "tiers": [{"key": t.key, "name": t.name(settings.locale), "count": counts.get(t.key, 0)} for t in rules.tiers],
        "true_fans": {"count": true_count, "goal": goal, "progress_pct": round(100.0 * true_count / goal, 1),
                      "tier": rules.name(rules.true_fan_tier, settings.locale)},
        "top": await fan_documents(session, best, settings, now, interactions=None),
    }
