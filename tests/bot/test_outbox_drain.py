"""The outbox drainer: sends due rows once, retries passing failures later, records the ones that cannot be delivered."""

from __future__ import annotations

from datetime import timedelta

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
