"""Start-up and shutdown of the real bot: intents, extensions, commands, clear start-up errors."""

from __future__ import annotations

import asyncio

import discord
import pytest

from bot.app import Crm
from bot.config import ConfigError, parse
from bot.discord_adapter.client import DiscordStartError, SuperfanBot, intents, start_discord
from bot.discord_adapter.cogs import discover
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_adapter.conftest import GUILD, STEP

FAN_COMMANDS = {"checkin", "link", "prefs", "ref", "me", "optout", "forget-me"}
STAFF_COMMANDS = {"fan", "note", "tag", "tier", "stats", "log", "reply", "drop"}


async def test_every_extension_loads_and_registers_its_commands(emu: DiscordEmulator, bot: SuperfanBot) -> None:
    names = discover()
    assert {n.rsplit(".", 1)[1] for n in names} >= {"intake", "membership", "checkin", "linking", "preferences",
                                                     "referrals", "privacy", "fan_card", "staff", "stats", "drops",
                                                     "tier_roles"}
    assert set(bot.extensions) == set(names)
    registered = emu.registered_commands(GUILD)
    assert {c["name"] for c in registered if c["type"] == 1} == FAN_COMMANDS | STAFF_COMMANDS
    assert [c["name"] for c in registered if c["type"] == 2] == ["View fan"]
    checkin = next(c for c in registered if c["name"] == "checkin")
    assert checkin["description_localizations"]["zh-TW"].startswith("每日打卡")
    menu = next(c for c in registered if c["type"] == 2)
    assert menu["name_localizations"]["zh-TW"] == "查看粉絲"
    assert emu.unknown_requests == []


async def test_asks_for_exactly_the_intents_it_needs(emu: DiscordEmulator, bot: SuperfanBot) -> None:
    asked = discord.Intents._from_value(emu.identify_payloads[0]["intents"])
    assert asked == intents()
    for flag in ("guilds", "members", "guild_messages", "dm_messages", "message_content", "guild_reactions",
                 "dm_reactions", "invites"):
        assert getattr(asked, flag), flag
    assert not asked.presences


async def test_refused_privileged_intent_names_what_to_enable(emu: DiscordEmulator, crm: Crm) -> None:
    emu.fail_identify_with = 4014
    try:
        with pytest.raises(DiscordStartError) as exc:
            await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05), STEP)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    message = str(exc.value)
    assert "SERVER MEMBERS INTENT" in message and "MESSAGE CONTENT INTENT" in message
    assert "discord.com/developers/applications" in message
    assert isinstance(exc.value.__cause__, discord.PrivilegedIntentsRequired)
    assert not exc.value.transient  # superfan run stops: retrying cannot enable the intents


async def test_rejected_token_names_the_environment_variable(emu: DiscordEmulator, crm: Crm) -> None:
    emu.fail_next("GET", "/users/@me", 401)
    try:
        with pytest.raises(DiscordStartError, match=r"\$DISCORD_TOKEN"):
            await asyncio.wait_for(start_discord(crm, token="bad-token", guild_ready_timeout=0.05), STEP)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def test_token_defaults_to_the_configured_environment_variable(
    emu: DiscordEmulator, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "from-env")
    handle = await asyncio.wait_for(start_discord(crm, guild_ready_timeout=0.05), STEP)
    try:
        assert handle.client.is_ready() and handle.client.http.token == "from-env"
    finally:
        await asyncio.wait_for(handle.close(), STEP)
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert handle.client.is_closed() and handle.task.done()


@pytest.mark.parametrize("discord_overrides", [{"gateway_url": "ws://127.0.0.1:9/gateway",
                                                "ready_timeout_seconds": 0.5}])
async def test_unreachable_gateway_gives_up_with_a_clear_error(emu: DiscordEmulator, crm: Crm) -> None:
    try:
        with pytest.raises(DiscordStartError, match=r"gateway ws://127\.0\.0\.1:9/gateway") as exc:
            await asyncio.wait_for(start_discord(crm, token="test-token", guild_ready_timeout=0.05), STEP)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert exc.value.transient  # superfan run keeps LINE up and tries again


def test_config_rejects_discord_values_that_cannot_work() -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"discord": {"tier_role_ids": {"vip": 1, "fan": 2}, "defer_after_seconds": 3.0}})
    lines = str(exc.value).splitlines()
    assert any("defer_after_seconds must be between 0 and 2.5" in line for line in lines)
    assert any("tier_role_ids has vip" in line for line in lines)
