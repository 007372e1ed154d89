"""The real ``superfan run`` SIGKILLed right after Discord took a drop DM but before the process heard
back: after a restart (and the recovery of the rows the kill left half-sent) every eligible fan has
the DM exactly once, counted on the Discord emulator (with Discord's rate limits on), nobody else."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.app import Crm
from bot.config import Config, DatabaseConfig
from bot.outbox_transact import session_transact
from bot.sandbox.discord_emulator import DiscordEmulator
from crm import outbox
from crm.clock import utcnow
from crm.db import make_engine
from crm.drops import DropDraft, create_drop
from crm.schema import migrate
from crm.settings import CrmSettings
from tests.crm.test_drops import add_fan, discord_id
from tests.discord_adapter.conftest import GUILD, build_world, discord_config, running
from tests.discord_adapter.test_drop_senders import Clock, drainer

CLI = [sys.executable, "-c", "from bot.cli import main; main()"]
ELIGIBLE = 120  # more than one claim (50): the restarted process has rows of its own to send


def statuses(db: Path, table: str) -> Counter[str]:
    with closing(sqlite3.connect(db)) as conn:
        return Counter(r[0] for r in conn.execute(f"SELECT status FROM {table}"))  # noqa: S608 - a fixed name


async def superfan_run(config: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "DISCORD_TOKEN": "test-token", "SUPERFAN_CONFIG": ""}
    return await asyncio.create_subprocess_exec(*CLI, "--config", str(config), "run", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def test_sigkill_after_discord_took_a_dm_delivers_each_fan_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "superfan.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = utcnow()
    settings = CrmSettings()
    try:
        async with sessions.begin() as s:
            for n in range(ELIGIBLE):
                await add_fan(s, n, now, line=None, discord="member")
            ineligible = {n: dict(line=None, discord="member", tier="fan") for n in range(ELIGIBLE, ELIGIBLE + 5)}
            ineligible |= {n: dict(line=None, discord="left") for n in range(ELIGIBLE + 5, ELIGIBLE + 8)}
            ineligible |= {n: dict(line=None, discord="dms_closed") for n in range(ELIGIBLE + 8, ELIGIBLE + 10)}
            ineligible |= {n: dict(line=None, discord="member", opted_out=True)
                           for n in range(ELIGIBLE + 10, ELIGIBLE + 12)}
            for n, state in ineligible.items():
                await add_fan(s, n, now, **state)  # type: ignore[arg-type]
            await create_drop(s, settings, DropDraft("摯友限定：新歌試聽", "鐵粉", platforms=("discord",)), now)

        async with DiscordEmulator() as emu:
            build_world(emu)
            emu.rate_limits.use_discords()
            emu.hold_after_accept("/messages")
            config = tmp_path / "superfan.toml"
            config.write_text(f'[database]\nurl = "{url}"\n[web]\nport = 0\n'
                              f'[discord]\nenabled = true\nguild_id = {GUILD}\napi_base = "{emu.api_base}"\n'
                              f'gateway_url = "{emu.gateway_url}"\n', encoding="utf-8")
            first = await superfan_run(config)
            await asyncio.wait_for(emu.holding.wait(), 60)  # Discord made a DM; its answer is held back
            first.kill()
            assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
            emu.release()
            assert statuses(db, "outbox")["sending"], "the kill interrupted no send: nothing was tested"
            assert statuses(db, "outbox")["pending"], "the first process sent everything: nothing left to restart"

            second = await superfan_run(config)
            try:
                for _ in range(3000):  # rows the first process never claimed go out (it looks every 2 s)
                    if not statuses(db, "outbox")["pending"]:
                        break
                    await asyncio.sleep(0.02)
            finally:
                second.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(second.wait(), 30) == 0

            # Rows the kill left "sending" are handed back once surely dead (two minutes on), played
            # with a later clock instead of waiting; they go again under the same nonces.
            later = Clock(utcnow() + timedelta(minutes=3))
            async with sessions.begin() as s:
                assert await outbox.recover_interrupted(s, "discord", later.now)
            crm = Crm(Config(database=DatabaseConfig(url=url), discord=discord_config(emu)), engine, sessions,
                      settings)
            async with running(crm) as handle:
                await drainer(handle.client, session_transact(sessions), later).drain_once()

            per_fan = {n: len(emu.sent_messages(emu.dm_channel_id(int(discord_id(n)))))
                       for n in range(ELIGIBLE + 12)}
            assert per_fan == {n: 1 if n < ELIGIBLE else 0 for n in per_fan}
            sends = Counter(r.path for r in emu.requests if r.method == "POST" and r.path.endswith("/messages"))
            assert max(sends.values()) >= 2, "no DM was sent twice: the held one was never resent"
        assert statuses(db, "outbox") == Counter({"sent": ELIGIBLE})
        assert statuses(db, "deliveries") == Counter({"sent": ELIGIBLE})
        assert statuses(db, "drops") == Counter({"finished": 1})
    finally:
        await engine.dispose()
