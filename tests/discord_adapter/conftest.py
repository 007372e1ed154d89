"""The real bot (``start_discord``) against the loopback Discord emulator, on the test database.

The emulator answers interaction callbacks only within 3 seconds, like Discord, so a command
that misses the window fails its test. Everything waits with a timeout so a hang fails fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import discord
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.config import Config, DatabaseConfig, DiscordConfig
from bot.discord_adapter.client import DiscordHandle, SuperfanBot, start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator, InteractionHandle
from crm.models import Fan, Identity, Interaction
from crm.settings import CrmSettings

GUILD = 800_000_000_000_000_001
GENERAL = 800_000_000_000_000_101
FORUM = 800_000_000_000_000_102
THREAD = 800_000_000_000_000_103
STAFF_ROLE = 800_000_000_000_000_201
MOD_ROLE = 800_000_000_000_000_202
FAN_TIER_ROLE = 800_000_000_000_000_211
SUPERFAN_ROLE = 800_000_000_000_000_212
CLOSE_FRIEND_ROLE = 800_000_000_000_000_213
OWNER = 800_000_000_000_000_301
STAFF = 800_000_000_000_000_302
MOD = 800_000_000_000_000_303
FAN = 800_000_000_000_000_304
FAN2 = 800_000_000_000_000_305
NEWBIE = 800_000_000_000_000_306
OTHER_BOT = 800_000_000_000_000_307
TIER_ROLES = {"fan": FAN_TIER_ROLE, "superfan": SUPERFAN_ROLE, "close_friend": CLOSE_FRIEND_ROLE}
STEP = 5.0
MANAGE_GUILD = discord.Permissions(manage_guild=True).value


def build_world(emu: DiscordEmulator) -> None:
    emu.add_guild(GUILD, "Fan Club", owner_id=OWNER)
    emu.add_channel(GUILD, GENERAL, "general")
    emu.add_channel(GUILD, FORUM, "fan-art", type=15)
    emu.add_channel(GUILD, THREAD, "q-and-a", type=11, parent_id=GENERAL)
    emu.add_role(GUILD, STAFF_ROLE, "Staff")
    emu.add_role(GUILD, MOD_ROLE, "Mod", permissions=MANAGE_GUILD)
    for key, role in TIER_ROLES.items():
        emu.add_role(GUILD, role, key)
    emu.add_member(GUILD, OWNER, "owner")
    emu.add_member(GUILD, STAFF, "staffer", roles=[STAFF_ROLE])
    emu.add_member(GUILD, MOD, "mod", roles=[MOD_ROLE])
    emu.add_member(GUILD, FAN, "小慧")
    emu.add_member(GUILD, FAN2, "阿明")
    emu.add_member(GUILD, OTHER_BOT, "otherbot", bot=True)
    emu.add_user(NEWBIE, "newbie")
    emu.add_invite(GUILD, "fanclub", FAN, uses=2)
    emu.add_invite(GUILD, "owner-link", OWNER, uses=5)


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(interaction_deadline=3.0) as emulator:
        build_world(emulator)
        yield emulator


def discord_config(emu: DiscordEmulator, **overrides: Any) -> DiscordConfig:
    values: dict[str, Any] = dict(enabled=True, guild_id=GUILD, staff_role_ids=[STAFF_ROLE], tier_role_ids=TIER_ROLES,
                                  api_base=emu.api_base, gateway_url=emu.gateway_url, ready_timeout_seconds=STEP)
    values.update(overrides)
    return DiscordConfig(**values)


@pytest.fixture
def discord_overrides() -> dict[str, Any]:
    """Tests override DiscordConfig keys by redefining this fixture or with ``parametrize``."""
    return {}


@pytest.fixture
def crm(emu: DiscordEmulator, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
        settings: CrmSettings, db_url: str, discord_overrides: dict[str, Any]) -> Crm:
    config = Config(database=DatabaseConfig(url=db_url), discord=discord_config(emu, **discord_overrides))
    return Crm(config, engine, sessions, settings)


@contextlib.asynccontextmanager
async def running(crm: Crm) -> AsyncIterator[DiscordHandle]:
    """``start_discord`` as ``superfan run`` calls it; always closes and restores Discord's endpoints."""
    try:
        handle = await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05), STEP * 2)
        try:
            yield handle
        finally:
            await asyncio.wait_for(handle.close(), STEP * 2)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


@pytest.fixture
async def bot(emu: DiscordEmulator, crm: Crm) -> AsyncIterator[SuperfanBot]:
    async with running(crm) as handle:
        yield handle.client


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = STEP) -> Any:
    """Poll ``check`` until it returns something truthy (gateway events are handled asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(0.02)


async def settle(bot: SuperfanBot) -> None:
    """Let units of work already started finish (used after a sentinel event was seen)."""
    await asyncio.sleep(0.05)
    await bot.idle(STEP)


async def interactions(crm: Crm, external_id: int | str | None = None, kind: str | None = None) -> list[Interaction]:
    async with crm.sessions() as session:
        stmt = select(Interaction).order_by(Interaction.id)
        if external_id is not None:
            stmt = stmt.join(Identity, Identity.fan_id == Interaction.fan_id).where(
                Identity.external_id == str(external_id))
        if kind is not None:
            stmt = stmt.where(Interaction.kind == kind)
        return list((await session.execute(stmt)).scalars())


async def fan_of(crm: Crm, external_id: int | str, platform: str = "discord") -> Fan | None:
    async with crm.sessions() as session:
        return (await session.execute(select(Fan).join(Identity, Identity.fan_id == Fan.id).where(
            Identity.platform == platform, Identity.external_id == str(external_id)))).scalar_one_or_none()


async def count_fans(crm: Crm) -> int:
    async with crm.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Fan))).scalar_one())


async def reply_of(handle: InteractionHandle, timeout: float = STEP) -> dict[str, Any]:
    """The message the user finally sees: the callback's, or the follow-up after a deferral."""
    response = await handle.response(timeout)
    if response["type"] == 5:
        return (await handle.wait_followups(1, timeout))[0]
    return response["data"]


def embed_text(message: dict[str, Any]) -> str:
    """Everything readable in a message: content, embed title, description, fields, footer."""
    parts = [message.get("content") or ""]
    for embed in message.get("embeds") or []:
        parts += [embed.get("title", ""), embed.get("description", "")]
        for fld in embed.get("fields", []):
            parts += [fld["name"], fld["value"]]
        parts.append((embed.get("footer") or {}).get("text", ""))
    return "\n".join(parts)


async def slash(emu: DiscordEmulator, name: str, user: int, *, subcommand: str | None = None,
                locale: str = "en-US", **options: Any) -> dict[str, Any]:
    handle = await emu.invoke_slash(name, user_id=user, channel_id=GENERAL, subcommand=subcommand,
                                    options=options, locale=locale)
    return await reply_of(handle)
