"""The one-trip aiosqlite cursor behaves as SQLAlchemy's own, in one trip a statement."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from crm.db import make_engine
from crm.sqlite_driver import OneTripCursor


@pytest.fixture
async def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", busy_timeout=0.2)
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    yield eng
    await eng.dispose()


async def test_rows_rowcount_returning_and_many(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}, {"n": "c"}])
        made = (await conn.execute(text("INSERT INTO t (name) VALUES ('d') RETURNING id, name"))).all()
        assert made == [(4, "d")]
        changed = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id <= 2"))
        assert changed.rowcount == 2
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all() == ["a!", "b!", "c", "d"]
        streamed = [row.name async for row in await conn.stream(text("SELECT name FROM t ORDER BY id"))]
        assert streamed == ["a!", "b!", "c", "d"]


async def test_errors_arrive_as_sqlalchemy_errors(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
    async with aiosqlite.connect(tmp_path / "d.db") as other:  # holds the write lock
        await other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (name) VALUES ('b')"))
        await other.rollback()
    async with engine.connect() as conn:  # the failed transactions left nothing behind
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_one_trip_to_the_driver_thread_a_statement(engine, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    trips = 0
    original = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal trips
        trips += 1
        return await original(self, fn, *args, **kwargs)

    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, aiosqlite.Connection)
        assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]
        await conn.execute(text("SELECT 1"))  # the transaction has begun
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        for _ in range(5):
            await conn.execute(text("SELECT name FROM t"))
        assert trips == 5  # SQLAlchemy's own adapter: three or four a statement
