"""Shared fixtures: one migrated database per test session, emptied before each test.

``SUPERFAN_TEST_DATABASE_URL`` (a PostgreSQL server URL, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:15432/postgres``) runs the same tests on PostgreSQL:
a fresh database is created on that server for the session. Otherwise a temporary SQLite file is
used (not ``:memory:``, whose single connection hides concurrency bugs).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from crm.db import make_engine, make_sessionmaker
from crm.models import Base
from crm.schema import migrate
from crm.settings import CrmSettings

PG_URL = os.environ.get("SUPERFAN_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
async def db_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if PG_URL:
        name = f"superfan_test_{uuid.uuid4().hex[:10]}"
        admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_URL.rsplit("/", 1)[0] + "/" + name
        await migrate(url)
        yield url
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
    else:
        path = Path(tmp_path_factory.mktemp("db")) / "superfan-test.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        yield url


@pytest.fixture(scope="session")
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory on an emptied database (schema kept, every row gone)."""
    maker = make_sessionmaker(engine)
    async with maker.begin() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(delete(table))
    return maker


@pytest.fixture
def settings() -> CrmSettings:
    return CrmSettings()


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
