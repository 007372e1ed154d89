"""Names that several fans share: the list tells them apart, best match first; lookups stay on the name keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.i18n.errors import error_text
from crm.errors import AmbiguousFan
from crm.identity import find_fan
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan


@pytest.fixture
async def namesakes(sessions, settings, now):
    """Two 阿明 (LINE 鐵粉 seen yesterday, Discord 路人 seen 40 days ago), a fan who is 小美 only on
    one account, and a 阿明明."""
    rows = [("line", "Uming", "阿明", 1), ("discord", "222", "阿明", 40), ("line", "Umei", "Mei", 3),
            ("line", "Umm", "阿明明", 2)]
    items = [InteractionIn(p, e, "message", now - timedelta(days=ago), f"{p}-{e}", n) for p, e, n, ago in rows]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
        ids = {e: r.fan_id for (_, e, _, _), r in zip(rows, result.results, strict=True)}
        await s.execute(update(Fan).where(Fan.id == ids["Uming"]).values(tier="superfan", score_base=500.0))
        await s.execute(update(Fan).where(Fan.id == ids["Umei"]).values(display_name="小美", name_key="小美"))
    return ids


async def test_namesakes_are_told_apart_by_platform_tier_and_last_seen(sessions, settings, now, namesakes):
    async with sessions() as s:
        with pytest.raises(AmbiguousFan) as caught:
            await find_fan(s, "阿明", settings=settings)
    assert [fid for fid, _ in caught.value.candidates] == [namesakes["Uming"], namesakes["222"]]  # 鐵粉 first
    seen = (now - timedelta(days=1)).astimezone(settings.scoring.tz).date().isoformat()
    old = (now - timedelta(days=40)).astimezone(settings.scoring.tz).date().isoformat()
    zh = error_text(caught.value, "zh-TW")
    assert zh == (f"「阿明」符合多位粉絲，請改用編號指定（例如 #12）：#{namesakes['Uming']} 阿明（line・鐵粉・最後出現 {seen}）、"
                  f"#{namesakes['222']} 阿明（discord・路人・最後出現 {old}）")
    assert error_text(caught.value, "en").endswith(
        f"#{namesakes['Uming']} 阿明 (line, True fan, last seen {seen}), "
        f"#{namesakes['222']} 阿明 (discord, Passer-by, last seen {old})")


async def test_an_exact_name_wins_over_a_longer_one_and_an_identity_name_finds_its_fan(sessions, namesakes):
    async with sessions() as s:
        assert (await find_fan(s, "阿明明")).id == namesakes["Umm"]  # not ambiguous with the two 阿明
        assert (await find_fan(s, "mei")).id == namesakes["Umei"]  # the LINE account's own name
        assert (await find_fan(s, "小美")).id == namesakes["Umei"]
        assert (await find_fan(s, "Ｍｅｉ")).id == namesakes["Umei"]  # width and case folded


async def test_a_substring_or_a_typo_finds_the_one_fan_it_fits(sessions, settings, now):
    names = [f"Joyce Lin {n}" if n == 7 else f"粉絲{n}" for n in range(30)]
    items = [InteractionIn("line", f"U{n}", "message", now - timedelta(hours=n), f"e{n}", name)
             for n, name in enumerate(names)]
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    async with sessions() as s:
        assert (await find_fan(s, "joyce")).display_name == "Joyce Lin 7"
        assert (await find_fan(s, "Joice Lin 7")).display_name == "Joyce Lin 7"


async def test_a_typo_in_the_first_character_still_finds_the_fan(sessions, settings, now):
    """Fuzzy candidates come from indexes: the key's first character, or (a typo there) its second."""
    names = ["Mandy_12", "Kevin_77", "Andy Wu", "小慧", "Ray_3"] + [f"粉絲{n}" for n in range(20)]
    items = [InteractionIn("line", f"U{n}", "message", now - timedelta(hours=n), f"e{n}", name)
             for n, name in enumerate(names)]
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    async with sessions() as s:
        assert (await find_fan(s, "Xandy_12")).display_name == "Mandy_12"  # first character wrong
        assert (await find_fan(s, "Mandx_12")).display_name == "Mandy_12"  # a later one
        assert (await find_fan(s, "Kevim_77")).display_name == "Kevin_77"
        assert (await find_fan(s, "xKevin_77")).display_name == "Kevin_77"  # one character typed first
