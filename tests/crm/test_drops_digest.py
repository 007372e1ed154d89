"""The daily digest's drop results: per drop what was sent, failed and is pending, and the LINE
quota it used, in the JSON and in the words staff read."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.render_digest import sections
from crm.digest import build_digest
from crm.drops import DropDraft, create_drop, record_outcome
from crm.models import Outbox
from crm.settings import CrmSettings
from tests.crm.test_drops import add_fan


async def test_digest_lists_drop_results(sessions, settings: CrmSettings, now) -> None:
    async with sessions.begin() as s:
        for n in range(4):
            await add_fan(s, n, now, line="member" if n < 3 else None, discord="member" if n == 3 else None)
        made = await create_drop(s, settings, DropDraft("新歌試聽", "鐵粉", sponsored=True), now)
        old = await create_drop(s, settings, DropDraft("上個月的", "鐵粉", platforms=("discord",)),
                                now - timedelta(days=40))
    async with sessions.begin() as s:
        rows = (await s.execute(select(Outbox).order_by(Outbox.id))).scalars().all()
        for r in rows:
            if r.idempotency_key.startswith(f"drop:{made.id}:line:"):
                await record_outcome(s, r.id, sent=True, error=None, now=now)
            elif r.idempotency_key.startswith(f"drop:{old.id}:"):
                await record_outcome(s, r.id, sent=False, error="dms closed", now=now - timedelta(days=39))
    async with sessions() as s:
        digest = (await build_digest(s, settings, now + timedelta(hours=1), since=now - timedelta(days=1))).as_json()
    (entry,) = digest["drops"]  # the old one finished before `since`
    assert entry["id"] == made.id and entry["id"] != old.id
    assert (entry["sent"], entry["failed"], entry["pending"], entry["quota_used"]) == (3, 0, 1, 3)
    assert entry["tier"] == "鐵粉" and entry["sponsored"] and entry["status"] == "sending"
    words = {sec.heading: sec.lines for sec in sections(digest, "zh-TW")}
    assert words["限定內容"] == [f"#{made.id} 給鐵粉以上（送出中）：已送 3、失敗 0、待送 1，用了 LINE 額度 3 則，業配"]
