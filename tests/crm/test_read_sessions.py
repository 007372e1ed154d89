"""A long read (an export, a fan list) never holds up the writers that store webhooks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from crm.db import make_read_sessionmaker
from crm.ingest import record
from crm.interaction import InteractionIn
from crm.models import Interaction


async def test_a_writer_commits_while_a_reader_holds_its_snapshot(engine, sessions, settings, now):
    async with sessions.begin() as s:
        await record(s, InteractionIn("line", "U1", "message", now - timedelta(hours=1), "a", "小慧"), settings, now)
    readers = make_read_sessionmaker(engine)
    async with readers() as reader:
        before = (await reader.execute(select(func.count()).select_from(Interaction))).scalar_one()

        async def write() -> None:
            async with sessions.begin() as s:
                await record(s, InteractionIn("line", "U1", "message", now, "b", "小慧"), settings, now)

        await asyncio.wait_for(write(), 5)  # would wait for the reader if reads took the write lock
        still = (await reader.execute(select(func.count()).select_from(Interaction))).scalar_one()
    assert before == 1
    assert still in (1, 2)  # a snapshot on SQLite (1); READ COMMITTED on PostgreSQL (2)
    async with readers() as reader:
        assert (await reader.execute(select(func.count()).select_from(Interaction))).scalar_one() == 2
