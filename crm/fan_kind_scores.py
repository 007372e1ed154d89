"""Each fan's score split by interaction kind (``fan_kind_scores``), kept as rows are stored.

A fan card explains its score per kind: how many rows earned points, those points as earned and
their worth today. Summing a heavy fan's awarded rows for that on every read cost ``fans --top
100`` 0.2 s at 100k fans (290k rows for the top 100). So every path that stores, moves or
rescores interactions keeps one row per fan and kind up to date instead:

- recording (:func:`crm.ingest.record_many`, :func:`crm.bulk_ingest.bulk_record`) adds each
  batch's awarded rows with :class:`KindTotals` and :func:`add_totals`;
- a rescore recounts each range of fans from its interactions (:func:`recount`), as migration
  0013 filled the table; a merge adds the two fans' rows kind by kind (``OnMerge.ADD`` in
  ``crm.fan_tables``); a rebase of the epoch scales the terms like ``fans.score_base``
  (:func:`scale`); erasing a fan deletes its rows (``crm.fan_tables``).

``score_base`` here is on the same epoch as ``fans.score_base`` (crm.scoring), so a kind's worth
today is its ``score_base`` over the same divisor, and the kinds add up to the fan's score.
Only rows that earned points count (``points > 0``), as in the score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Float, bindparam, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import fetch_rows, sqlite_driver
from crm.fan_deltas import JSON_ARROWS
from crm.models import FanKindScore, Interaction, table

CHUNK = 500
LN2 = math.log(2.0)

_k = table(FanKindScore)
_i = table(Interaction)
_ON_CONFLICT_ADD = (
    " ON CONFLICT (fan_id, kind) DO UPDATE SET awarded = awarded + excluded.awarded, "
    "points = points + excluded.points, score_base = score_base + excluded.score_base"
)
_SQLITE_ADD = "INSERT INTO fan_kind_scores (fan_id, kind, awarded, points, score_base) VALUES (?, ?, ?, ?, ?)" \
    + _ON_CONFLICT_ADD
#: The same as one statement over a JSON array (as crm.fan_deltas does, and for the same reason:
#: ``executemany`` takes the GIL back after every row, waiting out a busy event loop each time).
#: ``WHERE true`` tells SQLite's parser that ``ON CONFLICT`` is the upsert's, not the join's.
_SQLITE_JSON_ADD = (
    "INSERT INTO fan_kind_scores (fan_id, kind, awarded, points, score_base) SELECT j.value ->> 0, j.value ->> 1, "
    "j.value ->> 2, j.value ->> 3, j.value ->> 4 FROM json_each(?1) AS j WHERE true" + _ON_CONFLICT_ADD
)
_OF_FANS = select(_k.c.fan_id, _k.c.kind, _k.c.awarded, _k.c.points, _k.c.score_base).where(
    _k.c.fan_id.in_(bindparam("ids", expanding=True))).order_by(_k.c.fan_id, _k.c.kind)


class KindTotals:
    """What a batch of stored rows adds, per ``(fan, kind)``: ``[awarded rows, points, score terms]``."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], list[float]] = {}

    def add(self, fan_id: int, kind: str, points: float, term: float) -> None:
        """One stored row (nothing if it earned no points)."""
        if points <= 0.0:
            return
        entry = self.rows.get((fan_id, kind))
        if entry is None:
            self.rows[(fan_id, kind)] = [1, points, term]
        else:
            entry[0] += 1
            entry[1] += points
            entry[2] += term

    def add_columns(self, fan_ids: Sequence[int], kinds: Sequence[str], points: Sequence[float],
                    terms: Sequence[float]) -> None:
        """Many stored rows, column by column (an import adds 10^5 at a time)."""
        rows = self.rows
        for key, p, term in zip(zip(fan_ids, kinds), points, terms):  # noqa: B905 - equal lengths by construction
            if p > 0.0:
                entry = rows.get(key)
                if entry is None:
                    rows[key] = [1, p, term]
                else:
                    entry[0] += 1
                    entry[1] += p
                    entry[2] += term

    def take_back(self, fan_id: int, kind: str, points: float, term: float) -> None:
        """A row counted by :meth:`add` that was not stored after all (a concurrent writer had it)."""
        if points > 0.0:
            entry = self.rows[(fan_id, kind)]
            entry[0] -= 1
            entry[1] -= points
            entry[2] -= term


