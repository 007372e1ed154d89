"""Tier changes in the database: re-evaluation after scoring or decay, pins, and their history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import as_utc
from crm.errors import BadInput
from crm.models import Fan, Interaction, TierChange, table
from crm.scoring import DAY_SECONDS, base_for_score, current_scores, rebase_if_needed, score_state
from crm.settings import CrmSettings
from crm.tiers import Evidence

CHUNK = 500
#: ``session.info`` key: how many tier changes the session's transaction recorded, so whoever
#: commits it (the group writer) can wake what follows tiers (role sync) whatever op moved them.
TIER_MOVES = "superfan_tier_moves"


@dataclass(frozen=True)
class TierMove:
    fan_id: int
    from_tier: str | None
    to_tier: str
    reason: str


async def reevaluate(
    session: AsyncSession,
    settings: CrmSettings,
    now: datetime,
    *,
    fan_ids: Sequence[int] | None = None,
    reason: str = "score",
) -> list[TierMove]:
    """Put fans in the tier their score (or pin) says today, recording every change.

    With ``fan_ids=None`` every fan that could move is checked (the periodic decay job): those
    above the lowest tier, and those whose score reaches the first threshold.
    """
    state, divisor = await current_scores(session, settings.scoring, now)
    ids = sorted(set(fan_ids)) if fan_ids is not None else await decay_candidates(session, settings, now)
    stmt = select(Fan.id, Fan.tier, Fan.tier_pinned, Fan.score_base, Fan.first_seen_at)
    moves: list[TierMove] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        counts = await commitment_counts(session, settings, chunk, now)
        for fan_id, tier, pinned, score_base, first_seen in await session.execute(stmt.where(Fan.id.in_(chunk))):
            evidence = Evidence(counts.get(int(fan_id), 0), tenure_days(first_seen, now), state.half_life_days)
            target = settings.tiers.evaluate(tier, float(score_base) / divisor, pinned, evidence)
            if target != tier:
                moves.append(TierMove(int(fan_id), tier, target, reason))
    await apply_moves(session, moves, now, actor=None)
    return moves


def tenure_days(first_seen: datetime | None, now: datetime) -> float:
    """Days since the fan was first seen (0 for an unknown start)."""
    return 0.0 if first_seen is None else max(0.0, (now - as_utc(first_seen)).total_seconds() / DAY_SECONDS)


async def commitment_counts(
    session: AsyncSession, settings: CrmSettings, fan_ids: Sequence[int], now: datetime
) -> dict[int, int]:
    """Per fan: commitment actions that earned points in the tier rules' window (the pace gate).

    One grouped query, served by the ``(fan_id, occurred_at, kind, points)`` index.
    """
    rules = settings.tiers
    since = now - timedelta(days=rules.commitment_days)
    stmt = (select(Interaction.fan_id, func.count())
            .where(Interaction.fan_id.in_(list(fan_ids)), Interaction.occurred_at > since,
                   Interaction.occurred_at <= now, Interaction.kind.in_(rules.commitment_kinds),
                   Interaction.points > 0)
            .group_by(Interaction.fan_id))
    return {int(fan_id): int(n) for fan_id, n in await session.execute(stmt)}


async def evidence_for(session: AsyncSession, settings: CrmSettings, fan: Fan, now: datetime) -> Evidence:
    """One fan's :class:`Evidence` (the fan card, pins)."""
    state, _ = await current_scores(session, settings.scoring, now)
    counts = await commitment_counts(session, settings, [fan.id], now)
    return Evidence(counts.get(fan.id, 0), tenure_days(fan.first_seen_at, now), state.half_life_days)


async def decay_candidates(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[int]:
    """Fans whose tier the score could change today, in id order: those above the lowest tier,
    those pinned, and those whose score reaches the first threshold (the rest stay 路人)."""
    state, _ = await current_scores(session, settings.scoring, now)
    rules = settings.tiers
    floor = base_for_score(rules.tiers[1].threshold * rules.demote_fraction, now, state.epoch,
                           state.half_life_days) if len(rules.tiers) > 1 else float("inf")
    cond = or_(Fan.tier != rules.lowest, Fan.score_base >= floor, Fan.tier_pinned.is_not(None))
    return [int(fan_id) for (fan_id,) in await session.execute(select(Fan.id).where(cond).order_by(Fan.id))]


async def apply_moves(session: AsyncSession, moves: Sequence[TierMove], now: datetime, actor: str | None) -> None:
    """Set the fans' tiers and record each change (noted in ``session.info[TIER_MOVES]``)."""
    if not moves:
        return
    session.info[TIER_MOVES] = session.info.get(TIER_MOVES, 0) + len(moves)
    fans = table(Fan)
    await session.execute(update(fans).where(fans.c.id == bindparam("fan")).values(tier=bindparam("to_tier")),
                          [{"fan": m.fan_id, "to_tier": m.to_tier} for m in moves])
    await session.execute(insert(table(TierChange)), [
        {"fan_id": m.fan_id, "from_tier": m.from_tier, "to_tier": m.to_tier, "reason": m.reason, "actor": actor,
         "at": now} for m in moves])


async def pin(
    session: AsyncSession, settings: CrmSettings, fan_id: int, tier: str | None, *, by: str, now: datetime
) -> TierMove | None:
    """Pin a fan to a tier (a staff "close friends" list the score does not override); None unpins."""
    fan = await session.get(Fan, fan_id)
    if fan is None:
        raise BadInput(f"no fan #{fan_id}", code="fan.unknown_id", fan_id=fan_id)
    if tier is not None and tier not in settings.tiers.keys:
        raise BadInput(f"unknown tier {tier!r}", code="tier.unknown", tier=tier,
                       tiers=settings.tiers.names_by_locale())
    fan.tier_pinned = tier
    fan.tier_pinned_by = by if tier else None
    fan.tier_pinned_at = now if tier else None
    await session.flush()
    _, divisor = await current_scores(session, settings.scoring, now)
    evidence = await evidence_for(session, settings, fan, now)
    target = settings.tiers.evaluate(fan.tier, fan.score_base / divisor, tier, evidence)
    if target == fan.tier:
        return None
    move = TierMove(fan.id, fan.tier, target, "pin" if tier else "unpin")
    await apply_moves(session, [move], now, actor=by)
    await session.refresh(fan)
    return move


async def refresh_tiers(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[TierMove]:
    """The periodic job: decay moves fans down while nothing happens; rebase the epoch if due."""
    await rebase_epoch(session, settings, now)
    return await reevaluate(session, settings, now, reason="decay")


async def rebase_epoch(session: AsyncSession, settings: CrmSettings, now: datetime) -> bool:
    """Move the epoch to ``now`` when terms approach float overflow (see :func:`rebase_if_needed`)."""
    return await rebase_if_needed(session, await score_state(session, settings.scoring), now)
