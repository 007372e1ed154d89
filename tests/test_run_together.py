"""``superfan run`` as one process: the LINE webhook and the Discord bot side by side on one loop.

A fan talks on Discord, asks for a link code with ``/link``, sends it to the LINE account, and is
one fan with two accounts afterwards; both platforms are the loopback emulators.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot.app import run
from bot.config import Config, DatabaseConfig, LineConfig, WebConfig
from bot.discord_adapter import link as discord_link
from bot.discord_adapter.client import DiscordStartError
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.sandbox.line_emulator import LineEmulator
from crm.db import make_engine, make_sessionmaker
from crm.models import Fan, Identity, Interaction
from tests.discord_adapter.conftest import FAN, GENERAL, GUILD, build_world, discord_config, reply_of
from tests.line_adapter.conftest import SECRET, body_of, sign, text_event, user


def both_platforms(monkeypatch: pytest.MonkeyPatch, db: Path, line: LineEmulator,
                   discord_emu: DiscordEmulator) -> Config:
    """LINE and Discord enabled against the emulators, their secrets in the environment."""
    monkeypatch.setenv("LINE_CHANNEL_SECRET", SECRET)
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", "test-access-token")
    monkeypatch.setenv("DISCORD_TOKEN", "test-token")
    return Config(database=DatabaseConfig(url=f"sqlite+aiosqlite:///{db}"), web=WebConfig(port=0),
                  line=LineConfig(enabled=True, api_base=line.base_url),
                  discord=discord_config(discord_emu, ready_timeout_seconds=10.0))


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[str]:
    """``superfan run`` until the block ends; yields the web app's base URL once it is ready."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, on_ready=ready.set_result))
    try:
        yield (await asyncio.wait_for(ready, 30)).split(" ")[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def test_one_process_serves_line_and_discord_and_links_a_fan(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with LineEmulator() as line, DiscordEmulator(interaction_deadline=3.0) as discord_emu:
        build_world(discord_emu)
        config = both_platforms(monkeypatch, tmp_path / "together.db", line, discord_emu)
        async with running(config) as web:
            await discord_emu.message_create(GENERAL, FAN, "今天的直播好好看！", guild_id=GUILD)
            handle = await discord_emu.invoke_slash("link", user_id=FAN, channel_id=GENERAL, locale="zh-TW")
            reply = await reply_of(handle)
            code = re.search(r"\*\*([A-Z2-9]{6})\*\*", reply["content"])
            assert code, reply
            uid = user(77)
            body = body_of(text_event(uid, f"綁定 {code.group(1)}", reply_token=line.issue_reply_token(uid)))
            async with aiohttp.ClientSession() as http:
                async with http.post(web + "/line/webhook", data=body,
                                     headers={"Content-Type": "application/json", "X-Line-Signature": sign(body)}) as r:
                    assert r.status == 200
                async with http.get(web + "/healthz") as r:
                    assert r.status == 200 and {"writer", "line"} <= set((await r.json())["checks"])
            engine = make_engine(config.database.url)
            try:
                async with make_sessionmaker(engine)() as session:
                    for _ in range(100):  # intake and the link are handled asynchronously
                        rows = (await session.execute(select(Identity.platform, Identity.fan_id))).all()
                        kinds = set((await session.execute(select(Interaction.kind))).scalars())
                        await session.rollback()
                        if len(rows) == 2 and len({f for _, f in rows}) == 1 and "message" in kinds:
                            break
                        await asyncio.sleep(0.05)
                    assert {p for p, _ in rows} == {"discord", "line"}
                    assert len({fan for _, fan in rows}) == 1  # one fan, two accounts
                    assert len((await session.execute(select(Fan))).all()) == 1
                    assert "message" in kinds
            finally:
                await engine.dispose()
            for _ in range(100):  # the answer goes out after the commit, in the background
                if line.delivered:
                    break
                await asyncio.sleep(0.05)
            assert [(d.via, d.to) for d in line.delivered] == [("reply", uid)]  # free reply, not a paid push


async def test_discord_down_at_start_leaves_line_running_and_connects_when_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that boots before its network, or a Discord outage: LINE intake must not wait for it."""
    monkeypatch.setattr(discord_link, "RETRY_DELAYS", (0.2,))
    async with LineEmulator() as line, DiscordEmulator() as discord_emu:
        build_world(discord_emu)
        config = both_platforms(monkeypatch, tmp_path / "outage.db", line, discord_emu)
        port = discord_emu.port
        await discord_emu.stop()  # Discord is unreachable: connections are refused
        async with running(config) as web:
            uid = user(5)
            body = body_of(text_event(uid, "Discord 掛了也要收到這則"))
            async with aiohttp.ClientSession() as http:
                async with http.post(web + "/line/webhook", data=body,
                                     headers={"Content-Type": "application/json", "X-Line-Signature": sign(body)}) as r:
                    assert r.status == 200
                async with http.get(web + "/healthz") as r:
                    health = await r.json()
                    assert r.status == 503 and "could not connect to Discord" in health["problems"]["discord"]
                    assert "writer" not in health["problems"] and "line" not in health["problems"]
                await discord_emu.start(port)  # Discord is back
                for _ in range(200):
                    async with http.get(web + "/healthz") as r:
                        if r.status == 200:
                            assert "discord" in (await r.json())["checks"]
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"Discord never reconnected: {health}")
            await discord_emu.message_create(GENERAL, FAN, "我回來了", guild_id=GUILD)
            engine = make_engine(config.database.url)
            try:
                async with make_sessionmaker(engine)() as session:
                    for _ in range(100):
                        platforms = set((await session.execute(select(Identity.platform))).scalars())
                        await session.rollback()
                        if platforms == {"discord", "line"}:
                            break
                        await asyncio.sleep(0.05)
                    assert platforms == {"discord", "line"}  # the LINE event kept, Discord intake running
            finally:
                await engine.dispose()


async def test_a_rejected_discord_token_still_stops_start_up_with_what_to_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retrying cannot fix a bad token: ``superfan run`` says so at once instead of running half-configured."""
    monkeypatch.setenv("DISCORD_TOKEN", "revoked-token")
    monkeypatch.setattr(discord_link, "RETRY_DELAYS", (0.2,))
    async with DiscordEmulator() as discord_emu:
        build_world(discord_emu)
        discord_emu.fail_next("GET", "/users/@me", 401)
        config = Config(database=DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"),
                        web=WebConfig(port=0), discord=discord_config(discord_emu))
        try:
            with pytest.raises(DiscordStartError, match=r"\$DISCORD_TOKEN") as exc:
                await asyncio.wait_for(run(config, stop=asyncio.Event()), 30)
        finally:
            configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert not exc.value.transient
