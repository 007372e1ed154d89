"""Engine, sessions and schema management for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Table, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.dml import Insert

from crm.errors import SchemaOutOfDate

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How SQLAlchemy's SQLite dialect stores DATETIME values (UTC, naive).
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Build the engine. SQLite gets WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes the write lock when a transaction starts instead of upgrading a read
    lock mid-transaction, which SQLite refuses with "database is locked" regardless of the busy
    timeout when two writers race.
    """
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_async_engine(url, **kwargs)
        _tune_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _tune_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (adapters render after committing)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_ignore(session: AsyncSession, table: Any, *conflict_cols: str) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the session's dialect (SQLite and PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols) or None)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols) or None)
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


def migrations_dir() -> Path:
    import migrations

    return Path(migrations.__file__).parent


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = url
    return cfg


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (Alembic runs in a worker thread)."""
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except Exception:
            return None
        finally:
            await conn.rollback()
    return None if row is None else str(row[0])


async def ensure_schema(engine: AsyncEngine, url: str, *, auto_migrate: bool = True) -> None:
    """Make sure the schema is at head: migrate a fresh or outdated database, or say what to run."""
    current = await current_revision(engine)
    if current == head_revision():
        return
    if not auto_migrate:
        raise SchemaOutOfDate("the database schema is not up to date: run `superfan migrate`")
    await migrate(url)


def _sqlite_datetime(value: datetime) -> str:
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def bulk_insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]], chunk: int = 2000) -> None:
    """Insert many rows with one prepared statement per chunk.

    On SQLite the rows go straight to the driver's ``executemany`` (datetimes pre-rendered the
    way SQLAlchemy stores them), skipping per-parameter processing that otherwise costs more
    than SQLite's own insert; on PostgreSQL a Core ``executemany`` is already batched by asyncpg.
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "sqlite":
        for start in range(0, len(rows), chunk):
            await session.execute(table.insert(), rows[start : start + chunk])
        return
    columns = list(rows[0])
    times = {c for c in columns if isinstance(table.c[c].type, DateTime | TypeDecorator)}
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    rendered: dict[datetime, str] = {}

    def value(column: str, v: Any) -> Any:
        if column in times and v is not None:
            text_value = rendered.get(v)
            if text_value is None:
                text_value = rendered[v] = _sqlite_datetime(v)
            return text_value
        return v

    conn = await session.connection()
    for start in range(0, len(rows), chunk):
        params = [tuple(value(c, r[c]) for c in columns) for r in rows[start : start + chunk]]
        await conn.exec_driver_sql(sql, params)


async def next_ids(session: AsyncSession, table: Table, count: int) -> list[int] | None:
    """On SQLite (single writer, ``BEGIN IMMEDIATE``), the ids the next ``count`` rows will get.

    Lets bulk inserts skip ``RETURNING``, which SQLite can only honour row by row when the order
    of returned ids matters. ``None`` on other databases: use ``RETURNING`` there.
    """
    if session.get_bind().dialect.name != "sqlite":
        return None
    top = (await session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table.name}"))).scalar_one()
    return list(range(int(top) + 1, int(top) + 1 + count))
