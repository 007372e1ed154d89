"""Engine, sessions and schema management for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.dml import Insert

from crm.sqlite_driver import one_trip_dbapi

#: How long a statement waits for SQLite's write lock before failing with "database is locked".
#: The group writer then answers its requests 503 (nothing stored) and senders redeliver; a
#: command such as ``superfan import`` waits this long for the writer's lock between groups.
SQLITE_BUSY_TIMEOUT_S = 10.0
READ_ONLY = "superfan_read_only"
#: SQLite's page cache per connection, in KiB (see ``_tune_sqlite``).
SQLITE_CACHE_KIB = 16 * 1024
#: How SQLAlchemy's SQLite dialect stores DATETIME values (UTC, naive).
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def make_engine(url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT_S, **kwargs: Any) -> AsyncEngine:
    """Build the engine. SQLite gets WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes the write lock when a transaction starts instead of upgrading a read
    lock mid-transaction, which SQLite refuses with "database is locked" regardless of the busy
    timeout when two writers race. SQL parameters are never put in error messages
    (``hide_parameters``): they hold what fans wrote, and errors reach logs.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": busy_timeout})
        if url.startswith("sqlite+aiosqlite"):
            kwargs.setdefault("module", one_trip_dbapi())  # one trip to SQLite's thread a statement
        engine = create_async_engine(url, **kwargs)
        _tune_sqlite(engine, busy_timeout)
        # Many-row INSERTs go as multi-row VALUES statements, as those with RETURNING already do:
        # aiosqlite's executemany takes the GIL back after every row, and behind a busy event loop
        # each row then waits for it (a group's 160 conversation waits took 7 ms instead of 1).
        engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _tune_sqlite(engine: AsyncEngine, busy_timeout: float) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        # 16 MiB a connection: superfan run holds several (the writer, readers), and at 100k fans and
        # 10M interactions 64 MiB each put it at 221 MB instead of 166 (issue #19's ≤ 200 MB); import
        # speed did not change (bench_import 0.194 vs 0.203). Rescore and the index rebuild after a
        # first import raise it on their own connection for their run.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Through SQLAlchemy (its documented recipe), so "database is locked" arrives wrapped as
        # sqlalchemy.exc.OperationalError like every other database error.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


async def take_over_checkpoints(conn: AsyncConnection, on: bool = True) -> bool:
    """Stop (``on``) or restore SQLite's automatic WAL checkpoints on ``conn``; False elsewhere.

    Every ~1000 pages of WAL the committing connection copies them back into the database file
    and fsyncs it: under webhook load about one commit in 25 took 5–10 ms instead of 0.3 ms. A
    writer that takes this over runs :func:`checkpoint` beside itself instead.
    """
    if conn.dialect.name != "sqlite":
        return False
    await (await _driver_of(conn)).execute(f"PRAGMA wal_autocheckpoint={0 if on else 1000}")
    return True


async def checkpoint(engine: AsyncEngine) -> None:
    """Copy the WAL back into the database file without blocking readers or the writer (PASSIVE)."""
    async with engine.connect() as conn:
        await (await _driver_of(conn)).execute("PRAGMA wal_checkpoint(PASSIVE)")


