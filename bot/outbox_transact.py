"""How an outbox drainer commits its claims and results: through the writer, or a session of its own.

In ``superfan run`` every write goes through the one group-commit writer (SQLite has one writer
at a time; a second one would wait for, and hold up, the webhooks), so the drainer's claims and
"sent" marks ride in its groups. A CLI command with no server running uses a plain session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.outbox_drain import Transact
from bot.writer import Action, GroupWriter, Rejected


def writer_transact(writer: GroupWriter) -> Transact:
    """``transact(work)`` as one action in the writer's next group; raises what stopped the commit."""

    async def transact(work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async def run(session: AsyncSession, now: datetime) -> Any:
            return await work(session)

        (outcome,) = await writer.submit([Action("outbox", run)])
        if isinstance(outcome, Rejected):
            raise RuntimeError(f"outbox work was not stored: {outcome.reason}")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return transact


def session_transact(sessions: async_sessionmaker[AsyncSession]) -> Transact:
    """``transact(work)`` in a transaction of its own (no writer: the CLI, tests)."""

    async def transact(work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions.begin() as session:
            return await work(session)

    return transact
