"""The Alembic migrations and the models describe the same schema (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from crm.db import alembic_config, current_revision, head_revision, make_engine, migrate
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


async def test_0002_moves_line_command_markers_into_processed_events(tmp_path):
    """An event handled before the upgrade is still recognised as handled after it (and back)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}"
    await migrate(url, "0001")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO job_runs (job, run_key, started_at, finished_at) VALUES "
                "('line:command', '01JD5ZQX4W8K3N6M2P7R9T1V0B', '2026-11-22 04:00:00.000000', NULL), "
                "('digest', '2026-11-22', '2026-11-22 01:00:00.000000', NULL)"))
        await migrate(url)
        async with engine.connect() as conn:
            moved = (await conn.execute(text("SELECT platform, event_id FROM processed_events"))).all()
            jobs = (await conn.execute(text("SELECT job FROM job_runs"))).scalars().all()
        assert moved == [("line", "01JD5ZQX4W8K3N6M2P7R9T1V0B")]
        assert jobs == ["digest"]  # other jobs' markers stay where they are

        await asyncio.to_thread(command.downgrade, alembic_config(url), "0001")
        async with engine.connect() as conn:
            jobs = (await conn.execute(text("SELECT job, run_key FROM job_runs ORDER BY job"))).all()
        assert jobs == [("digest", "2026-11-22"), ("line:command", "01JD5ZQX4W8K3N6M2P7R9T1V0B")]
    finally:
        await engine.dispose()
