"""Looking fans up the way a creator types: ids, platform ids, names (CJK, full-width, fuzzy)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm.errors import AmbiguousFan, FanNotFound
from crm.identity import find_fan
from crm.ingest import InteractionIn, record_many


@pytest.fixture
async def people(sessions, settings, now):
    at = now - timedelta(days=1)
    names = [("line", "Uhui", "小慧"), ("discord", "111", "ｘｉａｏ"), ("discord", "222", "阿明"),
             ("line", "Uming", "阿明"), ("line", "Ujoy", "Joyce Lin")]
    items = [InteractionIn(p, e, "message", at, f"{p}-{e}", n) for p, e, n in names]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
    return {n[1]: r.fan_id for n, r in zip(names, result.results, strict=True)}


async def test_lookup_by_id_and_platform_identity(sessions, people):
    async with sessions() as s:
        assert (await find_fan(s, str(people["Uhui"]))).id == people["Uhui"]
        assert (await find_fan(s, f"#{people['Uhui']}")).id == people["Uhui"]
        assert (await find_fan(s, "line:Uhui")).id == people["Uhui"]
        assert (await find_fan(s, "discord:111")).display_name == "ｘｉａｏ"


async def test_exact_cjk_name(sessions, people):
    async with sessions() as s:
        assert (await find_fan(s, "小慧")).id == people["Uhui"]


@pytest.mark.parametrize("typed", ["xiao", "XIAO", "ｘｉａｏ", " Xiao "])
async def test_width_and_case_insensitive_names(sessions, people, typed):
    async with sessions() as s:
        assert (await find_fan(s, typed)).id == people["111"]


async def test_substring_and_fuzzy_names(sessions, people):
    async with sessions() as s:
        assert (await find_fan(s, "joyce")).id == people["Ujoy"]
        assert (await find_fan(s, "Joice Lin")).id == people["Ujoy"]  # a typo still finds her


async def test_ambiguous_name_lists_the_candidates(sessions, people):
    async with sessions() as s:
        with pytest.raises(AmbiguousFan) as info:
            await find_fan(s, "阿明")
    assert {fid for fid, _ in info.value.candidates} == {people["222"], people["Uming"]}


async def test_unknown_fan(sessions, people):
    async with sessions() as s:
        with pytest.raises(FanNotFound):
            await find_fan(s, "line:Unobody")
        with pytest.raises(FanNotFound):
            await find_fan(s, "完全不存在的人")
