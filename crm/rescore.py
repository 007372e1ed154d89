"""Recompute every stored interaction's points and every fan's score after the rules change.

A rescore of millions of rows never holds SQLite's write lock for long, so webhooks keep being
recorded while it runs. It goes in three steps:

1. **Work out** (no write lock; on SQLite a read snapshot per range): every interaction is read
   once, fan by fan in time order, in ranges of fan ids of about :data:`BATCH_ROWS` rows that
   always hold whole fans. Each fan's points and score are replayed under the current rules;
   the changed points (16 bytes each) and each range's scores and fingerprint (how many rows,
   which ids, which fans) are kept.
2. **Points**, in table order (id), :data:`WRITE_ROWS` a transaction. A range's fans' rows lie all
   over the table (a fan's year of history), so writing them range by range rewrote most of
   the table's pages once per range; in id order each page is written about once. Should step 1
   hold :data:`HELD_POINTS` changed points, they are written out then (between two ranges) and
   step 1 goes on: memory stays bounded, and the table's pages are written once per such pass.
3. **Scores and tiers**, range by range, each in a short transaction that first compares the
   range's fingerprint with what step 1 read (on PostgreSQL after locking the range's fan rows
   ``FOR NO KEY UPDATE``). Whatever the live writer committed meanwhile for those fans (a new
   interaction, a merge, an erasure) changes it, and the range is then read and worked out
   again under the lock: its points and scores are written from that. The range's scores per
   kind are recounted from its rows (crm.fan_kind_scores), and its fans re-evaluated (reason
   ``rescore``).

What a fan looks like meanwhile: until step 3 reaches it, its score is the one it had (plus
whatever arrived, scored as usual); from step 2 its stored points may already follow the new
rules. Step 3 sets every score from the rows as they are then, so the end result is that of a
rescore of a quiet database holding the same interactions. Write transactions are
:data:`PAUSE_S` apart, so the live writer, polling for the lock, gets it between them.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm import fan_kind_scores
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

#: Rows read and worked out per range of fans (whole fans: a fan with more rows is one range of its own).
BATCH_ROWS = 100_000
#: Point updates per write transaction (in id order): about 100 ms on SQLite.
WRITE_ROWS = 25_000
#: Changed points step 1 keeps (16 bytes each) before writing them out: 10M rows of which 5.4M
#: changed held 86 MB of them and the rescore peaked at 248 MB; at most this many, it stays bounded.
HELD_POINTS = 2_000_000
#: Seconds between a rescore's write transactions: the live writer's next poll for the lock
#: (SQLite's busy handler sleeps up to 25 ms between its first polls) falls in the gap.
PAUSE_S = 0.03
#: WAL pages (4 KiB) a rescore's connection lets pile up before it checkpoints (SQLite's default: 1,000).
CHECKPOINT_PAGES = 65_536
DEFAULT_CHECKPOINT_PAGES = 1000
#: The rescore's page cache (negative: KiB; crm.db gives every connection 64 MiB).
CACHE_KIB = -16384
#: Relative difference under which a recomputed ``score_base`` is left as stored (summation order).
BASE_TOLERANCE = 1e-12

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
# 64-bit products: PostgreSQL's integer columns are 32-bit, and fan id × interaction id is not.
_PRINT = (func.count(), func.coalesce(func.sum(_i.c.id), 0),
          func.coalesce(func.sum(cast(_i.c.fan_id, BigInteger) * _i.c.id), 0))
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
    #: Write transactions the rescore committed for points and scores (after the first, for the rules).
    batches: int = 0
    #: Ranges read again under the write lock because the live writer changed their fans meanwhile.
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
                  write_rows: int = WRITE_ROWS, pause_s: float = PAUSE_S, held_points: int = HELD_POINTS,
                  pause: Callable[[str], Awaitable[None]] | None = None) -> RescoreResult:
    """Replay each fan's history in time order under the current weights, caps and half-life.

    Commits ``session`` many times (see the module docstring); the caller passes a session with
    nothing of its own pending. ``progress`` is told how many rows each range held as step 1
    reads them. ``pause``, if given, is awaited with ``"read"`` after each range of step 1,
    ``"points"`` after each transaction of step 2 and ``"written"`` after each of step 3: tests
    record live events there. ``pause_s``: the gap between write transactions. ``held_points``:
    how many changed points step 1 keeps before writing them out.
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

    # 1. Work out every range without the writer's lock; the next range is read (in the
    #    database's thread) while this one is worked out.
    ranges: list[_Batch] = []
    changes = _Changes()
    rows = changed = 0
    lo = 0
    spaced: dict[int, tuple[Any, int]] = {}  # SQLite connections set for the rescore, and their cache size
    reading = await _start_read(session, on_sqlite, lo, batch_rows, spaced)
    batches = 0
    while True:
        got, hi = await reading
        await session.rollback()  # ends the read snapshot (on PostgreSQL, the read transaction)
        if changes.count >= held_points:  # memory stays bounded: what was worked out so far goes now
            batches += await _write_points(session, changes, write_rows, pause_s, pause, on_sqlite, spaced)
            changes = _Changes()
        if hi is not None:
            reading = await _start_read(session, on_sqlite, hi, batch_rows, spaced)
        batch = replay.batch(lo, hi, got)
        del got
        changed += len(batch.points)
        changes.add(batch.points)
        batch.points = []
        ranges.append(batch)
        rows += batch.rows
        if progress:
            progress(batch.rows)
        if pause:
            await pause("read")
        if hi is None:
            break
        lo = hi

    moves: list[TierMove] = []
    reread = 0
    try:
        # 2. Points, in table order.
        batches += await _write_points(session, changes, write_rows, pause_s, pause, on_sqlite, spaced)
        del changes
        # 3. Scores and tiers, range by range, checked against what step 1 read.
        for batch in ranges:
            if on_sqlite:
                await _space_checkpoints(session, spaced)
            bounds = {"lo": batch.lo} if batch.hi is None else {"lo": batch.lo, "hi": batch.hi}
            if not on_sqlite:
                await fetch_rows(session, _LOCK_TAIL if batch.hi is None else _LOCK_RANGE, bounds)
            (count, ids, pairs), = await fetch_rows(session, _PRINT_TAIL if batch.hi is None else _PRINT_RANGE,
                                                    bounds)
            if (int(count), int(ids), int(pairs)) != batch.fingerprint:
                reread += 1
                rows -= batch.rows
                batch = replay.batch(batch.lo, batch.hi,
                                     await fetch_rows(session, _TAIL if batch.hi is None else _RANGE, bounds))
                rows += batch.rows
                changed += len(batch.points)
                await update_rows(session, _i, "id", ["points"], sorted(batch.points, key=_by_id))
            await fan_kind_scores.recount(session, epoch, half_life, lo=batch.lo, hi=batch.hi)
            moves += await _write_scores(session, settings, now, batch, bounds, floor)
            await session.commit()
            batches += 1
            if pause:
                await pause("written")
            await asyncio.sleep(pause_s)
    finally:
        for driver, cache in spaced.values():
            await driver.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_CHECKPOINT_PAGES}")
            await driver.execute(f"PRAGMA cache_size={cache}")
    fans = sum(len(batch.bases) for batch in ranges)
    return RescoreResult(fans, rows, changed, moves, batches, reread)


