"""How the digest reads: waits in hours as a person says them, not to the hundredth."""

from __future__ import annotations

from bot.render_digest import sections
from crm.digest import build_digest


async def test_waits_read_in_whole_hours_from_ten_on_and_one_decimal_below(sessions, settings, now) -> None:
    async with sessions() as s:
        digest = (await build_digest(s, settings, now)).as_json()
    waiting = {"display_name": "Vicky", "tier": "鐵粉", "platform": "discord", "overdue": True,
               "hours_waiting": 25.07, "due_at": "2026-12-07T17:54:00+08:00"}
    digest["unanswered"] = [waiting, {**waiting, "display_name": "柏翰", "overdue": False, "hours_waiting": 4.14}]
    digest["counts"] = {**digest["counts"], "unanswered": 2, "overdue": 1}
    digest["sla"] = {**digest["sla"], "median_first_response_hours": 16.51}
    words = {sec.heading: sec.lines for sec in sections(digest, "zh-TW")}
    assert words["待回覆：2 位（已逾時 1 位）"] == ["⚠️ Vicky（鐵粉，Discord）等了 25 小時，12-07 17:54 前要回覆",
                                               "柏翰（鐵粉，Discord）等了 4.1 小時，12-07 17:54 前要回覆"]
    (promise,) = next(lines for heading, lines in words.items() if heading.startswith("回覆承諾"))
    assert "首次回覆中位數 17 小時" in promise
