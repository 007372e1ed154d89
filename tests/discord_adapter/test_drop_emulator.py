"""The Discord emulator's rate limits, as a drop's 1,000 DMs meet them: headers, 429s, discord.py coping."""

from __future__ import annotations

import asyncio

import aiohttp
import discord

from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_adapter.conftest import FAN, FAN2, STEP

MESSAGES = r"/channels/(?P<major>\d+)/messages"


async def _post(session: aiohttp.ClientSession, emu: DiscordEmulator, channel_id: int,
                nonce: int) -> tuple[int, dict[str, str], dict[str, object]]:
    async with session.post(f"{emu.api_base}/channels/{channel_id}/messages",
                            json={"content": "hi", "nonce": str(nonce), "enforce_nonce": True}) as response:
        return response.status, dict(response.headers), await response.json()


async def test_a_channel_bucket_says_what_is_left_and_answers_429_past_it(emu: DiscordEmulator) -> None:
    emu.rate_limits.limit("POST", MESSAGES, 2, 60.0, bucket="channel-messages")
    one, two = emu.dm_channel_id(FAN), emu.dm_channel_id(FAN2)
    async with aiohttp.ClientSession() as session:
        answers = [await _post(session, emu, one, n) for n in range(3)]
        other = await _post(session, emu, two, 9)
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["1", "0", "0"]
    status, headers, body = answers[2]
    assert body["retry_after"] > 0 and body["global"] is False
    assert headers["Via"] and float(headers["Retry-After"]) >= 1
    assert answers[0][1]["X-RateLimit-Bucket"] == other[1]["X-RateLimit-Bucket"]
    assert other[0] == 200, "another channel has its own bucket"
    assert len(emu.sent_messages(one)) == 2 and emu.rate_limits.counts.limited == {answers[0][1]["X-RateLimit-Bucket"]: 1}


async def test_the_global_limit_answers_a_global_429(emu: DiscordEmulator) -> None:
    emu.rate_limits.limit_globally(2, window=60.0)
    async with aiohttp.ClientSession() as session:
        answers = [await _post(session, emu, emu.dm_channel_id(user), n) for n, user in enumerate((FAN, FAN2, FAN))]
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert answers[2][2]["global"] is True and answers[2][1]["X-RateLimit-Global"] == "true"
    assert emu.rate_limits.counts.limited == {"global": 1}


async def test_discord_py_sends_everything_once_through_the_limits(emu: DiscordEmulator) -> None:
    """discord.py waits on the bucket headers and retries the 429s itself: each message lands once."""
    emu.rate_limits.limit("POST", MESSAGES, 2, 0.2)
    emu.rate_limits.limit_globally(5, window=0.2)
    client = discord.Client(intents=discord.Intents.none())
    configure_endpoints(emu.api_base, emu.gateway_url)
    try:
        await asyncio.wait_for(client.login("fake-token"), STEP)
        channels = [await client.create_dm(discord.Object(user)) for user in (FAN, FAN2)]
        await asyncio.wait_for(asyncio.gather(*(
            channel.send(f"drop {n}", nonce=100 * c + n)
            for c, channel in enumerate(channels) for n in range(4))), STEP * 2)
    finally:
        await client.close()
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    for channel in channels:
        assert sorted(m["content"] for m in emu.sent_messages(channel.id)) == [f"drop {n}" for n in range(4)]
    assert emu.rate_limits.counts.total >= 1, "the global limit was met (discord.py cannot see it coming)"
