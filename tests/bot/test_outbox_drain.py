"""The outbox drainer: sends due rows once, retries passing failures later, records the ones that cannot be delivered."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from bot.outbox_drain import OutboxDrainer, RetryLater, Undeliverable
from crm import outbox
from crm.models import Outbox


async def test_due_rows_are_sent_once_retried_after_a_passing_failure_and_given_up_when_undeliverable(sessions, now):
    clock = [now]
    calls: list[str] = []
    failures = {"flaky": [RetryLater("HTTP 429", after=30)], "blocked": [Undeliverable("the fan blocked the account")]}

    async def handler(message):
        calls.append(message.recipient)
        pending = failures.get(message.recipient)
        if pending:
            raise pending.pop(0)

    async def transact(work):
        async with sessions.begin() as s:
            return await work(s)

    async with sessions.begin() as s:
        for who in ("ok", "flaky", "blocked"):
            await outbox.enqueue(s, platform="line", kind="answer", recipient=who, payload={}, now=now)
    drainer = OutboxDrainer("line", transact, handler, clock=lambda: clock[0])
    assert await drainer.drain_once() == 3
    assert await drainer.drain_once() == 0  # the flaky one waits its Retry-After
    clock[0] = now + timedelta(seconds=31)
    assert await drainer.drain_once() == 1
    assert sorted(calls) == ["blocked", "flaky", "flaky", "ok"]
    async with sessions() as s:
        rows = {r.recipient: (r.status, r.last_error) for r in (await s.execute(
            Outbox.__table__.select())).all()}
    assert rows == {"ok": ("sent", None), "flaky": ("sent", None),
                    "blocked": ("failed", "the fan blocked the account")}
    assert (drainer.sent, drainer.failed) == (2, 1)


async def test_a_row_a_crashed_drainer_left_sending_is_sent_once_by_a_running_drainer_without_a_restart(
        sessions, now):
    clock = [now]
    sent: list[int] = []
    passes = [0]  # transactions the drainer committed
    moved = asyncio.Condition()

    async def until(done):
        async with moved:
            await asyncio.wait_for(moved.wait_for(done), 10)  # a guard against hanging, not a timing

    async def handler(message):
        async with moved:
            sent.append(message.id)
            moved.notify_all()

    async def transact(work):
        async with sessions.begin() as s:
            result = await work(s)
        async with moved:
            passes[0] += 1
            moved.notify_all()
        return result

    async def row(row_id):
        async with sessions() as s:
            return (await s.execute(select(Outbox).where(Outbox.id == row_id))).scalar_one()

    async with sessions.begin() as s:
        row_id = await outbox.enqueue(s, platform="line", kind="relay", recipient="fan", payload={}, now=now)
        await outbox.claim_due(s, "line", now)  # an earlier drainer claimed it, then its process died
    clock[0] = now + timedelta(seconds=30)  # a quick restart: too soon to tell the row from one in flight
    drainer = OutboxDrainer("line", transact, handler, clock=lambda: clock[0], poll_s=3600)
    await drainer.start()
    try:
        await until(lambda: passes[0] >= 2)  # the start's recovery (nothing old enough), a pass with nothing due
        assert sent == [] and (await row(row_id)).status == "sending"

        clock[0] = now + timedelta(minutes=3)  # the same drainer, still running, looks again after a minute
        drainer.wake()
        await until(lambda: sent)
        await drainer.settle()  # the send recorded
        drainer.wake()
        await drainer.settle()
    finally:
        await drainer.close()
    assert sent == [row_id]
    stored = await row(row_id)
    assert (stored.status, stored.attempts) == ("sent", 2)


async def test_a_platform_down_for_longer_than_every_retry_never_gives_a_message_up(sessions, now):
    """Discord unreachable for an hour (the bot reconnects every few minutes): claims that could not
    even try do not count as attempts, so the DM goes out once it is back instead of failing."""
    clock = [now]
    connected = [False]
    sent: list[str] = []

    async def handler(message):
        if not connected[0]:
            raise RetryLater("discord not connected", after=5.0, attempted=False)
        sent.append(message.recipient)

    async def transact(work):
        async with sessions.begin() as s:
            return await work(s)

    async with sessions.begin() as s:
        await outbox.enqueue(s, platform="discord", kind="relay", recipient="1234", payload={}, now=now)
    drainer = OutboxDrainer("discord", transact, handler, clock=lambda: clock[0], max_attempts=3)
    for _ in range(12):  # an hour of five-minute steps, each claim finding Discord down
        clock[0] += timedelta(minutes=5)
        assert await drainer.drain_once() == 1
    connected[0] = True
    clock[0] += timedelta(minutes=5)
    assert await drainer.drain_once() == 1
    async with sessions() as s:
        row = (await s.execute(select(Outbox))).scalar_one()
    assert (row.status, row.attempts, sent) == ("sent", 1, ["1234"])
    assert (drainer.sent, drainer.failed) == (1, 0)
