"""Recompute every stored interaction's points and every fan's score after the rules change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan, Interaction, table
from crm.scoring import Allowance, base_term, forget_epoch, rebase_if_needed, score_state
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, reevaluate

CHUNK = 2000


@dataclass(frozen=True)
class RescoreResult:
    fans: int
    interactions: int
    changed_points: int
    tier_moves: list[TierMove]


async def rescore(session: AsyncSession, settings: CrmSettings, now: datetime,
                  progress: Callable[[int], None] | None = None) -> RescoreResult:
    """Replay each fan's history in time order under the current weights, caps and half-life.

    Streams interactions fan by fan (memory stays bounded), writes back only points that changed,
    then sets every fan's ``score_base`` and re-evaluates tiers (reason ``rescore``).
    """
    state = await score_state(session, settings.scoring)
    state.half_life_days = settings.scoring.half_life_days
    await session.flush()
    forget_epoch()
    await rebase_if_needed(session, state, now)
    total = int((await session.execute(select(func.count()).select_from(Interaction))).scalar_one())
    stmt = (select(Interaction.id, Interaction.fan_id, Interaction.kind, Interaction.occurred_at,
                   Interaction.amount_cents, Interaction.currency, Interaction.points)
            .order_by(Interaction.fan_id, Interaction.occurred_at, Interaction.id))
    rows = (await session.execute(stmt)).all()
    changed: list[dict[str, object]] = []
    bases: dict[int, float] = {}
    allowance = Allowance(settings.scoring)
    current_fan: int | None = None
    for n, (iid, fan_id, kind, at, cents, currency, old) in enumerate(rows, start=1):
        if fan_id != current_fan:
            allowance = Allowance(settings.scoring)
            current_fan = fan_id
        amount = None if cents is None else Decimal(cents) / 100
        points = allowance.award(fan_id, kind, at.timestamp(), settings.scoring.base_points(kind, amount, currency))
        bases[fan_id] = bases.get(fan_id, 0.0) + base_term(points, at, state.epoch, state.half_life_days)
        if abs(points - old) > 1e-12:
            changed.append({"iid": iid, "p": points})
        if progress and n % CHUNK == 0:
            progress(CHUNK)
    if progress:
        progress(total % CHUNK)
    interactions = table(Interaction)
    for start in range(0, len(changed), CHUNK):
        await session.execute(update(interactions).where(interactions.c.id == bindparam("iid"))
                              .values(points=bindparam("p")), changed[start : start + CHUNK])
    fans = table(Fan)
    await session.execute(update(fans).values(score_base=0.0))
    items = [{"fid": fid, "b": base} for fid, base in bases.items()]
    for start in range(0, len(items), CHUNK):
        await session.execute(update(fans).where(fans.c.id == bindparam("fid")).values(score_base=bindparam("b")),
                              items[start : start + CHUNK])
    moves = await reevaluate(session, settings, now, reason="rescore")
    return RescoreResult(len(bases), total, len(changed), moves)


async def refresh_tiers(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[TierMove]:
    """The periodic job: decay moves fans down while nothing happens; rebase the epoch if due."""
    await rebase_epoch(session, settings, now)
    return await reevaluate(session, settings, now, reason="decay")


async def rebase_epoch(session: AsyncSession, settings: CrmSettings, now: datetime) -> bool:
    """Move the score epoch to ``now`` when terms approach float overflow (see :func:`rebase_if_needed`)."""
    return await rebase_if_needed(session, await score_state(session, settings.scoring), now)
