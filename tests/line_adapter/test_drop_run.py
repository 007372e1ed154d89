"""End to end: staff create a drop with ``superfan drop create`` while ``superfan run`` runs; the
server sends it (its drainer finds the rows another process wrote) and ``superfan drop show``
reports it finished, each eligible fan reached once on the emulator."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner, Result

from bot.cli import app as cli_app
from bot.sandbox.line_emulator import LineEmulator
from crm.clock import utcnow
from crm.db import make_engine
from crm.schema import migrate
from tests.crm.test_drops import add_fan, add_line_fans, line_id
from tests.line_adapter.conftest import SECRET
from tests.line_adapter.test_kill_safety import Superfan

FANS = 700


async def test_a_drop_created_from_the_cli_is_sent_by_the_running_server(tmp_path: Path) -> None:
    db = tmp_path / "superfan.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    now = utcnow()
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as s:
            await add_line_fans(s, range(FANS), now, pinned=True)  # the server's tier refresh runs at start
            await add_line_fans(s, range(FANS, FANS + 30), now, tier="fan")
            await add_fan(s, FANS + 30, now, pinned="superfan", line="unfollowed")
    finally:
        await engine.dispose()
    async with LineEmulator(monthly_quota=5000) as emu:
        config = tmp_path / "superfan.toml"
        config.write_text(f'[database]\nurl = "{url}"\n[web]\nport = 0\n'
                          f'[line]\nenabled = true\napi_base = "{emu.base_url}"\nmonthly_quota = 5000\n',
                          encoding="utf-8")
        env = {"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": emu.access_token, "SUPERFAN_CONFIG": ""}

        async def superfan(*args: str) -> Result:
            result = await asyncio.to_thread(CliRunner(env=env).invoke, cli_app, ["--config", str(config), *args])
            assert result.exit_code == 0, (result.stdout, result.stderr)
            return result

        server = Superfan(config, emu)
        await server.start()
        try:
            made = json.loads((await superfan("drop", "create", "--min-tier", "鐵粉", "--text", "鐵粉限定直播",
                                              "--json")).stdout)
            assert made["counts"] == {"line": FANS, "discord": 0} and made["line_batches"] == 2
            for _ in range(1500):  # the server's drainer looks every couple of seconds
                if sum(emu.received().values()) >= FANS:
                    break
                await asyncio.sleep(0.02)
            shown = {}
            for _ in range(500):  # its "sent" marks follow the calls
                shown = json.loads((await superfan("drop", "show", str(made["id"]), "--json")).stdout)
                if shown["status"] == "finished":
                    break
                await asyncio.sleep(0.02)
        finally:
            assert await server.stop(signal.SIGTERM) == 0
    assert emu.received() == Counter({line_id(n): 1 for n in range(FANS)})
    assert shown["status"] == "finished" and shown["quota_used"] == FANS
    assert shown["per_platform"]["line"] == {"sent": FANS, "failed": 0, "pending": 0}
