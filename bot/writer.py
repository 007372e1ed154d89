"""The group-commit writer: webhook and Discord intake writes go through one task, many per transaction.

A webhook may only answer 200 once its events are durable, but one fsync per request caps a burst
at a few hundred requests a second on SQLite. So requests hand their work to :class:`GroupWriter`
and wait; one task takes *everything* pending, applies it in one transaction, commits, and only
then releases each waiting request. Under load groups grow by themselves (whatever queued during
the previous commit), at rest a lone request is committed at once: no timer, no added latency.

Work is a list of ops: an :class:`~crm.ingest.InteractionIn` (the fast, set-based path through
``record_many``) or an :class:`Action` (a command such as a check-in, run in a savepoint so its
expected failure cannot undo the rest of the group).

When a group fails, :func:`bot.write_failures.classify` says what that means: a busy or
unreachable database fails every request of the group at once (:class:`StorageUnavailable`, so
webhooks answer 503 and senders retry); otherwise the ops are retried one per transaction, so one
bad op is :class:`Rejected` alone and a bug fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.write_failures import (
    BUG,
    TRANSIENT,
    StorageUnavailable,
    WriterClosed,
    brief,
    classify,
    transient,
)
from crm.clock import Clock, utcnow
from crm.db import checkpoint, take_over_checkpoints
from crm.errors import CrmError
from crm.ingest import Recorded, record_many
from crm.interaction import InteractionIn
from crm.outbox import QUEUED
from crm.settings import CrmSettings
from crm.tiers_service import TIER_MOVES

log = logging.getLogger(__name__)

#: Upper bound of ops in one transaction, so a huge backlog still commits in bounded steps.
MAX_GROUP_OPS = 5000
#: On SQLite, the writer's commits leave the WAL to a checkpoint run beside it at most this often.
CHECKPOINT_EVERY_S = 1.0


@dataclass(frozen=True)
class Action:
    """A unit of work run inside the writer's transaction; ``run(session, now)`` returns its outcome.

    A :class:`~crm.errors.CrmError` raised by ``run`` is its outcome too (the savepoint is rolled
    back and the error is handed to the caller to show); anything else fails the group.
    ``ordered=False`` (bookkeeping such as a display-name refresh) lets the writer run it after
    the group's interactions instead of splitting their one ``record_many`` in two.
    """

    name: str
    run: Callable[[AsyncSession, datetime], Awaitable[Any]]
    ordered: bool = True


@dataclass(frozen=True)
class Rejected:
    """An op that could not be applied on its own either; it was logged and skipped."""

    reason: str


Op = InteractionIn | Action
Outcome = Recorded | Rejected | Any


@dataclass
class _Work:
    ops: Sequence[Op]
    future: asyncio.Future[list[Outcome]]
    results: list[Outcome] = field(default_factory=list)


_STOP = object()


class GroupWriter:
    """One task that commits queued work in groups; ``naive=True`` commits every op on its own.

    ``naive`` exists for the benchmark's baseline; it is never what production runs.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, *,
                 clock: Clock = utcnow, naive: bool = False, max_group_ops: int = MAX_GROUP_OPS) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._naive = naive
        self._max_ops = max_group_ops
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._conn: AsyncConnection | None = None
        self._closing = False
        self._moved = False
        self._checkpoints = False  # the held connection leaves WAL checkpoints to us (SQLite)
        self._checkpointing: asyncio.Task[None] | None = None
        self._last_checkpoint = 0.0
        #: When commits began failing for a transient reason (None: the last commit went through).
        self.blocked_since: datetime | None = None
        self.groups = 0  # transactions run: one per group, one per op when committing them one by one
        self.ops = 0
        #: Called after a commit in which some fan changed tier, whatever op moved it (e.g. to wake
        #: Discord's role sync).
        self.on_tier_moves: list[Callable[[], None]] = []
        #: Called with a platform after a commit that queued outbox messages for it (wakes its sender).
        self.on_outbox: list[Callable[[str], None]] = []
        self._queued: set[str] = set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="superfan-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def submit(self, ops: Sequence[Op]) -> list[Outcome]:
        """Queue ``ops`` and return their outcomes, in order, once they are committed.

        Raises :class:`WriterClosed` during shutdown, and a transient database error if the ops
        could not be committed (the caller answers 5xx so the platform redelivers).
        """
        if not ops:
            return []
        if not self.running:
            raise WriterClosed("the writer is not running")
        work = _Work(list(ops), asyncio.get_running_loop().create_future())
        work.future.add_done_callback(_retrieve)
        self._queue.put_nowait(work)
        return await asyncio.shield(work.future)

    async def close(self) -> None:
        """Stop taking work, commit everything already queued, then end the task."""
        if self._task is None:
            return
        self._closing = True
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None
        await self._drop_connection()

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            group: list[_Work] = []
            count = 0
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    group.append(item)
                    count += len(item.ops)
                if stopping or count >= self._max_ops or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if group:
                try:
                    await self._commit(group)
                except Exception as exc:  # never let the one writer die
                    log.exception("writer: unexpected failure committing %d requests", len(group))
                    for work in group:
                        _fail(work, exc)

    async def _commit(self, group: list[_Work]) -> None:
        self.ops += sum(len(w.ops) for w in group)
        if self._naive:
            await self._one_by_one(group)
            return
        ops = [op for work in group for op in work.ops]
        self.groups += 1
        session = self._sessions(bind=await self._connection())
        try:
            async with session.begin():
                outcomes = await self._apply(session, ops, self._clock())
        except Exception as exc:
            await session.close()
            await self._drop_connection()
            if transient(exc):
                self._blocked(exc, len(ops))
                for work in group:
                    _fail(work, StorageUnavailable(brief(exc)))
                return
            log.warning("writer: a group of %d ops failed (%s); retrying them one by one", len(ops), brief(exc))
            await self._one_by_one(group)
            return
        self._committed(session)
        start = 0
        for work in group:
            _resolve(work, outcomes[start : start + len(work.ops)])
            start += len(work.ops)
        await session.close()
        self._announce_moves()
        self._maybe_checkpoint()

    def _blocked(self, exc: BaseException, ops: int) -> None:
        if self.blocked_since is None:
            self.blocked_since = self._clock()
        log.warning("writer: storage unavailable (%s); %d ops not stored, their senders will retry", brief(exc), ops)

    def _committed(self, session: AsyncSession) -> None:
        if self.blocked_since is not None:
            log.warning("writer: storage available again (blocked since %s)", self.blocked_since.isoformat())
        self.blocked_since = None
        if session.info.get(TIER_MOVES):
            self._moved = True
        self._queued |= session.info.get(QUEUED, set())

    async def health(self) -> str | None:
        """For ``/healthz``: None when the writer runs and its last commit went through."""
        if not self.running:
            return "writer stopped"
        if self.blocked_since is not None:
            return f"storage blocked since {self.blocked_since.isoformat(timespec='seconds')}"
        return None

    async def _connection(self) -> AsyncConnection:
        """The connection the writer keeps between groups.

        Taking one from the pool and handing it back costs about as much per group as the
        group's SQL; the writer is the one steady user, so it holds one (committed, idle between
        groups) and takes a fresh one after any failure.
        """
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = await self._engine.connect()
            self._checkpoints = await take_over_checkpoints(self._conn)
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if self._checkpoints and not conn.invalidated:
                    await take_over_checkpoints(conn, on=False)  # back to the pool as it came
            except Exception:
                await conn.invalidate()  # not back to the pool half-configured
            try:
                await conn.close()
            except Exception as exc:
                log.warning("writer: closing a failed connection: %s", brief(exc))
        self._checkpoints = False
        if self._checkpointing is not None:
            await self._checkpointing

    def _maybe_checkpoint(self) -> None:
        """Start a WAL checkpoint beside the writer, so no webhook waits for its fsync."""
        if not self._checkpoints or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_EVERY_S:
            self._last_checkpoint = now
            self._checkpointing = asyncio.create_task(self._checkpoint(), name="superfan-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            await checkpoint(self._engine)
        except Exception as exc:  # the next one catches up; SQLite also checkpoints on close
            log.warning("writer: WAL checkpoint failed: %s", brief(exc))

    def _announce_moves(self) -> None:
        """Tell listeners what the commits just made: tier moves, and messages queued per platform."""
        queued, self._queued = self._queued, set()
        for platform in sorted(queued):
            for wake in self.on_outbox:
                try:
                    wake(platform)
                except Exception:
                    log.exception("writer: an outbox listener failed")
        if not self._moved:
            return
        self._moved = False
        for callback in self.on_tier_moves:
            try:
                callback()
            except Exception:
                log.exception("writer: a tier-move listener failed")

    async def _apply(self, session: AsyncSession, ops: Sequence[Op], now: datetime) -> list[Outcome]:
        """Run ops in order: consecutive interactions as one ``record_many``, actions in savepoints.

        Unordered actions wait until the end, so they do not break up the interactions' batch.
        """
        outcomes: list[Outcome] = [None] * len(ops)
        batch: list[tuple[int, InteractionIn]] = []
        later: list[tuple[int, Action]] = []

        async def flush() -> None:
            if batch:
                done = await record_many(session, [item for _, item in batch], self._settings, now)
                for (n, _), result in zip(batch, done.results, strict=True):
                    outcomes[n] = result
                batch.clear()

        async def act(n: int, action: Action) -> None:
            try:
                async with session.begin_nested():
                    outcomes[n] = await action.run(session, now)
            except CrmError as exc:
                outcomes[n] = exc

        for n, op in enumerate(ops):
            if isinstance(op, InteractionIn):
                batch.append((n, op))
            elif not op.ordered:
                later.append((n, op))
            else:
                await flush()
                await act(n, op)
        await flush()
        for n, action in later:
            await act(n, action)
        return outcomes

    async def _one_by_one(self, group: list[_Work]) -> None:
        """Each op in its own transaction: bad data is rejected alone; storage that fails fails
        this request and every one after it at once (their senders retry)."""
        unavailable: StorageUnavailable | None = None
        for work in group:
            if unavailable is not None:
                _fail(work, unavailable)
                continue
            outcomes: list[Outcome] = []
            failure: BaseException | None = None
            for op in work.ops:
                self.groups += 1
                try:
                    async with self._sessions.begin() as session:
                        (outcome,) = await self._apply(session, [op], self._clock())
                    self._committed(session)
                except Exception as exc:
                    kind = classify(exc)
                    if kind == TRANSIENT:
                        self._blocked(exc, len(work.ops))
                        failure = unavailable = StorageUnavailable(brief(exc))
                        break
                    if kind == BUG:
                        log.error("writer: %s failed (%s)", _describe(op), brief(exc), exc_info=exc)
                        failure = exc
                        break
                    log.warning("writer: skipped %s that cannot be stored (%s)", _describe(op), brief(exc))
                    outcome = Rejected(brief(exc))
                outcomes.append(outcome)
            if failure is not None:
                _fail(work, failure)
            else:
                _resolve(work, outcomes)
        self._announce_moves()


def _describe(op: Op) -> str:
    if isinstance(op, InteractionIn):
        return f"{op.platform} {op.kind} event {op.source_event_id}"
    return f"action {op.name}"


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen even when its request went away (no "never retrieved" noise)."""
    if not future.cancelled():
        future.exception()


def _resolve(work: _Work, outcomes: list[Outcome]) -> None:
    if not work.future.done():
        work.future.set_result(outcomes)


def _fail(work: _Work, exc: BaseException) -> None:
    if not work.future.done():
        work.future.set_exception(exc)
