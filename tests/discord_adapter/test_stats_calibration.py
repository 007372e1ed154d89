"""``/stats``'s calibration field: today's score histogram and who is about to reach the next tier,
in the staff member's language (the view itself: tests/crm/test_tier_calibration.py)."""

from __future__ import annotations

import re

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_adapter.conftest import FAN, FAN2, STAFF, embed_text, slash


async def test_stats_shows_the_histogram_and_the_rising_fans(emu: DiscordEmulator, bot: SuperfanBot,
                                                             crm: Crm) -> None:
    await slash(emu, "log", STAFF, member=FAN, kind="purchase", amount=800.0)  # 5 + 4 points: 9 of 10
    await slash(emu, "log", STAFF, member=FAN2, kind="purchase", amount=12000.0)  # 65 points: a true fan
    text = embed_text(await slash(emu, "stats", STAFF))
    assert "Today's scores by tier (points)" in text
    lines = text.splitlines()
    assert any(re.fullmatch(r"Passer-by +7\.5–10 █+ 1", line) for line in lines), text
    assert any(re.fullmatch(r"True fan +60–82\.5 █+ 1", line) for line in lines), text
    assert not any(re.search(r"Fan +10–22\.5", line) for line in lines)  # empty bins are left out
    assert "Fans per tier: Passer-by 1, Fan 0, True fan 1, Close friend 0" in text
    assert re.search(r"#\d+ 小慧: Passer-by → Fan, 9\.0 of 10", text), text
    zh = embed_text(await slash(emu, "stats", STAFF, locale="zh-TW"))
    assert "今天的分數分布（依等級，單位：分）" in zh and re.search(r"#\d+ 小慧：路人 → 粉絲，9\.0 / 10", zh), zh
