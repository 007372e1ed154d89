"""``superfan run`` as one process: the LINE webhook and the Discord bot side by side on one loop.

A fan talks on Discord, asks for a link code with ``/link``, sends it to the LINE account, and is
one fan with two accounts afterwards; both platforms are the loopback emulators.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot.app import run
from bot.config import Config, DatabaseConfig, LineConfig, WebConfig
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.sandbox.line_emulator import LineEmulator
from crm.db import make_engine, make_sessionmaker
from crm.models import Fan, Identity, Interaction
from tests.discord_adapter.conftest import FAN, GENERAL, GUILD, build_world, discord_config, reply_of
from tests.line_adapter.conftest import SECRET, body_of, sign, text_event, user


async def test_one_process_serves_line_and_discord_and_links_a_fan(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_CHANNEL_SECRET", SECRET)
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", "test-access-token")
    monkeypatch.setenv("DISCORD_TOKEN", "test-token")
    url = f"sqlite+aiosqlite:///{tmp_path / 'together.db'}"
    async with LineEmulator() as line, DiscordEmulator(interaction_deadline=3.0) as discord_emu:
        build_world(discord_emu)
        config = Config(database=DatabaseConfig(url=url), web=WebConfig(port=0),
                        line=LineConfig(enabled=True, api_base=line.base_url),
                        discord=discord_config(discord_emu, ready_timeout_seconds=10.0))
        stop = asyncio.Event()
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run(config, stop=stop, on_ready=ready.set_result))
        try:
            where = await asyncio.wait_for(ready, 30)
            web = where.split(" ")[0]
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
            engine = make_engine(url)
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
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
