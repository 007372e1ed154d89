"""Under ``superfan run`` Discord intake shares the group-commit writer with LINE webhooks, and a
tier change from any source (here a shop purchase) moves the Discord role without waiting."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Crm
from bot.discord_adapter.client import start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.writer import Action, GroupWriter
from crm.clock import utcnow
from crm.fan_actions import ensure_fan
from crm.interaction import InteractionIn
from crm.models import TierChange
from crm.tiers_service import pin
from tests.discord_adapter.conftest import (
    FAN,
    FAN2,
    GENERAL,
    GUILD,
    STEP,
    SUPERFAN_ROLE,
    eventually,
    interactions,
)


async def test_intake_goes_through_the_writer_and_purchases_elsewhere_move_roles(emu: DiscordEmulator,
                                                                                   crm: Crm) -> None:
    writer = GroupWriter(crm.sessions, crm.settings)
    await writer.start()
    handle = await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05,
                                                  writer=writer), STEP * 2)
    try:
        await emu.message_create(GENERAL, FAN, "新周邊好可愛", guild_id=GUILD)
        rows = await eventually(lambda: interactions(crm, FAN))
        assert [r.kind for r in rows] == ["message"]
        assert writer.ops >= 1  # committed by the shared writer, not a transaction of its own
        now = handle.client.now()
        orders = [InteractionIn("discord", str(FAN), "purchase", now - timedelta(days=n), f"shop-{n}",
                                amount=Decimal(2000), currency="TWD") for n in range(5)]
        await writer.submit(orders)  # as the purchase webhook does

        async def has_role() -> bool:
            return SUPERFAN_ROLE in emu.member_roles(GUILD, FAN)

        assert await eventually(has_role, timeout=STEP)  # well before the 60 s periodic sync
    finally:
        await handle.close()
        await writer.close()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


@pytest.mark.parametrize("discord_overrides", [{"role_sync_seconds": 3600}])
async def test_a_tier_move_made_by_an_action_in_the_writer_wakes_the_role_sync(emu: DiscordEmulator,
                                                                                crm: Crm) -> None:
    """A LINE check-in, a referral purchase or the decay job moves tiers inside a writer Action;
    the role must follow at once, not after the periodic sync (an hour here)."""
    async with crm.sessions.begin() as session:  # a change the bot's first sync pass applies
        fan2 = await ensure_fan(session, crm.settings, platform="discord", external_id=str(FAN2),
                                display_name=None, now=utcnow())
        await pin(session, crm.settings, fan2, "fan", by="cli", now=utcnow())
    writer = GroupWriter(crm.sessions, crm.settings)
    await writer.start()
    handle = await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05,
                                                  writer=writer), STEP * 2)
    try:
        await eventually(lambda: _all_synced(crm))  # the first pass is over: only a wake-up runs another
        await asyncio.sleep(0.1)
        async def promote(session: AsyncSession, now: datetime) -> None:
            fan_id = await ensure_fan(session, crm.settings, platform="discord", external_id=str(FAN),
                                      display_name=None, now=now)
            await pin(session, crm.settings, fan_id, "superfan", by="decay job", now=now)

        await writer.submit([Action("promote", promote)])

        async def has_role() -> bool:
            return SUPERFAN_ROLE in emu.member_roles(GUILD, FAN)

        assert await eventually(has_role, timeout=STEP)
    finally:
        await handle.close()
        await writer.close()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def _all_synced(crm: Crm) -> bool:
    async with crm.sessions() as session:
        pending = await session.execute(select(TierChange.id).where(TierChange.roles_synced_at.is_(None)))
        return pending.first() is None


async def test_role_sync_marks_its_changes_through_the_writer_not_a_transaction_beside_it(
        emu: DiscordEmulator, crm: Crm, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a burst the writer holds SQLite's lock group after group; a second writer beside it
    (the role sync marking what it applied) waited past its busy timeout and failed (seen in the demo)."""
    async with crm.sessions.begin() as session:
        fan_id = await ensure_fan(session, crm.settings, platform="discord", external_id=str(FAN),
                                  display_name=None, now=utcnow())
        await pin(session, crm.settings, fan_id, "superfan", by="cli", now=utcnow())

    def beside_the_writer(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the role sync opened a write transaction beside the writer")

    monkeypatch.setattr(crm.sessions, "begin", beside_the_writer)
    writer = GroupWriter(crm.sessions, crm.settings)
    await writer.start()
    handle = await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05,
                                                  writer=writer), STEP * 2)
    try:
        assert await eventually(lambda: _roles_of(emu, FAN, SUPERFAN_ROLE), timeout=STEP)
        assert await eventually(lambda: _all_synced(crm), timeout=STEP)
        report = await handle.reconcile_roles()
        assert report.failed == 0
    finally:
        await handle.close()
        await writer.close()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def _roles_of(emu: DiscordEmulator, user: int, role: int) -> bool:
    return role in emu.member_roles(GUILD, user)
