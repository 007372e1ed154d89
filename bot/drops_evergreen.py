"""Evergreen drops in ``superfan run``: a fan who reaches a drop's tier later receives it then, once.

Woken by the writer after every commit that moved a tier (``GroupWriter.on_tier_moves``: the write
path, the hourly refresh, a pin), it queues one writer action that gives every evergreen drop to
the eligible fans who changed tier since its last pass and hold no delivery of it yet
(:func:`crm.drops.deliver_evergreen`; the delivery and its outbox row are written together, keyed
per fan, so never twice). Its first pass, at start, looks at every fan: a promotion committed
while no server ran (``superfan pin``) or just before a crash is caught up there.

Why not inside ``apply_moves``: the tier order and ``[drops] prefer`` are configuration, which the
write path's ``apply_moves`` does not receive; reading committed moves keeps that path as it is.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.write_failures import brief
from bot.writer import Action, GroupWriter, Rejected
from crm.drops import deliver_evergreen
from crm.models import Drop, TierChange

if TYPE_CHECKING:
    from bot.app import Crm

log = logging.getLogger(__name__)


class EvergreenDrops:
    """Register :meth:`wake` on the writer; :meth:`start` runs the catch-up pass."""

    def __init__(self, crm: Crm, writer: GroupWriter) -> None:
        self._crm = crm
        self._writer = writer
        #: The newest tier change already looked at (None: none yet, so the first pass sees all).
        self._seen: int | None = None
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def wake(self) -> None:
        """A commit moved tiers: look (once more, if a pass is already running)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._passes(), name="evergreen-drops")

    async def start(self) -> None:
        self._writer.on_tier_moves.append(self.wake)
        self.wake()

    async def settle(self) -> None:
        """Wait for the pass in progress (tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self.wake in self._writer.on_tier_moves:
            self._writer.on_tier_moves.remove(self.wake)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _passes(self) -> None:
        while True:
            self._again = False
            try:
                await self._pass()
            except Exception as exc:  # the next tier move, or the next start, tries again
                log.warning("evergreen drops: a pass failed (%s)", brief(exc))
                return
            if not self._again:
                return

    async def _pass(self) -> None:
        async def run(session: AsyncSession, now: datetime) -> tuple[int, int | None]:
            if not (await session.execute(select(func.count()).where(Drop.evergreen.is_(True)))).scalar_one():
                newest = (await session.execute(select(func.max(TierChange.id)))).scalar_one()
                return 0, newest
            newest = (await session.execute(select(func.max(TierChange.id)))).scalar_one()
            fan_ids = None
            if self._seen is not None:
                fan_ids = list((await session.execute(select(TierChange.fan_id).distinct().where(
                    TierChange.id > self._seen))).scalars())
                if not fan_ids:
                    return 0, newest
            return await deliver_evergreen(session, self._crm.settings, now, fan_ids=fan_ids), newest

        (outcome,) = await self._writer.submit([Action("evergreen drops", run, ordered=False)])
        if isinstance(outcome, Rejected):
            raise RuntimeError(outcome.reason)
        if isinstance(outcome, BaseException):
            raise outcome
        added, newest = cast(tuple[int, int | None], outcome)
        self._seen = newest if newest is not None else (self._seen or 0)
        if added:
            self.delivered += added
            log.info("evergreen drops: %d fans newly reached", added)
