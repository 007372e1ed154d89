"""The intake backlog: events that met unavailable storage are kept, retried in order with growing
pauses, bounded (oldest kept), and counted (never quoted) when they cannot be stored."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from bot.discord_adapter.backlog import IntakeBacklog
from bot.write_failures import StorageUnavailable
from bot.writer import Op
from crm.interaction import InteractionIn

AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def message(n: int) -> InteractionIn:
    return InteractionIn("discord", "42", "message", AT, f"m{n}", "小慧", text=f"秘密 {n}")


class Storage:
    """A store that is unavailable until ``up`` is set; records what it stored, in order."""

    def __init__(self) -> None:
        self.up = False
        self.stored: list[str] = []
        self.attempts = 0

    async def store(self, op: Op) -> str:
        self.attempts += 1
        if not self.up:
            raise StorageUnavailable("database is locked")
        assert isinstance(op, InteractionIn)
        self.stored.append(op.source_event_id)
        return "stored"


class Pauses:
    """An injected sleep: records each pause and lets the test decide when time has passed."""

    def __init__(self) -> None:
        self.taken: list[float] = []
        self.waiting = asyncio.Event()
        self._go = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.taken.append(seconds)
        self.waiting.set()
        await self._go.wait()
        self._go.clear()

    async def elapse(self) -> None:
        """Let the pending pause end, then wait until the backlog pauses again (or is done)."""
        self.waiting.clear()
        self._go.set()
        for _ in range(50):
            await asyncio.sleep(0)


async def test_events_wait_for_storage_and_are_stored_in_order_with_growing_pauses() -> None:
    storage, pauses = Storage(), Pauses()
    backlog = IntakeBacklog(storage.store, first_delay=0.5, max_delay=2.0, sleep=pauses.sleep)
    assert [await backlog.submit(message(n)) for n in range(3)] == [None, None, None]
    assert storage.attempts == 1  # the later ones queued behind the first without trying
    for _ in range(4):
        await pauses.elapse()
    assert pauses.taken == [0.5, 1.0, 2.0, 2.0, 2.0]  # doubling, capped
    assert storage.stored == []
    storage.up = True
    await pauses.elapse()
    assert storage.stored == ["m0", "m1", "m2"]
    assert len(backlog) == 0
    assert await backlog.submit(message(3)) == "stored"  # nothing waiting: stored at once
    assert await backlog.close() == 0


async def test_a_full_backlog_keeps_the_oldest_and_logs_only_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    storage, pauses = Storage(), Pauses()
    backlog = IntakeBacklog(storage.store, limit=2, sleep=pauses.sleep)
    for n in range(5):
        await backlog.submit(message(n))
    assert len(backlog) == 2 and backlog.lost == 3
    storage.up = True
    await pauses.elapse()
    assert storage.stored == ["m0", "m1"]
    assert "秘密" not in caplog.text and "小慧" not in caplog.text
    assert "newer events lost" in caplog.text


async def test_shutdown_tries_once_more_and_counts_what_remains(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    storage, pauses = Storage(), Pauses()
    backlog = IntakeBacklog(storage.store, sleep=pauses.sleep)
    for n in range(3):
        await backlog.submit(message(n))
    attempts = storage.attempts
    assert await backlog.close() == 3
    assert storage.attempts == attempts + 1  # one more try, stopped at the first refusal
    assert "3 Discord events not stored" in caplog.text and "秘密" not in caplog.text

    storage2 = Storage()
    backlog2 = IntakeBacklog(storage2.store, sleep=Pauses().sleep)
    await backlog2.submit(message(7))
    storage2.up = True  # storage came back just before shutdown
    assert await backlog2.close() == 0
    assert storage2.stored == ["m7"]


async def test_an_event_that_can_never_be_stored_does_not_block_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    storage, pauses = Storage(), Pauses()
    poisoned = message(1)

    async def store(op: Op) -> str:
        if op is poisoned and storage.up:
            raise ValueError("秘密 1 is not storable")
        return await storage.store(op)

    backlog = IntakeBacklog(store, sleep=pauses.sleep)
    for op in (message(0), poisoned, message(2)):
        await backlog.submit(op)
    storage.up = True
    await pauses.elapse()
    assert storage.stored == ["m0", "m2"] and len(backlog) == 0
    assert "m1" in caplog.text and "秘密" not in caplog.text


async def test_concurrent_attempts_that_fail_out_of_order_are_kept_in_arrival_order() -> None:
    """Without the group writer each event is its own transaction: the first to arrive can be the
    last to give up waiting for the lock."""
    storage, pauses = Storage(), Pauses()
    slow = asyncio.Event()

    async def store(op: Op) -> str:
        if isinstance(op, InteractionIn) and op.source_event_id == "m0" and not storage.up:
            await slow.wait()  # m0 waits out its busy timeout while m1 arrives and fails at once
        return await storage.store(op)

    backlog = IntakeBacklog(store, sleep=pauses.sleep)
    first = asyncio.create_task(backlog.submit(message(0)))
    await asyncio.sleep(0)
    await backlog.submit(message(1))
    slow.set()
    await first
    storage.up = True
    await pauses.elapse()
    assert storage.stored == ["m0", "m1"]
