"""Under ``superfan run`` Discord intake shares the group-commit writer with LINE webhooks, and a
tier change from any source (here a shop purchase) moves the Discord role without waiting."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from bot.app import Crm
from bot.discord_adapter.client import start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.writer import GroupWriter
from crm.interaction import InteractionIn
from tests.discord_adapter.conftest import FAN, GENERAL, GUILD, STEP, SUPERFAN_ROLE, eventually, interactions


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
