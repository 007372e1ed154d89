"""Looking fans up the way a creator types: ids, platform ids, names (CJK, full-width, fuzzy)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.display_names import profile_due, profiles_due, refresh_profile, refresh_profiles
from crm.errors import AmbiguousFan, FanNotFound
from crm.fan_actions import ensure_fan
from crm.identity import fan_by_identity, find_fan
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Identity


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


# profiles fetched from a platform (LINE's profile API): refresh_profile / profile_due

async def _names(s, platform, external_id):
    fan = await fan_by_identity(s, platform, external_id)
    ident = (await s.execute(select(Identity).where(Identity.platform == platform,
                                                    Identity.external_id == external_id))).scalar_one()
    return fan.display_name, ident.display_name, ident.name_key, ident.profile_refreshed_at


async def test_a_fetched_name_replaces_the_placeholder_and_the_fan_follows(sessions, settings, now):
    async with sessions.begin() as s:
        await ensure_fan(s, settings, platform="line", external_id="U000abc123", display_name=None, now=now)
    async with sessions() as s:
        assert await profile_due(s, "line", "U000abc123", now, timedelta(hours=24)) is True
    async with sessions.begin() as s:
        await refresh_profile(s, settings, platform="line", external_id="U000abc123", display_name="ＭＩＫＡ",
                              now=now)
    async with sessions() as s:
        assert await _names(s, "line", "U000abc123") == ("ＭＩＫＡ", "ＭＩＫＡ", "mika", now)
        assert await find_fan(s, "mika")  # name_key kept in step: the new name is searchable
        assert await profile_due(s, "line", "U000abc123", now + timedelta(hours=23), timedelta(hours=24)) is False
        assert await profile_due(s, "line", "U000abc123", now + timedelta(hours=24), timedelta(hours=24)) is True


async def test_a_fetched_name_leaves_a_name_that_came_from_elsewhere(sessions, settings, now, people):
    async with sessions.begin() as s:
        fan = await fan_by_identity(s, "line", "Uming")
        fan.display_name = "阿明 (staff)"
    async with sessions.begin() as s:
        await refresh_profile(s, settings, platform="line", external_id="Uming", display_name="明明",
                              now=now)
        await refresh_profile(s, settings, platform="line", external_id="Uhui", display_name="小慧慧",
                              now=now)
    async with sessions() as s:
        assert (await _names(s, "line", "Uming"))[:2] == ("阿明 (staff)", "明明")
        assert (await _names(s, "line", "Uhui"))[:2] == ("小慧慧", "小慧慧")  # it followed the identity


async def test_unknown_and_opted_out_fans_are_never_refreshed(sessions, settings, now, people):
    async with sessions() as s:
        assert await profile_due(s, "line", "Unobody", now, timedelta(hours=24)) is None
    async with sessions.begin() as s:
        await refresh_profile(s, settings, platform="line", external_id="Unobody", display_name="Ghost", now=now)
        fan = await fan_by_identity(s, "line", "Ujoy")
        fan.opted_out = True
    async with sessions() as s:
        assert await fan_by_identity(s, "line", "Unobody") is None  # a late answer creates no fan
        assert await profile_due(s, "line", "Ujoy", now, timedelta(hours=24)) is False
    async with sessions.begin() as s:
        await refresh_profile(s, settings, platform="line", external_id="Ujoy", display_name="Joy", now=now)
    async with sessions() as s:
        assert await _names(s, "line", "Ujoy") == ("Joyce Lin", "Joyce Lin", "joycelin", None)


async def test_many_profiles_are_checked_and_stored_at_once(sessions, settings, now, people):
    """A burst of new fans: one read says who is due, one call stores every fetched name."""
    day = timedelta(hours=24)
    async with sessions.begin() as s:
        await refresh_profile(s, settings, platform="line", external_id="Uming", display_name="明明", now=now)
        fan = await fan_by_identity(s, "line", "Ujoy")
        fan.opted_out = True
    async with sessions() as s:
        due = await profiles_due(s, "line", ["Uhui", "Uming", "Ujoy", "Unobody"], now + timedelta(hours=1), day)
    assert due == {"Uhui": True, "Uming": False, "Ujoy": False}  # no identity, no answer: asked again later
    later = now + timedelta(hours=2)
    async with sessions.begin() as s:
        await refresh_profiles(s, settings, platform="line", now=later,
                               names={"Uhui": "小慧慧", "Ujoy": "Joy", "Unobody": "Ghost", "Uming": None})
    async with sessions() as s:
        assert await _names(s, "line", "Uhui") == ("小慧慧", "小慧慧", "小慧慧", later)
        assert await _names(s, "line", "Ujoy") == ("Joyce Lin", "Joyce Lin", "joycelin", None)  # opted out
        assert await fan_by_identity(s, "line", "Unobody") is None
        assert (await _names(s, "line", "Uming"))[1:] == ("明明", "明明", later)  # no name given: only the time
        assert await profiles_due(s, "line", ["Uhui", "Uming"], later + day - timedelta(seconds=1), day) == {
            "Uhui": False, "Uming": False}