async def _write_points(session: AsyncSession, changes: _Changes, write_rows: int, pause_s: float,
                        pause: Callable[[str], Awaitable[None]] | None, on_sqlite: bool,
                        spaced: dict[int, tuple[Any, int]]) -> int:
    """Step 2: the changed points in id order, ``write_rows`` a transaction; how many transactions."""
    batches = 0
    for part in changes.in_id_order(write_rows):
        if on_sqlite:
            await _space_checkpoints(session, spaced)
        await update_rows(session, _i, "id", ["points"], part)
        await session.commit()
        batches += 1
        if pause:
            await pause("points")
        await asyncio.sleep(pause_s)
    return batches


class _Changes:
    """Changed points by interaction id, kept compact (16 bytes each) in buckets of nearby ids."""

    BUCKET_BITS = 15

    def __init__(self) -> None:
        self.buckets: dict[int, tuple[array[int], array[float]]] = {}
        self.count = 0

    def add(self, points: list[tuple[float, int]]) -> None:
        buckets, bits = self.buckets, self.BUCKET_BITS
        for value, iid in points:
            bucket = buckets.get(iid >> bits)
            if bucket is None:
                bucket = buckets[iid >> bits] = (array("q"), array("d"))
            bucket[0].append(iid)
            bucket[1].append(value)
        self.count += len(points)

    def in_id_order(self, size: int) -> Iterator[list[tuple[float, int]]]:
        """``(points, id)`` lists of ``size``, ids ascending; buckets are freed as they are taken."""
        out: list[tuple[float, int]] = []
        for key in sorted(self.buckets):
            ids, values = self.buckets.pop(key)
            out.extend(sorted(zip(values, ids, strict=True), key=_by_id))
            while len(out) >= size:
                yield out[:size]
                out = out[size:]
        if out:
            yield out


async def _space_checkpoints(session: AsyncSession, spaced: dict[int, tuple[Any, int]]) -> None:
    """Let the WAL grow to :data:`CHECKPOINT_PAGES` before this connection copies it back, and
    keep its page cache at :data:`CACHE_KIB` (rows are read all over the table and written in
    table order: a large cache holds little a rescore reads twice).

    A batch updates rows all over the table (its fans' rows span the year), and by default every
    commit past 1,000 WAL pages copies them back into the database file and syncs it: most of a
    rescore's time went there, writing the same pages again batch after batch.
    """
    driver = await sqlite_driver(session)
    if driver is not None and id(driver) not in spaced:
        (cache,), = await driver.execute_fetchall("PRAGMA cache_size")
        spaced[id(driver)] = (driver, int(cache))
        await driver.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        await driver.execute(f"PRAGMA cache_size={CACHE_KIB}")


async def _start_read(session: AsyncSession, on_sqlite: bool, lo: int, batch_rows: int,
                      spaced: dict[int, tuple[Any, int]]) -> asyncio.Future[tuple[list[Row], int | None]]:
    """:func:`_read_from` in a new read transaction, under way when this returns."""
    if on_sqlite:
        await session.connection(execution_options={READ_ONLY: True})
        await _space_checkpoints(session, spaced)  # also caches this transaction's driver: the read goes at once
    reading = asyncio.ensure_future(_read_from(session, lo, batch_rows))
    await asyncio.sleep(0)  # the read's first statement reaches the database's thread
    return reading


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


async def _write_scores(session: AsyncSession, settings: CrmSettings, now: datetime, batch: _Batch,
                        bounds: dict[str, int], floor: float) -> list[TierMove]:
    """Write the range's changed scores, then re-evaluate its fans' tiers."""
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


def _by_id(change: tuple[float, int]) -> int:
    return change[1]
