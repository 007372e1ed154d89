"""Joins are credited to the inviter once; leaves are recorded; bots are ignored."""

from __future__ import annotations

import asyncio

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_adapter.conftest import (
    FAN,
    GUILD,
    NEWBIE,
    OWNER,
    eventually,
    fan_of,
    interactions,
    settle,
    slash,
)


async def tracking(bot: SuperfanBot) -> None:
    cog = bot.get_cog("Membership")
    await eventually(lambda: asyncio.sleep(0, cog.tracking_invites(GUILD)))


async def test_joining_through_an_invite_credits_the_inviter_once(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    await tracking(bot)
    await emu.member_add(GUILD, NEWBIE, "newbie", via_invite="fanclub")
    referral = await eventually(lambda: interactions(crm, FAN, "referral"))
    assert len(referral) == 1 and referral[0].points > 0
    assert [r.kind for r in await interactions(crm, NEWBIE)] == ["follow"]
    inviter, newbie = await fan_of(crm, FAN), await fan_of(crm, NEWBIE)
    assert newbie.referred_by == inviter.id
    assert await interactions(crm, OWNER) == []

    await emu.member_remove(GUILD, NEWBIE)
    await eventually(lambda: interactions(crm, NEWBIE, "unfollow"))
    await emu.member_add(GUILD, NEWBIE, "newbie", via_invite="fanclub")
    await eventually(lambda: _follows(crm, 2))
    await settle(bot)
    assert len(await interactions(crm, FAN, "referral")) == 1

    answer = await slash(emu, "ref", NEWBIE, use=await _code_of(emu, OWNER))
    assert "already used a referral code" in answer["content"]


async def _follows(crm: Crm, n: int) -> bool:
    return len(await interactions(crm, NEWBIE, "follow")) == n


async def _code_of(emu: DiscordEmulator, user: int) -> str:
    text = (await slash(emu, "ref", user))["content"]
    return text.split("**")[1]


async def test_bots_joining_are_ignored_and_unknown_leavers_create_no_fan(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    await tracking(bot)
    await emu.member_add(GUILD, 800_000_000_000_000_399, "helperbot", bot=True, via_invite="fanclub")
    await emu.member_remove(GUILD, OWNER)
    await emu.member_add(GUILD, NEWBIE, "newbie")
    await eventually(lambda: interactions(crm, NEWBIE, "follow"))
    await settle(bot)
    assert [r.kind for r in await interactions(crm)] == ["follow"]
    assert await fan_of(crm, OWNER) is None
    assert (await fan_of(crm, NEWBIE)).referred_by is None
