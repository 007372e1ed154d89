"""SQLAlchemy's aiosqlite driver, with each statement run in one trip to aiosqlite's thread.

aiosqlite runs SQLite in a thread of its own; every call is a trip there and back through the
event loop. SQLAlchemy's adapter makes three or four trips a statement (open a cursor, execute,
fetch the rows, close the cursor). Under webhook load the event loop is busy with requests, so
each trip waits its turn behind them: measured on ``bench_line_webhook``, the trips cost more
than SQLite itself, and one trip a statement raised every phase by a quarter to a half (figures
in issue #15's note). :class:`OneTripCursor` opens, executes, fetches and closes in one trip;
everything else (errors, transactions, server-side cursors for streamed reads) is SQLAlchemy's.

:func:`one_trip_dbapi` is the only way in: :func:`crm.db.make_engine` passes it as the engine's
DBAPI module. It leans on two of aiosqlite's internals (``Connection._execute`` and ``_conn``),
as SQLAlchemy's own adapter does; ``tests/crm/test_sqlite_driver.py`` fails if they change.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In aiosqlite's thread: the whole statement, rows included."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        return description, cursor.fetchall() if description else None, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose ``execute`` is one trip to the driver's thread."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: Any) -> None:  # no driver cursor is opened here
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount, self._arraysize = -1, 1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return  # nothing is open on the driver's side

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        self._go(operation, parameters, False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        self._go(operation, seq_of_parameters, True)

    def _go(self, operation: Any, parameters: Any, many: bool) -> None:
        driver = self._connection
        try:
            outcome: _Outcome = await_(driver._execute(_run, driver._conn, operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows) if rows else collections.deque()


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class _OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        adapted.__class__ = _OneTripConnection  # same slots: only the cursor class differs
        return adapted


def one_trip_dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI module to give ``create_async_engine(..., module=…)`` for ``sqlite+aiosqlite``."""
    return _OneTripDbapi(aiosqlite, sqlite3)
