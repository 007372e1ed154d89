"""The real ``superfan run`` SIGKILLed while outbox rows are being sent: after the restart (and the
recovery of rows the kill left half-sent) every row reaches the fan exactly once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.sender import LineSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import session_transact
from bot.sandbox.line_emulator import LineEmulator
from crm import outbox
from crm.clock import utcnow
from crm.db import make_engine
from crm.schema import migrate
from tests.line_adapter.conftest import user
from tests.line_adapter.test_kill_safety import Superfan

ROWS = 60


def statuses(db: Path) -> Counter[str]:
    with closing(sqlite3.connect(db)) as conn:
        return Counter(r[0] for r in conn.execute("SELECT status FROM outbox"))


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached within {timeout:.0f}s")


async def test_sigkill_while_sending_delivers_every_row_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "superfan.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions.begin() as session:  # staff relays queued by another process (superfan reply)
            for n in range(ROWS):
                await outbox.enqueue(session, platform="line", kind="relay", recipient=user(n % 20),
                                     payload={"text": f"回覆 {n}"}, now=utcnow())
        async with LineEmulator(delay=0.05) as emu:  # slow LINE: the kill lands with sends in flight
            config = tmp_path / "superfan.toml"
            config.write_text(f'[database]\nurl = "{url}"\n[web]\nport = 0\n'
                              f'[line]\nenabled = true\napi_base = "{emu.base_url}"\nmonthly_quota = 1000\n',
                              encoding="utf-8")
            app = Superfan(config, emu)
            await app.start()
            await until(lambda: len(emu.delivered) >= 10)
            assert app.proc is not None
            app.proc.kill()
            assert await asyncio.wait_for(app.proc.wait(), 10) == -signal.SIGKILL
            assert len(emu.delivered) < ROWS, "everything was sent before the kill: nothing was tested"

            restarted = Superfan(config, emu)
            await restarted.start()
            await until(lambda: not statuses(db)["pending"])
            assert await restarted.stop(signal.SIGTERM) == 0
            assert statuses(db)["sending"], "the kill interrupted no send: nothing was tested"

            # Rows the kill left "sending" are handed back once they are surely dead (two minutes
            # later): played here with a later clock instead of waiting.
            later = utcnow() + timedelta(minutes=3)
            sender = LineSender(emu.base_url, emu.access_token, monthly_quota=1000, timezone="Asia/Taipei")
            await sender.start()
            try:
                async with sessions.begin() as session:
                    await outbox.recover_interrupted(session, "line", later)
                await OutboxDrainer("line", session_transact(sessions), LineOutboxSender(sender, clock=lambda: later),
                                    clock=lambda: later).drain_once()
            finally:
                await sender.close()

            assert statuses(db) == Counter({"sent": ROWS})
            texts = Counter(m["text"] for d in emu.delivered for m in d.messages)
            assert texts == Counter({f"回覆 {n}": 1 for n in range(ROWS)})
    finally:
        await engine.dispose()