async def add_totals(session: AsyncSession, totals: KindTotals) -> None:
    """Add a batch's totals to the stored rows (created where a fan had none of that kind)."""
    rows = [(fan_id, kind, int(n), p, b) for (fan_id, kind), (n, p, b) in totals.rows.items() if n]
    if not rows:
        return
    driver = await sqlite_driver(session)
    if driver is not None:
        if JSON_ARROWS:
            await driver.execute(_SQLITE_JSON_ADD, (orjson.dumps(rows).decode(),))
        else:
            await driver.executemany(_SQLITE_ADD, rows)
        return
    from sqlalchemy.dialects import postgresql  # only here: SQLite commands need not load it

    stmt = postgresql.insert(_k)
    stmt = stmt.on_conflict_do_update(index_elements=["fan_id", "kind"], set_={
        "awarded": _k.c.awarded + stmt.excluded.awarded, "points": _k.c.points + stmt.excluded.points,
        "score_base": _k.c.score_base + stmt.excluded.score_base})
    for start in range(0, len(rows), CHUNK):
        await session.execute(stmt, [{"fan_id": f, "kind": k, "awarded": n, "points": p, "score_base": b}
                                     for f, k, n, p, b in rows[start : start + CHUNK]])


def _term_sql(dialect: str) -> Any:
    """``points · 2^((occurred_at − epoch) / half-life)`` in SQL (days: ``julianday`` on SQLite)."""
    epoch = bindparam("epoch", type_=_i.c.occurred_at.type)
    if dialect == "sqlite":
        days: Any = func.julianday(_i.c.occurred_at) - func.julianday(epoch)
    else:
        days = cast(func.extract("epoch", _i.c.occurred_at - epoch), Float) / 86400.0
    return _i.c.points * func.exp(LN2 * days / bindparam("half_life", type_=Float))


async def recount(session: AsyncSession, epoch: datetime, half_life_days: float, *, lo: int,
                  hi: int | None) -> None:
    """Rebuild the rows of the fans ``(lo, hi]`` (``hi=None``: every fan after ``lo``) from their
    interactions as stored now (a rescore's range, in the transaction that writes its scores)."""
    kept, read = [_k.c.fan_id > lo], [_i.c.fan_id > lo]
    if hi is not None:
        kept.append(_k.c.fan_id <= hi)
        read.append(_i.c.fan_id <= hi)
    await session.execute(delete(_k).where(*kept).execution_options(synchronize_session=False))
    summed = (select(_i.c.fan_id, _i.c.kind, func.count(), func.sum(_i.c.points),
                     func.sum(_term_sql(session.get_bind().dialect.name)))
              .where(_i.c.points > 0, *read).group_by(_i.c.fan_id, _i.c.kind))
    await session.execute(_k.insert().from_select(["fan_id", "kind", "awarded", "points", "score_base"], summed),
                          {"epoch": epoch, "half_life": half_life_days})


async def scale(session: AsyncSession, factor: float) -> None:
    """Multiply every score term by ``factor`` (the epoch moved: crm.scoring.rebase_if_needed)."""
    await session.execute(update(_k).values(score_base=_k.c.score_base * factor)
                          .execution_options(synchronize_session=False))


async def kind_scores(session: AsyncSession, fan_ids: Sequence[int]) -> dict[int, list[tuple[str, int, float, float]]]:
    """Per fan, ``(kind, awarded rows, points, score_base)`` by kind name."""
    out: dict[int, list[tuple[str, int, float, float]]] = {}
    for start in range(0, len(fan_ids), CHUNK):
        for fan_id, kind, n, points, base in await fetch_rows(session, _OF_FANS,
                                                              {"ids": list(fan_ids[start : start + CHUNK])}):
            out.setdefault(int(fan_id), []).append((str(kind), int(n), float(points), float(base)))
    return out
