"""Sandbox mode: a config's LINE and Discord pointed at the loopback emulators of ``bot/sandbox/``.

``superfan demo`` and ``superfan run --sandbox`` both run the real app this way: the creator's own
settings (tiers, keywords, locale, Discord ids when they are set), LINE and Discord switched on
and answered by emulators on 127.0.0.1, a temporary SQLite database, and a free web port. The
emulators' secrets are made up here and put in this process's environment only while the
sandbox is open (the previous values come back afterwards), so no token is needed and none is sent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bot.config import Config, DatabaseConfig
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.sandbox.line_emulator import LineEmulator

#: Ids of the sandbox's Discord server when the config names none (``[discord] guild_id = 0``).
GUILD = 700_000_000_000_000_001
GENERAL = 700_000_000_000_000_101
INBOX = 700_000_000_000_000_102
STAFF_CHANNEL = 700_000_000_000_000_103
STAFF_ROLE = 700_000_000_000_000_201
OWNER = 700_000_000_000_000_301
STAFF = 700_000_000_000_000_302
_TIER_ROLE_BASE = 700_000_000_000_000_210
_TIER_CHANNEL_BASE = 700_000_000_000_000_110


@dataclass(frozen=True)
class DiscordWorld:
    """The sandbox's Discord server: what the bot is configured with, plus who plays staff."""

    guild_id: int
    general_id: int
    inbox_id: int
    staff_channel_id: int
    staff_role_ids: list[int]
    tier_role_ids: dict[str, int]
    tier_channel_ids: dict[str, int]
    owner_id: int
    staff_id: int


@dataclass(frozen=True)
class Sandbox:
    """An open sandbox: the config to run the app with, and the emulators behind it."""

    config: Config
    line: LineEmulator
    discord: DiscordEmulator
    world: DiscordWorld

    @property
    def purchase_secret(self) -> str:
        """The purchase hook's secret (a shop signs with it; the demo plays the shop)."""
        return os.environ[self.config.web.purchase_secret_env]


def plan_world(config: Config) -> DiscordWorld:
    """The Discord server for ``config``: its own ids where it has them, the sandbox's otherwise.

    Every tier above the lowest gets a role (and, for the drop post, a channel) unless the config
    already maps tiers to roles.
    """
    d = config.discord
    keys = [level["key"] for level in config.tiers.levels][1:]
    roles = dict(d.tier_role_ids) or {key: _TIER_ROLE_BASE + n for n, key in enumerate(keys, 1)}
    channels = dict(config.drops.tier_channel_ids) or {key: _TIER_CHANNEL_BASE + n for n, key in enumerate(keys, 1)}
    return DiscordWorld(guild_id=d.guild_id or GUILD, general_id=GENERAL, inbox_id=d.inbox_channel_id or INBOX,
                        staff_channel_id=d.staff_channel_id or STAFF_CHANNEL,
                        staff_role_ids=list(d.staff_role_ids) or [STAFF_ROLE], tier_role_ids=roles,
                        tier_channel_ids=channels, owner_id=OWNER, staff_id=STAFF)


def build_world(emu: DiscordEmulator, world: DiscordWorld, server_name: str) -> None:
    """Create the server in the emulator (before the bot connects: GUILD_CREATE carries it)."""
    emu.add_guild(world.guild_id, server_name, owner_id=world.owner_id)
    emu.add_channel(world.guild_id, world.general_id, "general")
    emu.add_channel(world.guild_id, world.inbox_id, "inbox")
    emu.add_channel(world.guild_id, world.staff_channel_id, "staff")
    for key, channel in world.tier_channel_ids.items():
        emu.add_channel(world.guild_id, channel, key)
    for role in world.staff_role_ids:
        emu.add_role(world.guild_id, role, "staff")
    for key, role in world.tier_role_ids.items():
        emu.add_role(world.guild_id, role, key)
    emu.add_member(world.guild_id, world.owner_id, "owner")
    emu.add_member(world.guild_id, world.staff_id, "staff", roles=world.staff_role_ids[:1])


def sandbox_config(config: Config, *, database_url: str, line: LineEmulator, discord: DiscordEmulator,
                   world: DiscordWorld) -> Config:
    """``config`` with LINE and Discord on the emulators, a free web port and ``database_url``."""
    return replace(
        config,
        source=f"{config.source} (sandbox)",
        database=DatabaseConfig(url=database_url, auto_migrate=True,
                                busy_timeout_seconds=config.database.busy_timeout_seconds),
        web=replace(config.web, enabled=True, host="127.0.0.1", port=0),
        line=replace(config.line, enabled=True, api_base=line.base_url),
        discord=replace(config.discord, enabled=True, api_base=discord.api_base, gateway_url=discord.gateway_url,
                        guild_id=world.guild_id, inbox_channel_id=world.inbox_id,
                        staff_channel_id=world.staff_channel_id, staff_role_ids=world.staff_role_ids,
                        tier_role_ids=world.tier_role_ids, sync_commands=True),
        drops=replace(config.drops, tier_channel_ids=world.tier_channel_ids),
    )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block and put the previous values back after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@asynccontextmanager
async def open_sandbox(config: Config, *, database_url: str) -> AsyncIterator[Sandbox]:
    """Start both emulators and yield the sandboxed config; everything is stopped on the way out.

    Add Discord members to ``sandbox.discord`` before starting the app: the bot sees the server
    as it is when it connects.
    """
    from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints

    token = secrets.token_hex(16)
    env = {config.line.channel_secret_env: secrets.token_hex(16), config.line.channel_access_token_env: token,
           config.discord.token_env: secrets.token_hex(16), config.web.purchase_secret_env: secrets.token_hex(16)}
    world = plan_world(config)
    async with AsyncExitStack() as stack:
        stack.enter_context(environment(env))
        stack.callback(configure_endpoints, DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
        line = await stack.enter_async_context(LineEmulator(access_token=token))
        discord = await stack.enter_async_context(DiscordEmulator())
        build_world(discord, world, config.creator.name)
        yield Sandbox(sandbox_config(config, database_url=database_url, line=line, discord=discord, world=world),
                      line, discord, world)


async def run_sandboxed(config: Config, say: Callable[[str], None], *, stop: asyncio.Event | None = None) -> None:
    """``superfan run --sandbox``: the app with ``config``'s settings against the emulators, on a
    temporary database removed afterwards, until Ctrl-C (or ``stop``)."""
    from bot.app import run
    from bot.i18n import t

    locale = config.creator.locale
    with tempfile.TemporaryDirectory(prefix="superfan-sandbox-") as tmp:
        database = Path(tmp) / "sandbox.db"
        async with open_sandbox(config, database_url=f"sqlite+aiosqlite:///{database}") as box:
            say(t("demo.sandbox.started", locale, line=box.line.base_url, discord=box.discord.api_base,
                  database=database, line_secret=box.config.secret(box.config.line.channel_secret_env),
                  purchase_secret=box.purchase_secret))

            def ready(where: str) -> None:
                from bot.run_status import announcement

                for line in [*announcement(box.config, where, locale), t("run.ready", locale)]:
                    say(line)

            await run(box.config, stop=stop, on_ready=ready)
