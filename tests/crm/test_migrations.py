"""The Alembic migrations and the models describe the same schema (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from crm.db import make_engine
from crm.models import Base
from crm.schema import alembic_config, current_revision, head_revision, migrate


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


async def test_0005_and_0006_keep_interactions_and_their_event_ids_unique_both_ways(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}"
    await migrate(url, "0004")
    engine = make_engine(url)
    row = ("INSERT INTO interactions (fan_id, platform, kind, occurred_at, recorded_at, points, source_event_id) "
           "VALUES (1, 'line', 'message', '2026-11-22 04:00:00.000000', '2026-11-22 04:00:01.000000', 0.1, 'ev-1')")

    async def refuses_a_repeat() -> bool:
        try:
            async with engine.begin() as conn:
                await conn.execute(text(row))
        except IntegrityError:
            return True
        return False

    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO fans (id, display_name, name_key, opted_out, score_base, tier, "
                                    "first_seen_at, last_seen_at) VALUES (1, '小慧', '小慧', 0, 0.1, 'casual', "
                                    "'2026-11-22 04:00:00.000000', '2026-11-22 04:00:00.000000')"))
            await conn.execute(text(row))
        await migrate(url)
        assert await refuses_a_repeat()
        async with engine.connect() as conn:
            columns = (await conn.execute(text(
                "SELECT name FROM pragma_index_info('uq_interactions_platform_source_event_id') ORDER BY seqno"
            ))).scalars().all()
        assert columns == ["source_event_id", "platform"]
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0005")
        assert await refuses_a_repeat()
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
        assert await refuses_a_repeat()
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT source_event_id FROM interactions"))).scalars().all() == ["ev-1"]
    finally:
        await engine.dispose()
