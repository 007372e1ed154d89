"""Scheduled work (APScheduler 3, on the app's event loop). Jobs are rebuilt at every start and
are idempotent: what matters lives in the database, so a missed or repeated run is harmless."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.app import Crm
from crm.clock import Clock, utcnow
from crm.rescore import refresh_tiers

log = logging.getLogger(__name__)
TIER_REFRESH_MINUTES = 60


async def refresh_tiers_job(crm: Crm, clock: Clock = utcnow) -> int:
    """Let decay move fans down while nothing happens (and rebase the score epoch when due)."""
    async with crm.sessions.begin() as session:
        moves = await refresh_tiers(session, crm.settings, clock())
    if moves:
        log.info("tier refresh: %d fans changed tier", len(moves))
    return len(moves)


def build_scheduler(crm: Crm, *, extra: dict[str, Callable[[], Awaitable[object]]] | None = None,
                    clock: Clock = utcnow) -> AsyncIOScheduler:
    """The scheduler with every job; ``extra`` lets adapters add theirs (e.g. Discord role reconcile)."""
    scheduler = AsyncIOScheduler(timezone=crm.config.creator.timezone)
    scheduler.add_job(refresh_tiers_job, IntervalTrigger(minutes=TIER_REFRESH_MINUTES), args=[crm, clock],
                      id="refresh_tiers", coalesce=True, max_instances=1, next_run_time=clock())
    for name, job in (extra or {}).items():
        scheduler.add_job(job, IntervalTrigger(minutes=TIER_REFRESH_MINUTES), id=name, coalesce=True,
                          max_instances=1)
    return scheduler
