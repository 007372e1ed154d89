"""The real ``superfan run`` process, SIGKILLed mid-burst: every event it acknowledged is stored.

Then LINE redelivers everything (acknowledged or not) to the restarted process: each event ends
up stored exactly once, SIGTERM shuts it down cleanly, and ``superfan fan line:U… --json`` shows
the fan's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
from typer.testing import CliRunner

from bot.cli import app as cli_app
from bot.sandbox.line_emulator import LineEmulator
from tests.line_adapter.conftest import SECRET, body_of, sign, text_event, user

CLI = [sys.executable, "-c", "from bot.cli import main; main()"]
READY = re.compile(r"(http://127\.0\.0\.1:\d+)")


class Superfan:
    """``superfan --config … run`` as a child process."""

    def __init__(self, config: Path, emu: LineEmulator) -> None:
        self.config = config
        self.env = {**os.environ, "LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": emu.access_token,
                    "SUPERFAN_CONFIG": ""}
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self._drain: asyncio.Task[None] | None = None
        self.stderr: list[str] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *CLI, "--config", str(self.config), "run", env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        while not self.url:
            line = (await asyncio.wait_for(self.proc.stderr.readline(), 60)).decode()
            assert line, "superfan run exited early:\n" + "".join(self.stderr)
            self.stderr.append(line)
            if (found := READY.search(line)) and "/line/webhook" in line:
                self.url = found.group(1)
        self._drain = asyncio.create_task(self._keep_reading())

    async def _keep_reading(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode())

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._drain:
            await self._drain
        return code


def stored_event_ids(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT source_event_id FROM interactions")]


async def test_sigkill_mid_burst_loses_no_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "superfan.db"
    async with LineEmulator() as emu:
        config = tmp_path / "superfan.toml"
        config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n[web]\nport = 0\n'
                          f'[line]\nenabled = true\napi_base = "{emu.base_url}"\n', encoding="utf-8")
        requests = []
        for n in range(200):
            events = [text_event(user(n % 40), f"燒 {n}.{k} 🔥") for k in range(5)]
            requests.append(([e.webhook_event_id for e in events], body_of(*events)))
        acked: set[str] = set()
        killed = asyncio.Event()
        enough = asyncio.Event()

        app = Superfan(config, emu)
        await app.start()

        async def fire(http: aiohttp.ClientSession, queue: list[tuple[list[str], bytes]]) -> None:
            while queue and not killed.is_set():
                ids, body = queue.pop()
                try:
                    async with http.post(app.url + "/line/webhook", data=body, headers={
                            "Content-Type": "application/json", "X-Line-Signature": sign(body)}) as resp:
                        if resp.status == 200:
                            acked.update(ids)
                            if len(acked) >= 300:
                                enough.set()
                except aiohttp.ClientError:
                    return

        async def killer(proc: Superfan) -> None:
            await enough.wait()
            assert proc.proc is not None
            proc.proc.kill()
            killed.set()

        queue = list(reversed(requests))
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(killer(app), *(fire(http, queue) for _ in range(16)))
        assert await asyncio.wait_for(app.proc.wait(), 10) == -signal.SIGKILL  # type: ignore[union-attr]
        assert 300 <= len(acked) < 1000

        restarted = Superfan(config, emu)
        await restarted.start()
        stored = stored_event_ids(db)
        assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events lost"

        async with aiohttp.ClientSession() as http:  # LINE redelivers whatever it sent
            async def redeliver(ids: list[str], body: bytes) -> int:
                async with http.post(restarted.url + "/line/webhook", data=body, headers={
                        "Content-Type": "application/json", "X-Line-Signature": sign(body)}) as resp:
                    return resp.status

            assert set(await asyncio.gather(*(redeliver(*r) for r in requests))) == {200}
        assert await restarted.stop(signal.SIGTERM) == 0
        assert "Traceback" not in "".join(restarted.stderr)
        assert "superfan 已停止" in "".join(restarted.stderr)  # the creator is told it stopped

    stored = stored_event_ids(db)
    assert len(stored) == len(set(stored)) == 1000

    result = await asyncio.to_thread(  # the CLI runs its own event loop: give it a thread
        CliRunner(env={"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": "x", "SUPERFAN_CONFIG": ""}).invoke,
        cli_app, ["--config", str(config), "fan", f"line:{user(3)}", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    doc = json.loads(out)
    assert doc["identities"][0]["external_id"] == user(3)
    assert [i["kind"] for i in doc["interactions"]] == ["dm_in"] * 3
    assert doc["interactions"][0]["summary"].startswith("燒 ")
