"""Discord intake the database could not take yet: kept in order and retried until it is stored.

A LINE event that is not stored is answered with a 5xx and LINE delivers it again; Discord never
redelivers a gateway event. So when storage is unavailable (the writer's
:class:`~bot.writer.StorageUnavailable`: a locked or unreachable database) a message, reaction,
DM, join, leave or delete waits here, and one task retries the oldest first, pausing longer after
each failure. Events arriving meanwhile queue behind it, and an event whose own attempt failed
takes its place by arrival (concurrent attempts fail in any order), so they are stored in the
order they came. The queue is bounded: when it is full the oldest are kept and the newer ones are lost,
and the log says how many (never what they said). At shutdown what is still queued is tried once
more and what remains is logged as a count.

Retrying is safe: every op is idempotent (interactions are deduplicated by their Discord id, a
redaction or a leave applied twice changes nothing).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

from bot.write_failures import StorageUnavailable, WriterClosed, brief
from bot.writer import Action, Op, Outcome

log = logging.getLogger(__name__)

#: Events kept while storage is unavailable; a busy hour on a large server fits.
LIMIT = 20_000
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
Store = Callable[[Op], Awaitable[Outcome]]
Sleep = Callable[[float], Awaitable[None]]
#: Not stored for now, but worth another try later.
UNAVAILABLE = (StorageUnavailable, WriterClosed)


class IntakeBacklog:
    """Stores intake ops through ``store``, queueing those that meet unavailable storage."""

    def __init__(self, store: Store, *, limit: int = LIMIT, first_delay: float = FIRST_DELAY,
                 max_delay: float = MAX_DELAY, sleep: Sleep = asyncio.sleep) -> None:
        self._store = store
        self._limit = limit
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._items: list[tuple[int, Op]] = []  # (arrival number, op), oldest first
        self._arrivals = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self.lost = 0  # events refused because the queue was full

    def __len__(self) -> int:
        return len(self._items)

    async def submit(self, op: Op) -> Outcome | None:
        """Store ``op`` now and return its outcome, or queue it (None) when storage is unavailable.

        While others wait, ``op`` queues behind them without trying, so it cannot overtake them.
        """
        arrival = next(self._arrivals)
        if not self._items:
            try:
                return await self._store(op)
            except UNAVAILABLE as exc:
                log.warning("storage unavailable (%s); keeping Discord events to retry", brief(exc))
        self._add(arrival, op)
        return None

    def _add(self, arrival: int, op: Op) -> None:
        if len(self._items) >= self._limit:
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error("Discord intake backlog full (%d waiting): %d newer events lost so far",
                          len(self._items), self.lost)
            return
        bisect.insort(self._items, (arrival, op), key=lambda entry: entry[0])
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry(), name="superfan-discord-backlog")

    async def _retry(self) -> None:
        delay = self._first_delay
        while self._items:
            await self._sleep(delay)
            if await self._store_queued():
                delay = self._first_delay
                log.info("Discord intake backlog stored")
            else:
                delay = min(delay * 2, self._max_delay)
                log.warning("storage still unavailable: %d Discord events waiting, next try in %.1fs",
                            len(self._items), delay)

    async def _store_queued(self) -> bool:
        """Store queued ops oldest first; False when storage is still unavailable."""
        while self._items:
            entry = self._items[0]
            op = entry[1]
            try:
                await self._store(op)
            except UNAVAILABLE:
                return False
            except Exception as exc:  # bad data or a bug: retrying cannot help, and must not block the rest
                # the error's text may quote what the fan wrote: only its type goes to the log
                log.error("dropped a queued Discord %s that cannot be stored: %s", _describe(op), type(exc).__name__)
            self._items.remove(entry)  # not pop(0): an earlier arrival may have been put before it meanwhile
        return True

    async def close(self) -> int:
        """Stop retrying, try what is queued once more, and return (and log) how many remain."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._items:
            await self._store_queued()
        if self._items or self.lost:
            log.error("shutting down with %d Discord events not stored (%d more lost to a full backlog)",
                      len(self._items), self.lost)
        return len(self._items)


def _describe(op: Op) -> str:
    """What an op is, for the log: kind and Discord id, never its text or the fan's name."""
    if isinstance(op, Action):
        return f"action {op.name}"
    return f"{op.kind} {op.source_event_id}"
