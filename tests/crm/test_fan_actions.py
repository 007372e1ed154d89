"""Check-ins, event codes, account linking and referrals, as fans use them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.errors import BadInput
from crm.fan_actions import (
    checkin,
    create_event,
    ensure_fan,
    fan_by_referral_code,
    issue_link_code,
    primary_identity,
    redeem_link_code,
    redeem_referral,
    referral_code,
)
from crm.identity import fan_by_identity
from crm.models import Fan, Interaction


async def _checkin(sessions, settings, now, at, **kw):
    async with sessions.begin() as s:
        return await checkin(s, settings, platform="line", external_id="Uc", display_name="小慧", at=at, now=now,
                             source_event_id=f"ev-{at.isoformat()}", **kw)


async def test_one_checkin_per_local_day_and_streak(sessions, settings, now):
    # 2026-11-20 23:30 and 2026-11-21 00:30 Taipei are two local days although < 1 h apart.
    day1 = now.replace(hour=15, minute=30) - timedelta(days=2)
    r1 = await _checkin(sessions, settings, now, day1)
    r2 = await _checkin(sessions, settings, now, day1 + timedelta(minutes=10))
    r3 = await _checkin(sessions, settings, now, day1 + timedelta(hours=1))
    r4 = await _checkin(sessions, settings, now, day1 + timedelta(days=1, hours=2))
    assert [r.status for r in (r1, r2, r3, r4)] == ["checked_in", "already", "checked_in", "checked_in"]
    assert [r.streak for r in (r1, r3, r4)] == [1, 2, 3]
    async with sessions() as s:
        kinds = (await s.execute(select(Interaction.kind))).scalars().all()
    assert kinds.count("checkin") == 3


async def test_event_code_checks_in_once_per_event(sessions, settings, now):
    async with sessions.begin() as s:
        await create_event(s, code="tpe1122", name="台北粉絲聚", starts_at=now - timedelta(hours=1),
                           ends_at=now + timedelta(hours=2))
    first = await _checkin(sessions, settings, now, now, code="ＴＰＥ1122")
    again = await _checkin(sessions, settings, now, now + timedelta(minutes=5), code="tpe1122")
    wrong = await _checkin(sessions, settings, now, now, code="NOPE")
    assert (first.status, first.event_name) == ("checked_in", "台北粉絲聚")
    assert again.status == "already" and wrong.status == "unknown_code"


async def test_link_code_merges_discord_and_line(sessions, settings, now):
    async with sessions.begin() as s:
        discord_fan = await ensure_fan(s, settings, platform="discord", external_id="42", display_name="Hui",
                                       now=now)
        code = await issue_link_code(s, discord_fan, platform="discord", now=now)
        await checkin(s, settings, platform="line", external_id="Ulink", display_name="小慧", at=now, now=now,
                      source_event_id="x")
    async with sessions.begin() as s:
        kept = await redeem_link_code(s, settings, code.lower(), platform="line", external_id="Ulink",
                                      display_name="小慧", now=now + timedelta(minutes=3))
    assert kept == discord_fan
    async with sessions() as s:
        fan = await fan_by_identity(s, "line", "Ulink")
        assert fan is not None and fan.id == discord_fan
        assert len((await s.execute(select(Fan))).all()) == 1
    async with sessions.begin() as s:
        with pytest.raises(BadInput, match="already used"):
            await redeem_link_code(s, settings, code, platform="line", external_id="Ulink", display_name=None,
                                   now=now)


async def test_link_code_expires_after_ten_minutes(sessions, settings, now):
    async with sessions.begin() as s:
        fan = await ensure_fan(s, settings, platform="discord", external_id="43", display_name="A", now=now)
        code = await issue_link_code(s, fan, platform="discord", now=now)
    async with sessions.begin() as s:
        with pytest.raises(BadInput, match="expired"):
            await redeem_link_code(s, settings, code, platform="line", external_id="Ux", display_name=None,
                                   now=now + timedelta(minutes=11))


async def test_referral_credits_owner_once_and_never_self(sessions, settings, now):
    async with sessions.begin() as s:
        owner = await ensure_fan(s, settings, platform="discord", external_id="7", display_name="Owner",
                                 now=now - timedelta(days=60))
        code = await referral_code(s, owner)
        assert await referral_code(s, owner) == code
    async with sessions.begin() as s:
        with pytest.raises(BadInput, match="own"):
            await redeem_referral(s, settings, code, platform="discord", external_id="7", display_name=None,
                                  at=now, now=now, source_event_id="r0")
    async with sessions.begin() as s:
        assert await redeem_referral(s, settings, code, platform="line", external_id="Unew", display_name="新朋友",
                                     at=now, now=now, source_event_id="r1") == owner
    async with sessions.begin() as s:
        with pytest.raises(BadInput, match="already"):
            await redeem_referral(s, settings, code, platform="line", external_id="Unew", display_name=None,
                                  at=now, now=now, source_event_id="r2")
    async with sessions() as s:
        rows = (await s.execute(select(Interaction.fan_id, Interaction.kind, Interaction.points))).all()
    assert [(f, k) for f, k, _ in rows] == [(owner, "referral")] and rows[0][2] == settings.scoring.weights["referral"]


async def test_referral_codes_are_found_however_they_are_typed(sessions, settings, now):
    async with sessions.begin() as s:
        owner = await ensure_fan(s, settings, platform="discord", external_id="7", display_name="Owner", now=now)
        await ensure_fan(s, settings, platform="line", external_id="U7", display_name=None, now=now)
        code = await referral_code(s, owner)
    full_width = code.lower().translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    async with sessions() as s:
        for typed in (code, code.lower(), f"  {code} ", full_width):
            assert await fan_by_referral_code(s, typed) == owner, typed
        for unknown in ("NOSUCH", "", "   "):
            assert await fan_by_referral_code(s, unknown) is None


async def test_primary_identity_is_the_oldest_and_survives_a_link(sessions, settings, now):
    async with sessions.begin() as s:
        discord = await ensure_fan(s, settings, platform="discord", external_id="7", display_name="Owner", now=now)
        code = await issue_link_code(s, discord, platform="discord", now=now)
        await redeem_link_code(s, settings, code, platform="line", external_id="U7", display_name=None, now=now)
    async with sessions() as s:
        assert await primary_identity(s, discord) == ("discord", "7")
        assert await primary_identity(s, discord + 1000) is None

