"""What became of drops: per platform sent / failed / pending, why deliveries failed, LINE quota
used (``superfan drop list|show``, ``/drop status``, the digest's drop results)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import as_utc
from crm.drop_audience import PLATFORMS
from crm.drop_posts import post_reactions
from crm.errors import BadInput
from crm.models import Delivery, Drop

STATUSES = ("sent", "failed", "pending")


def _iso(at: datetime | None) -> str | None:
    return as_utc(at).isoformat() if at is not None else None


def status_of(drop: Drop, now: datetime) -> str:
    """``scheduled`` until its time, then ``sending`` until nothing is pending, then ``finished``."""
    if drop.finished_at is not None:
        return "finished"
    if drop.scheduled_at is not None and as_utc(drop.scheduled_at) > now:
        return "scheduled"
    return "sending"


async def _tallies(session: AsyncSession, drop_ids: Sequence[int]) -> dict[int, dict[str, dict[str, int]]]:
    found: dict[int, dict[str, dict[str, int]]] = {
        d: {p: dict.fromkeys(STATUSES, 0) for p in PLATFORMS} for d in drop_ids}
    rows = await session.execute(
        select(Delivery.drop_id, Delivery.platform, Delivery.status, func.count())
        .where(Delivery.drop_id.in_(list(drop_ids))).group_by(Delivery.drop_id, Delivery.platform, Delivery.status))
    for drop_id, platform, status, n in rows:
        found[int(drop_id)].setdefault(platform, dict.fromkeys(STATUSES, 0))[status] = int(n)
    return found


def _summary(drop: Drop, tally: dict[str, dict[str, int]], now: datetime) -> dict[str, Any]:
    totals = {s: sum(p[s] for p in tally.values()) for s in STATUSES}
    return {"id": drop.id, "status": status_of(drop, now), "min_tier": drop.min_tier, "topic": drop.topic,
            "platforms": drop.platforms.split(","), "created_at": _iso(drop.created_at),
            "created_by": drop.created_by, "scheduled_at": _iso(drop.scheduled_at),
            "finished_at": _iso(drop.finished_at), "sponsored": bool(drop.sponsored),
            "evergreen": bool(drop.evergreen), "quota_used": int(drop.quota_used or 0), **totals,
            "per_platform": tally}


async def list_drops(session: AsyncSession, now: datetime, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest drops first, each with its tallies (no text: a list is for an overview)."""
    drops = (await session.execute(select(Drop).order_by(Drop.id.desc()).limit(limit))).scalars().all()
    tallies = await _tallies(session, [d.id for d in drops])
    return [_summary(d, tallies[d.id], now) for d in drops]


async def drop_report(session: AsyncSession, drop_id: int, now: datetime) -> dict[str, Any]:
    """One drop in full: its content, tallies per platform, failure reasons with counts, the post."""
    drop = await session.get(Drop, drop_id)
    if drop is None:
        raise BadInput(f"no drop #{drop_id}", code="drop.unknown", drop_id=drop_id)
    report = _summary(drop, (await _tallies(session, [drop.id]))[drop.id], now)
    reasons = await session.execute(
        select(Delivery.platform, Delivery.error, func.count())
        .where(Delivery.drop_id == drop.id, Delivery.status == "failed")
        .group_by(Delivery.platform, Delivery.error).order_by(func.count().desc()))
    retrying = await session.execute(
        select(Delivery.platform, Delivery.error, func.count())
        .where(Delivery.drop_id == drop.id, Delivery.status == "pending", Delivery.error.is_not(None))
        .group_by(Delivery.platform, Delivery.error))
    report.update({
        "text": drop.text, "link": drop.link, "image_url": drop.image_url,
        "aggregation_unit": drop.aggregation_unit,
        "failures": [{"platform": p, "reason": e or "", "count": int(n)} for p, e, n in reasons],
        "retrying": [{"platform": p, "reason": e or "", "count": int(n)} for p, e, n in retrying],
        "post": ({"channel_id": drop.post_channel_id, "message_id": drop.post_message_id}
                 if drop.post_channel_id else None),
    })
    reactions = await post_reactions(session, drop.id)
    if report["post"] is not None and reactions is not None:
        report["post"].update(reactions=reactions.reactions, fans_reacting=reactions.fans)
    return report


async def drop_results(session: AsyncSession, since: datetime, now: datetime, *, limit: int = 10
                       ) -> list[dict[str, Any]]:
    """The digest's drop results: drops created, or still going out, since ``since``."""
    drops = (await session.execute(
        select(Drop).where(or_(Drop.created_at >= since, Drop.finished_at >= since, Drop.finished_at.is_(None)))
        .order_by(Drop.id.desc()).limit(limit))).scalars().all()
    tallies = await _tallies(session, [d.id for d in drops])
    return [_summary(d, tallies[d.id], now) for d in drops]
