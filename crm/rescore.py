"""Recompute every stored interaction's points and every fan's score after the rules change.

A rescore reads every interaction once, fan by fan in time order, in batches of about
:data:`BATCH_ROWS` rows that always hold whole fans (a range of fan ids). Each batch is written
in its own short transaction, so a rescore of millions of rows never holds SQLite's write lock
for longer than one batch's updates and the live writer (webhooks) gets it in between:

* the batch's rows are read and worked out outside any write transaction (on SQLite a plain
  read snapshot, which never waits for or blocks the writer);
* then, inside the write transaction, a fingerprint of the range (how many rows, which ids,
  which fans) is compared with what was read. Whatever the writer committed meanwhile for those
  fans (a new interaction, a merge, an erasure) changes it, and the batch is read and worked out
  again under the lock. On PostgreSQL the range's fan rows are locked first (``FOR NO KEY
  UPDATE``): a concurrent ingest can still insert rows, but its ``score_base`` update waits and
  then adds its term on top of the rescored base;
* only points and bases that changed are written, and the range's fans are re-evaluated
  (reason ``rescore``), all in that transaction.

So between batches every fan is in one of two consistent states: rescored (its points and base
follow the new rules; what arrives later is scored against them as usual) or not yet (the old
points and base, plus whatever arrived, all replayed when its batch comes). The end result is the
same as a rescore of a quiet database holding the same interactions.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import READ_ONLY, fetch_rows, sqlite_driver, update_rows
from crm.models import Fan, Interaction, table
from crm.scoring import (
    DAY_SECONDS,
    Allowance,
    ScoringRules,
    base_for_score,
    forget_epoch,
    rebase_if_needed,
    score_state,
)
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, reevaluate

#: Rows worked out per write transaction (whole fans: a fan with more rows is one batch of its
#: own). About 30 ms of updates on SQLite, so the writer never waits long for its lock.
BATCH_ROWS = 10_000
#: WAL pages (4 KiB) a rescore's connection lets pile up before it checkpoints (SQLite's default: 1,000).
CHECKPOINT_PAGES = 65_536
DEFAULT_CHECKPOINT_PAGES = 1000
#: Relative difference under which a recomputed ``score_base`` is left as stored (summation order).
BASE_TOLERANCE = 1e-12
#: Kept for callers that report progress in steps (the CLI advances by what it is told).
CHUNK = BATCH_ROWS

_i = table(Interaction)
_f = table(Fan)
_COLUMNS = (_i.c.id, _i.c.fan_id, _i.c.kind, _i.c.occurred_at, _i.c.amount_cents, _i.c.currency, _i.c.points)
_ORDER = (_i.c.fan_id, _i.c.occurred_at, _i.c.id)  # the (fan_id, occurred_at) index's own order
_FROM = select(*_COLUMNS).where(_i.c.fan_id > bindparam("lo")).order_by(*_ORDER).limit(bindparam("n"))
_RANGE = select(*_COLUMNS).where(_i.c.fan_id > bindparam("lo"), _i.c.fan_id <= bindparam("hi")).order_by(*_ORDER)
_REST_OF_FAN = select(*_COLUMNS).where(
    _i.c.fan_id == bindparam("fan"),
    or_(_i.c.occurred_at > bindparam("at"), and_(_i.c.occurred_at == bindparam("at"), _i.c.id > bindparam("id"))),
).order_by(*_ORDER)
_TAIL = select(*_COLUMNS).where(_i.c.fan_id > bindparam("lo")).order_by(*_ORDER)
_PRINT = (func.count(), func.coalesce(func.sum(_i.c.id), 0), func.coalesce(func.sum(_i.c.fan_id * _i.c.id), 0))
_PRINT_RANGE = select(*_PRINT).where(_i.c.fan_id > bindparam("lo"), _i.c.fan_id <= bindparam("hi"))
_PRINT_TAIL = select(*_PRINT).where(_i.c.fan_id > bindparam("lo"))
_FANS_RANGE = select(_f.c.id, _f.c.score_base, _f.c.tier, _f.c.tier_pinned).where(
    _f.c.id > bindparam("lo"), _f.c.id <= bindparam("hi"))
_FANS_TAIL = select(_f.c.id, _f.c.score_base, _f.c.tier, _f.c.tier_pinned).where(_f.c.id > bindparam("lo"))
_LOCK_RANGE = select(_f.c.id).where(_f.c.id > bindparam("lo"), _f.c.id <= bindparam("hi")).with_for_update(
    key_share=True)
_LOCK_TAIL = select(_f.c.id).where(_f.c.id > bindparam("lo")).with_for_update(key_share=True)

Row = tuple[Any, ...]
_NAIVE_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class RescoreResult:
    fans: int
    interactions: int
    changed_points: int
    tier_moves: list[TierMove]
    #: Write transactions the rescore committed (one per batch, after the first that sets the rules).
    batches: int = 0
    #: Batches read again under the write lock because the live writer changed their fans meanwhile.
    reread: int = 0


@dataclass
class _Batch:
    """One range of fans ``(lo, hi]`` worked out: new points, new bases, and what was read."""

    lo: int
    hi: int | None  # None: every fan after ``lo``
    rows: int = 0
    fingerprint: tuple[int, int, int] = (0, 0, 0)
    points: list[tuple[float, int]] = field(default_factory=list)  # (new points, interaction id), changed only
    bases: dict[int, float] = field(default_factory=dict)


async def rescore(session: AsyncSession, settings: CrmSettings, now: datetime,
                  progress: Callable[[int], None] | None = None, *, batch_rows: int = BATCH_ROWS,
                  pause: Callable[[str], Awaitable[None]] | None = None) -> RescoreResult:
    """Replay each fan's history in time order under the current weights, caps and half-life.

    Commits ``session`` once per batch (see the module docstring); the caller passes a session
    with nothing of its own pending. ``progress`` is told how many rows each batch held.
    ``pause``, if given, is awaited with ``"read"`` once a batch is worked out (before its write
    transaction begins) and ``"written"`` once it is committed: tests record live events there.
    Fans of a batch are re-evaluated when it is written (reason ``rescore``).
    """
    rules = settings.scoring
    state = await score_state(session, rules)
    state.half_life_days = rules.half_life_days
    await session.flush()
    forget_epoch()
    await rebase_if_needed(session, state, now)
    epoch, half_life = state.epoch, state.half_life_days
    tiers = settings.tiers
    floor = (base_for_score(tiers.tiers[1].threshold * tiers.demote_fraction, now, epoch, half_life)
             if len(tiers.tiers) > 1 else math.inf)
    await session.commit()
    forget_epoch()
    replay = _Replay(rules, epoch.timestamp(), half_life * DAY_SECONDS)
    on_sqlite = await sqlite_driver(session) is not None
    await session.rollback()

    moves: list[TierMove] = []
    fans = rows = changed = batches = reread = 0
    lo = 0
    spaced: dict[int, Any] = {}  # SQLite connections whose automatic checkpoints were spaced out
    try:
        while True:
            # Read and work out the next batch outside the writer's lock.
            if on_sqlite:
                await session.connection(execution_options={READ_ONLY: True})
            got, hi = await _read_from(session, lo, batch_rows)
            batch = replay.batch(lo, hi, got)
            if on_sqlite:
                await session.rollback()  # ends the read snapshot; the write transaction starts below
            if pause:
                await pause("read")
            # The write transaction: lock the range (PostgreSQL), check nothing changed, write.
            if on_sqlite:
                await _space_checkpoints(session, spaced)
            bounds = {"lo": batch.lo} if batch.hi is None else {"lo": batch.lo, "hi": batch.hi}
            if not on_sqlite:
                await fetch_rows(session, _LOCK_TAIL if batch.hi is None else _LOCK_RANGE, bounds)
            (count, ids, pairs), = await fetch_rows(session, _PRINT_TAIL if batch.hi is None else _PRINT_RANGE, bounds)
            if (int(count), int(ids), int(pairs)) != batch.fingerprint:
                reread += 1
                batch = replay.batch(lo, batch.hi, await fetch_rows(session, _TAIL if batch.hi is None else _RANGE, bounds))
            moves += await _write(session, settings, now, batch, bounds, floor)
            await session.commit()
            batches += 1
            fans += len(batch.bases)
            rows += batch.rows
            changed += len(batch.points)
            if progress:
                progress(batch.rows)
            if batch.hi is None:
                break
            lo = batch.hi
            if pause:
                await pause("written")
    finally:
        for driver in spaced.values():
            await driver.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_CHECKPOINT_PAGES}")
    return RescoreResult(fans, rows, changed, moves, batches, reread)


async def _space_checkpoints(session: AsyncSession, spaced: dict[int, Any]) -> None:
    """Let the WAL grow to :data:`CHECKPOINT_PAGES` before this connection copies it back.

    A batch updates rows all over the table (its fans' rows span the year), and by default every
    commit past 1,000 WAL pages copies them back into the database file and syncs it: most of a
    rescore's time went there, writing the same pages again batch after batch.
    """
    driver = await sqlite_driver(session)
    if driver is not None and id(driver) not in spaced:
        spaced[id(driver)] = driver
        await driver.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")


async def _read_from(session: AsyncSession, lo: int, batch_rows: int) -> tuple[list[Row], int | None]:
    """About ``batch_rows`` rows from fan ``lo + 1`` on, ending on a whole fan, and the last fan
    id they cover (``None``: they run to the end of the table, and the batch covers every fan
    after ``lo``). A read that stops inside a fan is completed with that fan's remaining rows, so
    every row is read once.
    """
    got = await fetch_rows(session, _FROM, {"lo": lo, "n": batch_rows})
    if len(got) < batch_rows:
        return got, None
    last_id, last_fan, _kind, last_at = got[-1][:4]
    got.extend(await fetch_rows(session, _REST_OF_FAN, {"fan": last_fan, "at": last_at, "id": last_id}))
    return got, int(last_fan)


class _Replay:
    """Points and base terms of a fan's rows, replayed in time order under the current rules."""

    def __init__(self, rules: ScoringRules, epoch_ts: float, span: float) -> None:
        self.rules = rules
        self.allowance = Allowance(rules)
        self.epoch_ts = epoch_ts
        self.span = span
        self.weights = {kind: rules.base_points(kind, None, None) for kind in rules.weights}
        #: Kinds whose points are their weight: neither capped nor cooled down.
        self.plain = frozenset(rules.weights) - set(rules.daily_caps) - {
            kind for kind, seconds in rules.cooldown_seconds.items() if seconds}

    def batch(self, lo: int, hi: int | None, got: Sequence[Row]) -> _Batch:
        """``got``: every row of the fans ``(lo, hi]``, in ``_ORDER``. Runs once per row of the
        database: the loop keeps to locals, and kinds without a cap or cooldown skip the allowance."""
        batch = _Batch(lo, hi)
        allowance, weights, rules, plain = self.allowance, self.weights, self.rules, self.plain
        award, earned, awarded_at = allowance.award, allowance.earned, allowance.awarded_at
        epoch_ts, span = self.epoch_ts, self.span
        parse, naive_epoch = datetime.fromisoformat, _NAIVE_EPOCH
        text = bool(got) and isinstance(got[0][3], str)  # SQLite's naive UTC text, else aware datetimes
        points_out, bases = batch.points, batch.bases
        current: int | None = None
        base = 0.0
        count = ids = pairs = 0
        for iid, fan_id, kind, at, cents, currency, old in got:
            if fan_id != current:
                if current is not None:
                    bases[current] = base
                current, base = fan_id, 0.0
                earned.clear()
                awarded_at.clear()
            # Subtracting the naive epoch gives datetime.timestamp()'s exact value, 4x faster.
            ts = (parse(at) - naive_epoch).total_seconds() if text else at.timestamp()
            if cents is None:
                points = weights.get(kind, 0.0)
                if kind not in plain:
                    points = award(fan_id, kind, ts, points)
            else:
                points = award(fan_id, kind, ts, rules.base_points(kind, Decimal(cents) / 100, currency))
            if points:
                base += points * 2.0 ** ((ts - epoch_ts) / span)
            if points != old and abs(points - old) > 1e-12:
                points_out.append((points, iid))
            count += 1
            ids += iid
            pairs += fan_id * iid
        if current is not None:
            bases[current] = base
        batch.rows = count
        batch.fingerprint = (count, ids, pairs)
        return batch


async def _write(session: AsyncSession, settings: CrmSettings, now: datetime, batch: _Batch,
                 bounds: dict[str, int], floor: float) -> list[TierMove]:
    """Write the batch's changed points and bases, then re-evaluate its fans' tiers."""
    await update_rows(session, _i, "id", ["points"], sorted(batch.points, key=_by_id))  # in table order
    fans = await fetch_rows(session, _FANS_TAIL if batch.hi is None else _FANS_RANGE, bounds)
    lowest = settings.tiers.lowest
    new_bases = []
    candidates = []
    for fan_id, old, tier, pinned in fans:
        base = batch.bases.get(fan_id, 0.0)
        if abs(base - old) > BASE_TOLERANCE * max(abs(base), abs(old)):
            new_bases.append((base, fan_id))
        if tier != lowest or pinned is not None or base >= floor:
            candidates.append(fan_id)
    await update_rows(session, _f, "id", ["score_base"], new_bases)
    if not candidates:
        return []
    return await reevaluate(session, settings, now, fan_ids=candidates, reason="rescore")


async def refresh_tiers(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[TierMove]:
    """The periodic job: decay moves fans down while nothing happens; rebase the epoch if due."""
    await rebase_epoch(session, settings, now)
    return await reevaluate(session, settings, now, reason="decay")


async def rebase_epoch(session: AsyncSession, settings: CrmSettings, now: datetime) -> bool:
    """Move the epoch to ``now`` when terms approach float overflow (see :func:`rebase_if_needed`)."""
    return await rebase_if_needed(session, await score_state(session, settings.scoring), now)


def _by_id(change: tuple[float, int]) -> int:
    return change[1]
