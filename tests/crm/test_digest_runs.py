"""One digest per local day: the claim in job_runs is won once, with its outbox rows, or not at all.

Runs on PostgreSQL too (the PostgreSQL lane runs tests/crm): two engines race on the claim.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.db import make_engine, make_sessionmaker
from crm.digest_runs import Destinations, claim_digest, claimed, due_today, run_key
from crm.models import JobRun, Outbox

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 09:00 in Taipei
KEY = "2026-11-22"
TO = Destinations(discord_channel="900", line_user="Ucreator")
DIGEST = {"counts": {"unanswered": 2}}


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as s:
        runs = (await s.execute(select(func.count()).select_from(JobRun))).scalar_one()
        rows = (await s.execute(select(func.count()).select_from(Outbox))).scalar_one()
    return runs, rows


async def claim(sessions: async_sessionmaker[AsyncSession], key: str = KEY) -> list[int] | None:
    async with sessions.begin() as s:
        return await claim_digest(s, key, NOW, digest=DIGEST, to=TO, line_text="每日摘要")


async def test_the_second_claim_of_a_day_gets_nothing_and_queues_nothing(sessions):
    first = await claim(sessions)
    assert first is not None and len(first) == 2
    assert await claim(sessions) is None
    assert await counts(sessions) == (1, 2)
    async with sessions() as s:
        kinds = sorted((await s.execute(select(Outbox.platform, Outbox.kind, Outbox.recipient))).all())
        assert await claimed(s, KEY)
    assert kinds == [("discord", "digest", "900"), ("line", "digest_line", "Ucreator")]
    assert await claim(sessions, "2026-11-23") is not None  # the next day is a new digest


async def test_a_crash_before_the_commit_leaves_no_claim_and_the_next_run_claims(sessions):
    with pytest.raises(RuntimeError):
        async with sessions.begin() as s:
            assert await claim_digest(s, KEY, NOW, digest=DIGEST, to=TO, line_text="x") is not None
            raise RuntimeError("the process died here")
    assert await counts(sessions) == (0, 0)
    assert await claim(sessions) is not None
    assert await counts(sessions) == (1, 2)


async def test_two_instances_racing_on_one_database_claim_once(sessions, db_url):
    other_engine = make_engine(db_url)
    other = make_sessionmaker(other_engine)
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> list[int] | None:
        async with sessions.begin() as s:
            won = await claim_digest(s, KEY, NOW, digest=DIGEST, to=TO, line_text="x")
            holding.set()
            await release.wait()  # the other instance claims while this one has not committed
            return won

    try:
        one = asyncio.create_task(first())
        await holding.wait()
        two = asyncio.create_task(claim(other))
        await asyncio.sleep(0.2)
        assert not two.done()  # it waits for the first transaction (lock or unique index)
        release.set()
        results = [await one, await two]
    finally:
        await other_engine.dispose()
    assert results[0] is not None and results[1] is None
    assert await counts(sessions) == (1, 2)


def test_the_day_and_the_time_are_the_creators_local_ones():
    taipei = ZoneInfo("Asia/Taipei")
    nine = time(9, 0)
    assert not due_today(datetime(2026, 11, 22, 0, 59, tzinfo=UTC), taipei, nine)
    assert due_today(datetime(2026, 11, 22, 1, 0, tzinfo=UTC), taipei, nine)
    assert run_key(datetime(2026, 11, 22, 16, 30, tzinfo=UTC), taipei) == "2026-11-23"  # 00:30 next day local
    assert not due_today(datetime(2026, 11, 22, 16, 30, tzinfo=UTC), taipei, nine)
    new_york = ZoneInfo("America/New_York")  # 09:00 is 14:00 UTC in winter, 13:00 UTC in summer
    assert not due_today(datetime(2026, 3, 9, 12, 59, tzinfo=UTC), new_york, nine)
    assert due_today(datetime(2026, 3, 9, 13, 0, tzinfo=UTC), new_york, nine)
    assert not due_today(datetime(2026, 3, 6, 13, 30, tzinfo=UTC), new_york, nine)
    # 02:30 does not exist on 8 March 2026 in New York: the digest is due once the clock passes it.
    assert due_today(datetime(2026, 3, 8, 7, 0, tzinfo=UTC), new_york, time(2, 30))  # 03:00 EDT
