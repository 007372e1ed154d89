"""One drainer per platform: claims due outbox rows, hands each to the platform's sender, records the result.

The rows are the truth (``crm/outbox.py``); this loop only moves them along. It wakes when a
commit queued something for its platform (``GroupWriter.on_outbox``), and otherwise every
``poll_s`` seconds (a row queued by another process, e.g. ``superfan reply``, or a retry that came
due). At start, and every ``recover_every`` (a minute) by its clock, it hands back rows a crash
left half-sent. A sender (``Handler``) raises :class:`RetryLater` for a passing failure (429,
5xx, a network error) and :class:`Undeliverable` for one that will not pass (the fan blocked
the account, DMs closed); anything else it raises is treated as passing, logged without its
message, and retried with backoff. A drop's row (``crm.drops.DROP_KINDS``) settles the deliveries
it carries in the same transaction that marks it (``crm.drops.record_outcome``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.wake import sleep_until_set
from bot.write_failures import brief
from crm import drops, outbox
from crm.clock import Clock, utcnow
from crm.outbox import OutboxMessage

log = logging.getLogger(__name__)
T = TypeVar("T")
Transact = Callable[[Callable[[AsyncSession], Awaitable[Any]]], Awaitable[Any]]
Handler = Callable[[OutboxMessage], Awaitable[None]]
#: After this many attempts a message that keeps failing is given up (recorded as failed).
MAX_ATTEMPTS = 8
#: How often the loop looks for rows a crash left half-sent (``recover_interrupted``).
RECOVER_EVERY = timedelta(seconds=60)


class RetryLater(Exception):
    """A passing failure: try again after ``after`` seconds (a ``Retry-After``), else the backoff.

    ``attempted=False`` says nothing was tried (the platform is not connected yet): the claim does
    not count towards :data:`MAX_ATTEMPTS`, so an outage of any length never gives a message up.
    """

    message_is_safe = True

    def __init__(self, reason: str, after: float | None = None, *, attempted: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after
        self.attempted = attempted


class Undeliverable(Exception):
    """The message cannot be delivered, ever (blocked, left, DMs closed): ``reason`` is recorded."""

    message_is_safe = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboxDrainer:
    """Sends ``platform``'s outbox through ``handler``; ``transact(work)`` runs ``work(session)`` in
    one committed transaction (the group writer in ``superfan run``, a plain session elsewhere)."""

    def __init__(self, platform: str, transact: Transact, handler: Handler, *, clock: Clock = utcnow,
                 poll_s: float = 2.0, batch: int = 50, concurrency: int = 4,
                 max_attempts: int = MAX_ATTEMPTS, recover_every: timedelta = RECOVER_EVERY) -> None:
        self.platform = platform
        self._transact = transact
        self._handler = handler
        self._clock = clock
        self._poll_s = poll_s
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._recover_every = recover_every
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.sent = 0
        self.failed = 0

    def wake(self, platform: str | None = None) -> None:
        """Look for due rows now (``platform``: only if it is ours; the writer passes it)."""
        if platform is None or platform == self.platform:
            self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"outbox-{self.platform}")

    async def close(self) -> None:
        """Stop after the messages being sent now are recorded (the rest wait in the database)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def drain_once(self) -> int:
        """Send everything due now (one claim after another until none is left); how many were handled."""
        handled = 0
        while True:
            claimed: list[OutboxMessage] = await self._transact(self._claim)
            if not claimed:
                return handled
            await asyncio.gather(*(self._send(message) for message in claimed))
            handled += len(claimed)

    async def settle(self) -> None:
        """Send what is due now and wait for sends the background loop has in flight (tests, demo)."""
        while True:
            await self.drain_once()
            if self._in_flight == 0:
                return
            await self._idle.wait()

    async def _claim(self, session: AsyncSession) -> list[OutboxMessage]:
        return await outbox.claim_due(session, self.platform, self._clock(), self._batch)

    async def _recover(self) -> None:
        """Hand back rows a crash left ``sending`` (this process's or another instance's)."""
        try:
            await self._transact(lambda s: outbox.recover_interrupted(s, self.platform, self._clock()))
        except Exception as exc:
            log.warning("outbox %s: could not recover interrupted sends (%s)", self.platform, brief(exc))

    async def _loop(self) -> None:
        recovered_at = self._clock()
        await self._recover()
        while True:
            # Not only at start: a row the crash left "sending" becomes recoverable two minutes
            # later, and a quick restart must not leave it stuck until the next one.
            if self._clock() - recovered_at >= self._recover_every:
                recovered_at = self._clock()
                await self._recover()
            try:
                await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage busy: the rows wait, the next pass takes them
                log.warning("outbox %s: a pass failed (%s); trying again", self.platform, brief(exc))
            self._wake.clear()
            await sleep_until_set(self._wake, self._poll_s)

    async def _send(self, message: OutboxMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._send_one(message)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _send_one(self, message: OutboxMessage) -> None:
        async with self._limit:
            try:
                await self._handler(message)
            except Undeliverable as exc:
                await self._give_up(message, exc.reason)
                log.info("outbox %s: %s #%d undeliverable (%s)", self.platform, message.kind, message.id, exc.reason)
                return
            except Exception as exc:
                after = exc.after if isinstance(exc, RetryLater) else None
                reason = exc.reason if isinstance(exc, RetryLater) else brief(exc)
                if isinstance(exc, RetryLater) and not exc.attempted:  # nothing was tried: not an attempt
                    await self._record(message, lambda s, now: _not_tried(s, message, now, reason, after))
                    return
                if message.attempts >= self._max_attempts:
                    await self._give_up(message, f"gave up after {message.attempts} attempts: {reason}")
                    log.warning("outbox %s: gave up on %s #%d (%s)", self.platform, message.kind, message.id, reason)
                    return
                await self._record(message, lambda s, now: _retry(s, message, now, reason, after))
                log.info("outbox %s: %s #%d will be retried (%s)", self.platform, message.kind, message.id, reason)
                return
            await self._record(message, lambda s, now: _sent(s, message, now))
            self.sent += 1

    async def _give_up(self, message: OutboxMessage, reason: str) -> None:
        await self._record(message, lambda s, now: _failed(s, message, now, reason))
        self.failed += 1

    async def _record(self, message: OutboxMessage, work: Callable[[AsyncSession, datetime], Awaitable[Any]]) -> None:
        now = self._clock()
        try:
            await self._transact(lambda s: work(s, now))
        except Exception as exc:  # left "sending": recover_interrupted hands it back after a restart
            log.warning("outbox %s: could not record the result of #%d (%s)", self.platform, message.id, brief(exc))


async def _sent(session: AsyncSession, message: OutboxMessage, now: datetime) -> None:
    await outbox.mark_sent(session, message.id, now)
    if message.kind in drops.DROP_KINDS:
        await drops.record_outcome(session, message.id, sent=True, error=None, now=now)


async def _failed(session: AsyncSession, message: OutboxMessage, now: datetime, reason: str) -> None:
    await outbox.mark_failed(session, message.id, now, reason)
    if message.kind in drops.DROP_KINDS:
        await drops.record_outcome(session, message.id, sent=False, error=reason, now=now)


async def _not_tried(session: AsyncSession, message: OutboxMessage, now: datetime, reason: str,
                     after: float | None) -> None:
    await outbox.mark_retry(session, message.id, now, reason, after=after, attempts=message.attempts, refund=True)


async def _retry(session: AsyncSession, message: OutboxMessage, now: datetime, reason: str,
                 after: float | None) -> None:
    at = await outbox.mark_retry(session, message.id, now, reason, after=after, attempts=message.attempts)
    if message.kind in drops.DROP_KINDS:
        await drops.record_retry(session, message.id, error=reason, at=at)
