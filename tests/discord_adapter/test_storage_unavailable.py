"""While the database cannot take writes, Discord intake is kept and stored later, in order, and a
command tells the user to try again in a moment instead of failing with a generic apology."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence

import pytest

from bot.app import Crm
from bot.discord_adapter.backlog import IntakeBacklog
from bot.discord_adapter.client import DiscordHandle, start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.i18n import t
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.write_failures import StorageUnavailable
from bot.writer import GroupWriter, Op, Outcome
from crm.db import make_engine, make_sessionmaker
from tests.discord_adapter.conftest import FAN, GENERAL, GUILD, STEP, eventually, interactions, slash


class GatedWriter(GroupWriter):
    """The real group writer, but storage is unavailable (as when another process holds SQLite's
    write lock) until ``down`` is cleared."""

    down = True

    async def submit(self, ops: Sequence[Op]) -> list[Outcome]:
        if self.down:
            raise StorageUnavailable("database is locked")
        return await super().submit(ops)


@pytest.fixture
async def writer(crm: Crm) -> AsyncIterator[GatedWriter]:
    gated = GatedWriter(crm.sessions, crm.settings)
    await gated.start()
    yield gated
    await gated.close()


@pytest.fixture
async def handle(emu: DiscordEmulator, crm: Crm, writer: GatedWriter) -> AsyncIterator[DiscordHandle]:
    started = await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05,
                                                   writer=writer), STEP * 2)
    bot = started.client
    bot.backlog = IntakeBacklog(bot.store, first_delay=0.01, max_delay=0.05)  # quick retries for the test
    try:
        yield started
    finally:
        await started.close()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def test_messages_sent_while_storage_is_down_are_stored_later_in_order(
    emu: DiscordEmulator, crm: Crm, writer: GatedWriter, handle: DiscordHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for n, text in enumerate(["第一則", "第二則", "第三則"]):
        await emu.message_create(GENERAL, FAN, text, message_id=900 + n, guild_id=GUILD)
    await eventually(lambda: _waiting(handle, 3))
    assert await interactions(crm, FAN) == []
    writer.down = False
    rows = await eventually(lambda: _stored(crm, 3))
    assert [r.source_event_id for r in rows] == ["900", "901", "902"]
    assert [r.summary for r in rows] == ["第一則", "第二則", "第三則"]
    assert "第一則" not in caplog.text


async def test_shutdown_stores_what_waits_once_storage_is_back(
    emu: DiscordEmulator, crm: Crm, writer: GatedWriter, handle: DiscordHandle
) -> None:
    handle.client.backlog = IntakeBacklog(handle.client.store, first_delay=3600)  # no retry before shutdown
    await emu.message_create(GENERAL, FAN, "晚安", message_id=990, guild_id=GUILD)
    await eventually(lambda: _waiting(handle, 1))
    writer.down = False
    await handle.close()
    assert [r.source_event_id for r in await interactions(crm, FAN)] == ["990"]


@pytest.mark.parametrize("locale", ["en-US", "zh-TW"])
async def test_a_command_that_could_not_be_stored_asks_to_try_again(
    emu: DiscordEmulator, crm: Crm, writer: GatedWriter, handle: DiscordHandle, locale: str
) -> None:
    reply = await slash(emu, "checkin", FAN, locale=locale)
    expected = t("discord.errors.storage_busy", "en" if locale == "en-US" else "zh-TW")
    assert reply["content"] == expected
    assert await interactions(crm, FAN, "checkin") == []
    writer.down = False
    again = await slash(emu, "checkin", FAN, locale=locale)
    assert again["content"] != expected
    assert len(await interactions(crm, FAN, "checkin")) == 1


async def _waiting(handle: DiscordHandle, count: int) -> bool:
    return len(handle.client.backlog) == count


async def _stored(crm: Crm, count: int) -> list[object] | None:
    rows = await interactions(crm, FAN)
    return rows if len(rows) == count else None


@pytest.mark.parametrize("with_writer", [True, False], ids=["group writer", "own transaction"])
async def test_events_sent_while_another_process_holds_the_write_lock_are_stored_after_it(
    emu: DiscordEmulator, crm: Crm, with_writer: bool
) -> None:
    """The real trigger: ``superfan import`` (another process) holds SQLite's write lock longer
    than the busy timeout while the bot serves; nothing the fans did in that time is lost."""
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    engine = make_engine(str(crm.engine.url), busy_timeout=0.2)
    busy = Crm(crm.config, engine, make_sessionmaker(engine), crm.settings)
    writer = GroupWriter(busy.sessions, busy.settings) if with_writer else None
    if writer is not None:
        await writer.start()
    started = await asyncio.wait_for(start_discord(busy, token="test-token", guild_ready_timeout=0.05,
                                                   writer=writer), STEP * 2)
    started.client.backlog = IntakeBacklog(started.client.store, first_delay=0.05, max_delay=0.2)
    holder = sqlite3.connect(crm.engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        for n in range(3):
            await emu.message_create(GENERAL, FAN, f"locked {n}", message_id=700 + n, guild_id=GUILD)
        await eventually(lambda: _waiting(started, 3))
        holder.execute("ROLLBACK")
        rows = await eventually(lambda: _stored(crm, 3))
        assert [r.source_event_id for r in rows] == ["700", "701", "702"]
    finally:
        holder.close()
        await started.close()
        if writer is not None:
            await writer.close()
        await engine.dispose()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
