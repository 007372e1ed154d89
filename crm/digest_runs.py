"""One digest per local day: the claim in ``job_runs`` and the messages it queues, in one transaction.

The claim is ``INSERT … ON CONFLICT (job, run_key) DO NOTHING RETURNING id`` on the unique
constraint of ``job_runs``: of two instances on one PostgreSQL database (or two processes on one
SQLite file) exactly one gets a row back, and only that one queues the outbox rows. The rows are
written in the claim's transaction, so a crash before the commit leaves neither the claim nor the
messages (the next run claims again), and after the commit both exist (no run claims again; the
drainers send what was queued).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import insert_ignore
from crm.digest import JOB
from crm.models import JobRun, table
from crm.outbox import enqueue

_jr = table(JobRun).c


def run_key(now: datetime, tz: ZoneInfo) -> str:
    """Today's key: the creator's local date (``2026-11-22``)."""
    return now.astimezone(tz).date().isoformat()


def due_today(now: datetime, tz: ZoneInfo, at: time) -> bool:
    """Whether today's digest time (local wall clock, ``[digest] at``) has come.

    Compared on the wall clock, so a time that a DST change skips (02:30 on the spring-forward day)
    counts as passed once the clock shows a later time.
    """
    return now.astimezone(tz).time().replace(tzinfo=None) >= at


def parse_at(text: str) -> time:
    """``"09:00"`` → 09:00 (the config check has made sure it is HH:MM)."""
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class Destinations:
    """Where a digest goes: the Discord staff channel, and/or the creator's own LINE user id."""

    discord_channel: str | None = None
    line_user: str | None = None


async def claimed(session: AsyncSession, key: str) -> bool:
    """Whether the digest for ``key`` (a local date) has been claimed and committed."""
    found = await session.execute(select(_jr.id).where(_jr.job == JOB, _jr.run_key == key))
    return found.first() is not None


async def claim_digest(session: AsyncSession, key: str, now: datetime, *, digest: dict[str, Any],
                       to: Destinations, line_text: str | None = None) -> list[int] | None:
    """Claim the digest of ``key`` and queue it; the outbox ids, or None if another run has it.

    Queued (each at most once, under the keys ``digest:<key>:discord`` / ``digest:<key>:line``):
    kind ``digest`` to the staff channel with the digest JSON as payload, and kind ``digest_line``
    (payload ``{"text"}``: a short text; a push, so it costs LINE quota) to the creator's LINE id.
    """
    claim = insert_ignore(session, table(JobRun), "job", "run_key").returning(_jr.id)
    run_id = (await session.execute(claim, [{"job": JOB, "run_key": key, "started_at": now}])).scalar_one_or_none()
    if run_id is None:
        return None
    ids: list[int | None] = []
    if to.discord_channel:
        ids.append(await enqueue(session, platform="discord", kind="digest", recipient=to.discord_channel,
                                 payload=digest, now=now, key=f"digest:{key}:discord"))
    if to.line_user and line_text:
        ids.append(await enqueue(session, platform="line", kind="digest_line", recipient=to.line_user,
                                 payload={"text": line_text}, now=now, key=f"digest:{key}:line"))
    queued = [i for i in ids if i is not None]
    summary = {"outbox": queued, "unanswered": digest.get("counts", {}).get("unanswered")}
    await session.execute(update(table(JobRun)).where(_jr.id == run_id)
                          .values(finished_at=now, result=json.dumps(summary)))
    return queued
