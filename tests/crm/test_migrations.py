"""The Alembic migrations and the models describe the same schema (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crm.db import current_revision, head_revision
from crm.models import Base


async def test_database_is_at_head(engine):
    assert await current_revision(engine) == head_revision()


async def test_models_and_migrations_agree(engine):
    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True, "render_as_batch": True})
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
        await conn.rollback()
    assert changes == []
