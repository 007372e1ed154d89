"""Where :func:`crm.ingest.record_many` puts interaction rows, a slice at a time (and, ahead of
them, the rows of the fans they belong to when those are new).

On SQLite a slice goes to the driver's thread as a few multi-row ``VALUES`` statements that each
insert up to thousands of rows in one step (a webhook group's rows in one). SQLite then inserts
without the GIL while the caller builds the next slice or serves other requests. ``executemany``
takes the GIL back after every row, so behind a busy event loop it would insert a row per GIL
switch interval. Rows arrive fan by fan, so the secondary indexes
(which lead with ``fan_id``) grow at one place per fan and are kept up as rows go in. On
PostgreSQL, asyncpg batches ``executemany`` itself and a concurrent writer can win a race, so the
sink reports which rows it inserted.

A first import into an empty SQLite table (:meth:`InteractionSink.open` with ``empty_table``)
drops the ``(platform, source_event_id)`` unique index and the time index and builds them again
once the rows are in: rows go in fan by fan, so event ids and times arrive in no order, and keeping
those indexes up row by row cost about a fifth (the unique one) and a third (the time one) of the
import's database work. Nothing can conflict meanwhile: the table was empty
when the transaction (which holds SQLite's write lock) looked, and the batch is screened for
repeats in Python.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex

from crm.db import insert_rows, sqlite_driver
from crm.models import Interaction, table

#: A row as the sink takes it; ``recorded_at`` is the same for a whole batch and added here.
ROW_COLUMNS = ("fan_id", "platform", "kind", "occurred_at", "points", "amount_cents", "currency", "summary",
               "source_event_id")
UNIQUE_KEY = ("platform", "source_event_id")
#: A slice of rows as parallel lists, one per ``ROW_COLUMNS`` entry (a list of 10^5 tuples costs more to build).
Columns = tuple[list[Any], ...]

_interactions = table(Interaction)
_ALL_COLUMNS = (*ROW_COLUMNS[:4], "recorded_at", *ROW_COLUMNS[4:])
#: Built again after a first import rather than kept up row by row: rows go in fan by fan, so
#: neither event ids nor times arrive in order.
_BUILT_AFTER = sorted((ix for ix in _interactions.indexes
                       if ix.unique or [c.name for c in ix.columns] == ["occurred_at"]), key=lambda ix: str(ix.name))
_IGNORE_REPEATS = f" ON CONFLICT ({', '.join(UNIQUE_KEY)}) DO NOTHING"


#: Multi-row VALUES needs SQLite 3.32, which allows 32,766 parameters (older libraries allow
#: 999; they take ``executemany``). A webhook group's 10^1–10^2 rows were once sent as one JSON
#: parameter to spare a compile per row count, but SQLite took a quarter longer to insert them
#: from JSON (1.9 against 1.4 ms per 80 rows), and the writer waits for that insert: the
#: sqlite3 module's statement cache keeps the few row counts a burst uses compiled.
VALUES_INSERT = sqlite3.sqlite_version_info >= (3, 32)
#: Parameters per multi-row VALUES statement, and interaction rows in one (30,000 parameters).
VALUES_PARAMS = 30_000
VALUES_ROWS = 3000
#: Mostly-NULL columns (by ``ROW_COLUMNS`` position) and what stands for NULL in a VALUES
#: statement. The sqlite3 module binds None ten times slower than an int (it looks for an
#: adapter first), and it binds holding the GIL: with two or three in most rows, binding held the
#: event loop's thread up about as long as SQLite took to insert. A cent amount is never
#: negative; the text columns never hold an integer. (Parameters stay anonymous: SQLite takes
#: quadratic time to prepare 10^4 numbered ones.)
_NULL_STAND_INS = {ROW_COLUMNS.index("amount_cents"): -1, ROW_COLUMNS.index("currency"): 0,
                   ROW_COLUMNS.index("summary"): 0}
_VALUES_ROW = "(" + ", ".join(
    "?" if _NULL_STAND_INS.get(c) is None else f"nullif(?, {_NULL_STAND_INS[c]})" for c in range(len(ROW_COLUMNS))
) + ", ?)"


@functools.lru_cache(maxsize=64)
def _plain_values_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


@functools.lru_cache(maxsize=256)
def _values_sql(rows: int, on_repeat: str) -> str:
    return (f"INSERT INTO interactions ({', '.join(ROW_COLUMNS)}, recorded_at) VALUES {', '.join([_VALUES_ROW] * rows)}"
            + on_repeat)


class InteractionSink:
    """Inserts slices of interaction rows within the session's transaction; :meth:`close` waits for all."""

    def __init__(self, session: AsyncSession, driver: Any | None, recorded_at: Any, *, index_later: bool = False,
                 indexes_off: bool = False) -> None:
        self._session = session
        self._driver = driver
        self._recorded_at = recorded_at
        self._queued: list[asyncio.Future[Any]] = []
        self._index_later = index_later
        self._on_repeat = "" if index_later or indexes_off else _IGNORE_REPEATS

    @classmethod
    async def open(cls, session: AsyncSession, recorded_at: Any, *, empty_table: bool = False,
                   indexes_off: bool = False) -> InteractionSink:
        """A sink for one batch; ``empty_table``: the caller found no interactions stored in this
        transaction and screens the batch for repeated event ids itself. ``indexes_off``: the
        caller took the indexes off for several batches (:func:`drop_late_indexes`) and screens
        for repeats itself."""
        driver = await sqlite_driver(session)
        if indexes_off:
            return cls(session, driver, recorded_at, indexes_off=driver is not None)
        # Not with the executemany fallback of older SQLite libraries: it always names the conflict.
        index_later = driver is not None and empty_table and VALUES_INSERT
        if index_later:
            assert driver is not None
            for index in _BUILT_AFTER:
                await driver.execute(f"DROP INDEX {index.name}")
        return cls(session, driver, recorded_at, index_later=index_later)

    @property
    def sqlite(self) -> bool:
        """Whether rows carry SQLite's DATETIME text (else the driver's own values)."""
        return self._driver is not None

    async def put(self, columns: Columns, *, more: bool = False) -> set[tuple[Any, ...]] | None:
        """Insert rows given as columns (``ROW_COLUMNS`` order); a repeated unique key is skipped.

        Returns the ``(platform, source_event_id)`` keys actually inserted where a concurrent
        writer may have won (PostgreSQL), else ``None``. On SQLite the insert may still be running
        (until :meth:`close`); ``more`` says another slice follows, so this one is sent on its way
        now rather than at the caller's next ``await``.
        """
        count = len(columns[0])
        if not count:
            return None
        if self._driver is not None and VALUES_INSERT:
            for start in range(0, count, VALUES_ROWS):
                params = _interleave([c[start : start + VALUES_ROWS] for c in columns], self._recorded_at)
                sql = _values_sql(len(params) // (len(ROW_COLUMNS) + 1), self._on_repeat)
                self._queued.append(asyncio.ensure_future(self._driver.execute(sql, params)))
            if more:
                await asyncio.sleep(0)
            return None
        at = [self._recorded_at] * count
        full = list(zip(*columns[:4], at, *columns[4:], strict=True))
        return await insert_rows(self._session, _interactions, _ALL_COLUMNS, full, ignore_conflicts_on=UNIQUE_KEY)

    async def queue_rows(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> bool:
        """Queue plain rows for another table of the batch (new fans and their identities) ahead of
        the interaction rows that refer to them; False where they cannot be queued (not SQLite, or
        an SQLite too old for long ``VALUES`` lists): the caller inserts them itself.

        They reach SQLite's thread before this returns and run while the caller goes on (working
        out the batch's rows); like every queued insert they are waited for by :meth:`close` or
        :meth:`abandon`.
        """
        if self._driver is None or not VALUES_INSERT:
            return False
        per = VALUES_PARAMS // len(columns)
        for start in range(0, len(rows), per):
            part = rows[start : start + per]
            sql = _plain_values_sql(table.name, tuple(columns), len(part))
            self._queued.append(asyncio.ensure_future(self._driver.execute(sql, list(chain.from_iterable(part)))))
        await asyncio.sleep(0)  # the queued tasks hand their statements to the thread
        return True

    async def abandon(self) -> None:
        """Wait for queued inserts without looking at them: the caller is failing and will roll back.

        Were one still queued, it would run after the rollback, outside any transaction.
        """
        await asyncio.gather(*self._queued, return_exceptions=True)
        self._queued.clear()

    async def close(self) -> None:
        """Wait for every queued insert, then raise the first failure.

        Everything queued is waited for, so no insert can run after the caller's rollback.
        """
        outcomes = await asyncio.gather(*self._queued, return_exceptions=True)
        self._queued.clear()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self._index_later:
            assert self._driver is not None
            self._index_later = False
            for index in _BUILT_AFTER:
                await self._driver.execute(str(CreateIndex(index).compile(dialect=sqlite.dialect())))


#: The page cache (negative: KiB) while :func:`build_late_indexes` sorts.
SORT_CACHE_KIB = -8192


async def drop_late_indexes(session: AsyncSession) -> bool:
    """Take off the indexes a first import builds afterwards, for a load of several batches (SQLite
    with multi-row ``VALUES`` only: False elsewhere, and nothing changes). The caller guarantees no
    repeated event id and calls :func:`build_late_indexes` before committing."""
    driver = await sqlite_driver(session)
    if driver is None or not VALUES_INSERT:
        return False
    for index in _BUILT_AFTER:
        await driver.execute(f"DROP INDEX {index.name}")
    return True


async def build_late_indexes(session: AsyncSession) -> None:
    """Build again what :func:`drop_late_indexes` took off.

    With a small page cache meanwhile: SQLite sorts an index's keys in memory up to the cache's
    size, and after millions of rows that came on top of everything the import held (80 MB more
    at 3M rows); beyond it the sort goes through a temporary file, about as fast."""
    driver = await sqlite_driver(session)
    assert driver is not None
    (cache,), = await driver.execute_fetchall("PRAGMA cache_size")
    await driver.execute(f"PRAGMA cache_size={SORT_CACHE_KIB}")
    try:
        for index in _BUILT_AFTER:
            await driver.execute(str(CreateIndex(index).compile(dialect=sqlite.dialect())))
    finally:
        await driver.execute(f"PRAGMA cache_size={int(cache)}")


def _interleave(columns: list[list[Any]], recorded_at: Any) -> list[Any]:
    """The parameters of a multi-row ``VALUES`` statement, row after row (built by slice
    assignment), with stand-ins for NULL."""
    width = len(columns) + 1
    params = [recorded_at] * (len(columns[0]) * width)
    for i, column in enumerate(columns):
        stand_in = _NULL_STAND_INS.get(i)
        if stand_in is not None:
            column = [stand_in if value is None else value for value in column]
        params[i::width] = column
    return params
