"""The scheduled daily digest: at ``[digest] at`` in the creator's time zone, once per local day.

Two jobs on the app's APScheduler: a ``CronTrigger`` at the digest time (with a misfire grace and
coalescing, so a busy or sleeping machine still sends one digest), and a check at start and every
few minutes after that sends today's digest if its time has passed and nobody has claimed it (a run
missed during downtime, a failed run, or a time a DST change skipped). Both end in
:func:`crm.digest_runs.claim_digest`, which only one run per local day can win, whichever instance
or process it is in, in the same transaction as the outbox rows it queues.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Crm
from bot.render_digest import line_text
from bot.writer import Action, GroupWriter, Rejected
from crm.clock import Clock, utcnow
from crm.digest import build_digest
from crm.digest_runs import Destinations, claim_digest, claimed, due_today, parse_at, run_key

log = logging.getLogger(__name__)
#: How often the catch-up check looks for a digest that is due and unclaimed (one indexed read).
CHECK_MINUTES = 15


class DigestJob:
    """Builds, claims and queues the day's digest; see the module docstring for when."""

    def __init__(self, crm: Crm, *, clock: Clock = utcnow, writer: GroupWriter | None = None) -> None:
        self.crm = crm
        self.clock = clock
        self.writer = writer
        config = crm.config
        self.tz = ZoneInfo(config.creator.timezone)
        self.at: time = parse_at(config.digest.at)
        self.to = Destinations(
            discord_channel=str(config.discord.staff_channel_id)
            if config.discord.enabled and config.discord.staff_channel_id else None,
            line_user=(config.digest.line_user_id or None) if config.line.enabled else None)
        self._lock = asyncio.Lock()

    def trigger(self) -> CronTrigger:
        """Every day at the digest time, on the creator's wall clock (DST included)."""
        return CronTrigger(hour=self.at.hour, minute=self.at.minute, timezone=self.tz)

    def add_to(self, scheduler: BaseScheduler) -> None:
        """Register the punctual run and the catch-up check (which also runs once at start)."""
        grace = self.crm.config.digest.misfire_grace_minutes * 60
        scheduler.add_job(self.run, self.trigger(), id="digest", coalesce=True, max_instances=1,
                          misfire_grace_time=grace)
        scheduler.add_job(self.run, IntervalTrigger(minutes=CHECK_MINUTES, timezone=self.tz), id="digest_check",
                          coalesce=True, max_instances=1, misfire_grace_time=None, next_run_time=self.clock())

    async def run(self) -> list[int] | None:
        """Queue today's digest if its time has come and no run has claimed it: the outbox ids, else None."""
        async with self._lock:
            now = self.clock()
            if not due_today(now, self.tz, self.at):
                return None
            key = run_key(now, self.tz)
            async with self.crm.read() as session:
                if await claimed(session, key):
                    return None
                digest = (await build_digest(session, self.crm.settings, now)).as_json()
            text = line_text(digest, self.crm.settings.locale) if self.to.line_user else None

            async def claim(session: AsyncSession, _: datetime) -> list[int] | None:
                return await claim_digest(session, key, now, digest=digest, to=self.to, line_text=text)

            queued = await self._write(Action("daily digest", claim, ordered=False))
            if queued is None:
                log.info("digest %s: already claimed by another run", key)
            else:
                log.info("digest %s queued (%d messages, %d unanswered)", key, len(queued),
                         digest["counts"]["unanswered"])
            return queued

    async def _write(self, action: Action) -> Any:
        """Through the app's writer when there is one (it holds SQLite's write lock), else a transaction."""
        if self.writer is None:
            async with self.crm.sessions.begin() as session:
                return await action.run(session, self.clock())
        (outcome,) = await self.writer.submit([action])
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, Rejected):
            raise RuntimeError(f"{action.name}: {outcome.reason}")
        return outcome