async def _driver_of(conn: AsyncConnection) -> Any:
    """The aiosqlite connection under ``conn``, outside any transaction (no ``BEGIN`` is sent)."""
    raw = await conn.get_raw_connection()
    assert raw.driver_connection is not None
    return raw.driver_connection


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (adapters render after committing)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reading only (lists, fan cards, exports).

    On SQLite they begin a plain deferred transaction, which in WAL mode reads a snapshot without
    taking the write lock, so a long export never holds up webhooks. Writing in one is a bug: it
    would fail with "database is locked" under load instead of queueing like a writer.
    """
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def insert_ignore(session: AsyncSession, table: Any, *conflict_cols: str) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the session's dialect (SQLite and PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    # Each dialect's module is imported when first used: PostgreSQL's costs a SQLite command ~15 ms.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols) or None)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols) or None)
    raise ValueError(f"unsupported database dialect {dialect!r} (superfan supports SQLite and PostgreSQL)")


def _sqlite_datetime(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat(sep=" ", timespec="microseconds")[:26]  # drop "+00:00"


#: Below this many seconds from 1970 (about the year 2242) a float POSIX time still tells whole
#: seconds apart exactly, whatever the microseconds.
_EXACT_SECONDS = 2.0**33
_CLOCK = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND = [f"{s:02d}." for s in range(60)]


@functools.lru_cache(maxsize=1 << 14)
def _day_text(days: int) -> str:
    day = date(1970, 1, 1) + timedelta(days=days)
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d} "


def sqlite_datetimes(stamps: Sequence[float], times: Sequence[datetime]) -> list[str]:
    """SQLite's text of many UTC ``times``, given also as POSIX ``stamps``; a bulk import formats
    10^5 of them.

    ``datetime.isoformat`` costs about 2.5 µs a call (it asks the tzinfo for its offset and
    formats it only to be cut off); whole seconds from the stamp, a cached day and tables of
    minutes and seconds take under 1 µs.
    """
    if not stamps or not (-_EXACT_SECONDS < min(stamps) and max(stamps) < _EXACT_SECONDS):
        return list(map(_sqlite_datetime, times))
    clock, seconds, out = _CLOCK, _SECOND, []
    for ts, at in zip(stamps, times, strict=True):
        days, second = divmod(math.floor(ts), 86400)
        minute, second = divmod(second, 60)
        micro = at.microsecond
        out.append(f"{_day_text(days)}{clock[minute]}{seconds[second]}{micro:06d}" if micro
                   else f"{_day_text(days)}{clock[minute]}{seconds[second]}000000")
    return out


def _same(value: datetime) -> Any:
    return value


def datetime_encoder(session: AsyncSession) -> Callable[[datetime], Any]:
    """How :func:`insert_rows` wants datetimes: SQLAlchemy's SQLite text form, or as they are."""
    return _sqlite_datetime if session.get_bind().dialect.name == "sqlite" else _same


async def insert_rows(session: AsyncSession, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]],
                      chunk: int = 2000, *, ignore_conflicts_on: Sequence[str] = ()) -> set[tuple[Any, ...]] | None:
    """Insert many rows (tuples in ``columns`` order, datetimes from :func:`datetime_encoder`).

    On SQLite the tuples go straight to the driver's ``executemany``, skipping per-parameter
    processing that otherwise costs more than SQLite's own insert; on PostgreSQL a Core
    ``executemany`` is already batched by asyncpg. ``ignore_conflicts_on`` names a unique key whose
    duplicates are skipped (``ON CONFLICT DO NOTHING``); on PostgreSQL, where a concurrent writer
    can win that race, the keys actually inserted are returned (``None``: all of them).
    """
    if not rows:
        return None
    if session.get_bind().dialect.name != "sqlite":
        if not ignore_conflicts_on:
            for start in range(0, len(rows), chunk):
                await session.execute(table.insert(), [dict(zip(columns, r, strict=True))
                                                       for r in rows[start : start + chunk]])
            return None
        stmt = insert_ignore(session, table, *ignore_conflicts_on).returning(
            *(table.c[c] for c in ignore_conflicts_on))
        inserted: set[tuple[Any, ...]] = set()
        for start in range(0, len(rows), chunk):
            result = await session.execute(stmt, [dict(zip(columns, r, strict=True))
                                                  for r in rows[start : start + chunk]])
            inserted.update(tuple(r) for r in result)
        return inserted
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    if ignore_conflicts_on:
        sql += f" ON CONFLICT ({', '.join(ignore_conflicts_on)}) DO NOTHING"
    driver = await sqlite_driver(session)
    assert driver is not None
    for start in range(0, len(rows), chunk):
        await driver.executemany(sql, rows[start : start + chunk])
    return None


