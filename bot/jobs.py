"""Scheduled work (APScheduler 3, on the app's event loop). Jobs are rebuilt at every start and
are idempotent: what matters lives in the database, so a missed or repeated run is harmless."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Crm
from bot.digest_job import DigestJob
from bot.writer import Action, GroupWriter, Rejected
from crm.clock import Clock, utcnow
from crm.sla import claim_breaches, claim_reminders
from crm.tiers_service import TierMove, decay_candidates, rebase_epoch, reevaluate, refresh_tiers

log = logging.getLogger(__name__)
TIER_REFRESH_MINUTES = 60
#: Fans re-evaluated per writer action by the tier refresh (~10 ms of the writer's time each).
REFRESH_CHUNK = 500


async def refresh_tiers_job(crm: Crm, clock: Clock = utcnow, writer: GroupWriter | None = None) -> int:
    """Let decay move fans down while nothing happens (and rebase the score epoch when due).

    With the app's ``writer`` the work queues with the webhooks' writes, ``REFRESH_CHUNK`` fans
    at a time. Alone it would take SQLite's write lock beside the writer, and in one piece it
    would hold webhook acks up for as long as the whole refresh (33–63 ms at 10k fans; a
    community of 100k takes ten times that).
    """
    now = clock()
    if writer is None:
        async with crm.sessions.begin() as session:
            moves = await refresh_tiers(session, crm.settings, now)
    else:

        async def rebase(session: AsyncSession, _: datetime) -> bool:
            return await rebase_epoch(session, crm.settings, now)

        def refresh(fan_ids: list[int]) -> Callable[[AsyncSession, datetime], Awaitable[list[TierMove]]]:
            async def run(session: AsyncSession, _: datetime) -> list[TierMove]:
                return await reevaluate(session, crm.settings, now, fan_ids=fan_ids, reason="decay")
            return run

        await _through(writer, Action("score epoch", rebase, ordered=False))
        async with crm.read() as session:
            ids = await decay_candidates(session, crm.settings, now)
        moves = []
        for start in range(0, len(ids), REFRESH_CHUNK):
            moves += await _through(writer, Action("tier refresh", refresh(ids[start : start + REFRESH_CHUNK]),
                                                   ordered=False))
    if moves:
        log.info("tier refresh: %d fans changed tier", len(moves))
    return len(moves)


async def _through(writer: GroupWriter, action: Action) -> Any:
    (outcome,) = await writer.submit([action])
    if isinstance(outcome, BaseException):
        raise outcome
    if isinstance(outcome, Rejected):
        raise RuntimeError(f"{action.name}: {outcome.reason}")
    return outcome


SLA_CHECK_SECONDS = 60


async def sla_clock_job(crm: Crm, clock: Clock = utcnow, writer: GroupWriter | None = None) -> tuple[int, int]:
    """Reminders before due and a breach record at due, each once (the claims are conditional
    updates, in the same transaction as the outbox rows they queue); (reminded, breached)."""
    now = clock()

    async def claim(session: AsyncSession, _: datetime) -> tuple[int, int]:
        reminded = await claim_reminders(session, crm.settings, now)
        breached = await claim_breaches(session, crm.settings, now)
        return len(reminded), len(breached)

    if writer is None:
        async with crm.sessions.begin() as session:
            counts = await claim(session, now)
    else:
        counts = await _through(writer, Action("sla clock", claim, ordered=False))
    if any(counts):
        log.info("sla clock: %d reminders, %d breaches", *counts)
    return counts


def build_scheduler(crm: Crm, *, extra: dict[str, Callable[[], Awaitable[object]]] | None = None,
                    clock: Clock = utcnow, writer: GroupWriter | None = None) -> AsyncIOScheduler:
    """The scheduler with every job; ``extra`` lets adapters add theirs (e.g. Discord role reconcile)."""
    # A job whose time came while the event loop was busy (a burst of webhooks, a slow machine) runs
    # late rather than not at all: APScheduler's default grace of one second skips it with a warning.
    # ``coalesce`` keeps a late job to one run.
    scheduler = AsyncIOScheduler(timezone=crm.config.creator.timezone, job_defaults={"misfire_grace_time": None})
    scheduler.add_job(refresh_tiers_job, IntervalTrigger(minutes=TIER_REFRESH_MINUTES), args=[crm, clock, writer],
                      id="refresh_tiers", coalesce=True, max_instances=1, next_run_time=clock())
    DigestJob(crm, clock=clock, writer=writer).add_to(scheduler)
    scheduler.add_job(sla_clock_job, IntervalTrigger(seconds=SLA_CHECK_SECONDS), args=[crm, clock, writer],
                      id="sla_clock", coalesce=True, max_instances=1, next_run_time=clock())
    for name, job in (extra or {}).items():
        scheduler.add_job(job, IntervalTrigger(minutes=TIER_REFRESH_MINUTES), id=name, coalesce=True,
                          max_instances=1)
    return scheduler
