"""The real ``superfan run`` SIGKILLed right after LINE accepted a drop's batch but before the
process heard back: after the restart (and the recovery of the batch the kill left half-sent)
every eligible fan received the drop exactly once, counted on the emulator, and nobody else."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.drop_views import DropViews
from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.sender import LineSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import session_transact
from bot.sandbox.line_emulator import LineEmulator
from crm import outbox
from crm.clock import utcnow
from crm.db import make_engine
from crm.drops import DropDraft, create_drop
from crm.schema import migrate
from crm.settings import CrmSettings, DropRules
from tests.crm.test_drops import add_fan, add_line_fans, line_id
from tests.line_adapter.test_kill_safety import Superfan

ELIGIBLE = 1300  # three batches: 500, 500, 300


def statuses(db: Path, table: str) -> Counter[str]:
    with closing(sqlite3.connect(db)) as conn:
        return Counter(r[0] for r in conn.execute(f"SELECT status FROM {table}"))  # noqa: S608 - a fixed name


async def test_sigkill_after_line_took_a_batch_delivers_each_fan_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "superfan.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = utcnow()
    try:
        async with sessions.begin() as s:
            await add_line_fans(s, range(ELIGIBLE), now)
            await add_line_fans(s, range(ELIGIBLE, ELIGIBLE + 40), now, tier="fan")  # below the tier
            for n in range(ELIGIBLE + 40, ELIGIBLE + 50):
                await add_fan(s, n, now, line="unfollowed")  # blocked the account
            await add_fan(s, ELIGIBLE + 50, now, opted_out=True)
            await create_drop(s, CrmSettings(), DropDraft("摯友限定：新歌試聽", "鐵粉", platforms=("line",)), now)
        async with LineEmulator() as emu:
            emu.hold_after_accept("multicast")
            config = tmp_path / "superfan.toml"
            config.write_text(f'[database]\nurl = "{url}"\n[web]\nport = 0\n'
                              f'[line]\nenabled = true\napi_base = "{emu.base_url}"\nmonthly_quota = 100000\n',
                              encoding="utf-8")
            app = Superfan(config, emu)
            await app.start()
            await asyncio.wait_for(emu.holding.wait(), 60)  # LINE took a batch; its answer is held back
            assert app.proc is not None
            app.proc.kill()
            assert await asyncio.wait_for(app.proc.wait(), 10) == -signal.SIGKILL
            emu.release()
            taken = len(emu.delivered)
            assert taken >= 300, "no batch was accepted before the kill: nothing was tested"
            assert statuses(db, "outbox")["sending"], "the kill interrupted no send: nothing was tested"

            restarted = Superfan(config, emu)
            await restarted.start()
            for _ in range(1500):  # the batches the kill did not reach go out (the drainer wakes every 2 s)
                if not statuses(db, "outbox")["pending"]:
                    break
                await asyncio.sleep(0.02)
            assert await restarted.stop(signal.SIGTERM) == 0

            # A batch the kill left "sending" is handed back once surely dead (two minutes on):
            # played with a later clock instead of waiting. It goes again under the same retry key.
            later = utcnow() + timedelta(minutes=3)
            sender = LineSender(emu.base_url, emu.access_token, monthly_quota=100_000, timezone="Asia/Taipei")
            await sender.start()
            try:
                async with sessions.begin() as s:
                    assert await outbox.recover_interrupted(s, "line", later)
                handler = LineOutboxSender(sender, clock=lambda: later, drops=DropViews(sessions, DropRules()))
                await OutboxDrainer("line", session_transact(sessions), handler, clock=lambda: later).drain_once()
            finally:
                await sender.close()

            assert any(c.status == 409 for c in emu.calls), "the held batch was never retried under its key"
            assert emu.received() == Counter({line_id(n): 1 for n in range(ELIGIBLE)})  # ineligible: 0
            assert len([c for c in emu.calls if c.path.endswith("multicast") and c.status == 200]) == 3
        assert statuses(db, "outbox") == Counter({"sent": 3})
        assert statuses(db, "deliveries") == Counter({"sent": ELIGIBLE})
        assert statuses(db, "drops") == Counter({"finished": 1})
    finally:
        await engine.dispose()