async def update_rows(session: AsyncSession, table: Table, key: str, columns: Sequence[str],
                      rows: list[tuple[Any, ...]]) -> None:
    """``UPDATE table SET columns… WHERE key = …`` for many rows: tuples of the new values in
    ``columns`` order, then the key (datetimes from :func:`datetime_encoder`). Straight to the
    driver on SQLite, as :func:`insert_rows`."""
    if not rows:
        return
    driver = await sqlite_driver(session)
    if driver is None:
        names = [*columns, key]
        stmt = (table.update().where(table.c[key] == bindparam(f"k_{key}"))
                .values({c: bindparam(f"k_{c}") for c in columns}))
        await session.execute(stmt, [{f"k_{n}": v for n, v in zip(names, row, strict=True)} for row in rows])
        return
    await driver.executemany(f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?",
                             rows)


async def next_ids(session: AsyncSession, table: Table, count: int) -> list[int] | None:
    """On SQLite (single writer, ``BEGIN IMMEDIATE``), the ids the next ``count`` rows will get.

    Lets bulk inserts skip ``RETURNING``, which SQLite can only honour row by row when the order
    of returned ids matters. ``None`` on other databases: use ``RETURNING`` there.
    """
    if session.get_bind().dialect.name != "sqlite":
        return None
    top = (await session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table.name}"))).scalar_one()
    return list(range(int(top) + 1, int(top) + 1 + count))


async def sqlite_driver(session: AsyncSession) -> Any | None:
    """The aiosqlite connection under the session's transaction, or ``None`` on other databases.

    Each SQLAlchemy statement on aiosqlite costs four hops to its worker thread (cursor, execute,
    fetch, close); the hot path's few statements go to the driver directly in one hop each.
    """
    transaction = session.sync_session.get_transaction()
    cached = session.info.get("sqlite_driver")
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1]
    if session.get_bind().dialect.name != "sqlite":
        return None
    raw = await (await session.connection()).get_raw_connection()
    session.info["sqlite_driver"] = (session.sync_session.get_transaction(), raw.driver_connection)
    return raw.driver_connection


def parse_sqlite_datetime(text: str) -> datetime:
    """The inverse of the SQLite storage form: naive UTC text → aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@functools.lru_cache(maxsize=65_536)
def _sqlite_timestamp(text: str) -> float:
    return parse_sqlite_datetime(text).timestamp()


def posix_time(value: str | datetime) -> float:
    """A time as :func:`fetch_rows` returns it unparsed (SQLite's text, or the driver's aware
    datetime) as a POSIX timestamp. SQLite's text is parsed once per distinct value: writers
    read the same fans' awarded rows back batch after batch."""
    return _sqlite_timestamp(value) if isinstance(value, str) else value.timestamp()


_SQLITE_SQL: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _sqlite_sql(stmt: Any, dialect: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """SQL text, positional parameter names and the statement's own literal values (cached)."""
    cached = _SQLITE_SQL.get(stmt)
    if cached is None:
        compiled = stmt.compile(dialect=dialect)
        cached = _SQLITE_SQL[stmt] = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
    return cached


async def fetch_rows(session: AsyncSession, stmt: Any, params: dict[str, Any] | None = None, *,
                     datetime_columns: Sequence[int] = ()) -> list[tuple[Any, ...]]:
    """All rows of a Core ``select`` with named bind parameters, in one driver hop on SQLite.

    Meant for statements built once at import time (their SQL is compiled once per process);
    ``bindparam(name, expanding=True)`` takes a list. No result processing happens, so the
    statement should select plain columns; the positions in ``datetime_columns`` come back as
    aware UTC datetimes on every database.
    """
    params = params or {}
    driver = await sqlite_driver(session)
    if driver is None:
        return [tuple(r) for r in await session.execute(stmt, params)]
    sql, names, literals = _sqlite_sql(stmt, session.get_bind().dialect)
    args: list[Any] = []
    for name in names:
        value = params[name] if name in params else literals[name]
        if isinstance(value, list | tuple | set | frozenset):
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)))
            args.extend(value)
        else:
            args.append(_sqlite_datetime(value) if isinstance(value, datetime) else value)
    rows = await driver.execute_fetchall(sql, args)
    if not datetime_columns:
        return [tuple(r) for r in rows]
    out = []
    for r in rows:
        row = list(r)
        for i in datetime_columns:
            if row[i] is not None:
                row[i] = parse_sqlite_datetime(row[i])
        out.append(tuple(row))
    return out
