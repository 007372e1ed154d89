"""Tier changes with reasons, pins, decay over time, rescoring and community stats."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from crm.errors import BadInput
from crm.ingest import record, record_many
from crm.interaction import InteractionIn
from crm.models import Fan, Interaction, TierChange
from crm.rescore import refresh_tiers, rescore
from crm.scoring import ScoringRules
from crm.stats import community_stats
from crm.tiers import TierRules
from crm.tiers_service import pin


def buy(ext: str, n: int, at, amount: int = 2000) -> InteractionIn:
    return InteractionIn("line", ext, "purchase", at, f"{ext}-o{n}", f"fan {ext}", amount=Decimal(amount),
                         currency="TWD")


async def changes(sessions, fan_id):
    async with sessions() as s:
        rows = await s.execute(select(TierChange.from_tier, TierChange.to_tier, TierChange.reason)
                               .where(TierChange.fan_id == fan_id).order_by(TierChange.id))
        return [tuple(r) for r in rows]


async def test_buying_promotes_and_each_change_is_recorded_with_its_reason(sessions, settings, now):
    async with sessions.begin() as s:
        r = await record_many(s, [buy("U1", n, now - timedelta(days=n)) for n in range(5)], settings, now)
    fan_id = r.results[0].fan_id
    assert {(m.from_tier, m.to_tier) for m in r.tier_moves} == {("passerby", "superfan")}
    assert await changes(sessions, fan_id) == [("passerby", "superfan", "score")]


async def test_decay_demotes_a_fan_who_went_quiet(sessions, settings, now):
    async with sessions.begin() as s:
        r = await record_many(s, [buy("U2", n, now - timedelta(days=n)) for n in range(5)], settings, now)
    fan_id = r.results[0].fan_id
    async with sessions.begin() as s:
        assert await refresh_tiers(s, settings, now + timedelta(days=10)) == []  # still well above 48
    async with sessions.begin() as s:
        moves = await refresh_tiers(s, settings, now + timedelta(days=200))
    assert [(m.fan_id, m.to_tier, m.reason) for m in moves] == [(fan_id, "fan", "decay")]
    assert (await changes(sessions, fan_id))[-1] == ("superfan", "fan", "decay")


async def test_pin_holds_against_decay_and_unpin_lets_the_score_decide(sessions, settings, now):
    async with sessions.begin() as s:
        r = await record(s, InteractionIn("line", "U3", "message", now, "m", "小慧"), settings, now)
        move = await pin(s, settings, r.fan_id, "close_friend", by="creator", now=now)
    assert move is not None and move.to_tier == "close_friend" and move.reason == "pin"
    async with sessions.begin() as s:
        await refresh_tiers(s, settings, now + timedelta(days=365))
        fan = await s.get(Fan, r.fan_id)
        assert fan is not None and fan.tier == "close_friend" and fan.tier_pinned_by == "creator"
    async with sessions.begin() as s:
        move = await pin(s, settings, r.fan_id, None, by="creator", now=now)
    assert move is not None and (move.to_tier, move.reason) == ("passerby", "unpin")
    async with sessions.begin() as s:
        with pytest.raises(BadInput):
            await pin(s, settings, r.fan_id, "vip", by="creator", now=now)


async def test_spammer_earns_no_more_than_the_daily_cap(sessions, settings, now):
    start = now - timedelta(hours=20)
    flood = [InteractionIn("discord", "666", "message", start + timedelta(seconds=5 * n), f"s{n}", "免費抽獎")
             for n in range(1000)]
    async with sessions.begin() as s:
        r = await record_many(s, flood, settings, now)
    assert r.stored == 1000
    async with sessions() as s:
        points = (await s.execute(select(Interaction.points))).scalars().all()
        fan = await s.get(Fan, r.results[0].fan_id)
    assert sum(points) <= settings.scoring.daily_caps["message"] * 2 + 1e-9  # at most two local days touched
    assert fan is not None and fan.tier == "passerby"


async def test_rescore_applies_new_weights_to_history(sessions, settings, now):
    async with sessions.begin() as s:
        r = await record_many(s, [InteractionIn("line", "U4", "share", now - timedelta(days=d), f"sh{d}", "A")
                                  for d in range(1, 6)], settings, now)
    fan_id = r.results[0].fan_id
    heavier = replace(settings, scoring=replace(settings.scoring, weights={**settings.scoring.weights, "share": 40.0},
                                                daily_caps={}))
    async with sessions.begin() as s:
        result = await rescore(s, heavier, now)
    assert result.interactions == 5 and result.changed_points == 5
    assert [(m.to_tier, m.reason) for m in result.tier_moves] == [("close_friend", "rescore")]
    async with sessions() as s:
        assert set((await s.execute(select(Interaction.points))).scalars()) == {40.0}
        fan = await s.get(Fan, fan_id)
        assert fan is not None and fan.tier == "close_friend"
    async with sessions.begin() as s:
        again = await rescore(s, heavier, now)
    assert again.changed_points == 0 and again.tier_moves == []


async def test_stats_count_true_fans_against_the_income_goal(sessions, settings, now):
    from crm.settings import TrueFanGoal

    goal = replace(settings, goal=TrueFanGoal(income=456_000, yearly_spend_per_fan=1_000))
    async with sessions.begin() as s:
        await record_many(s, [buy(f"U{f}", n, now - timedelta(days=n)) for f in range(3) for n in range(5)],
                          goal, now)
        await record(s, InteractionIn("line", "Ux", "message", now, "x", "路過"), goal, now)
    async with sessions() as s:
        data = await community_stats(s, goal, now, top=2)
    assert data["true_fans"]["count"] == 3 and data["true_fans"]["goal"] == 456
    assert {t["key"]: t["count"] for t in data["tiers"]} == {"passerby": 1, "fan": 0, "superfan": 3,
                                                             "close_friend": 0}
    assert len(data["top"]) == 2 and data["top"][0]["tier"] == "鐵粉"


def test_tier_names_resolve_in_both_languages():
    rules = TierRules()
    assert rules.resolve("鐵粉") == rules.resolve("True fan") == rules.resolve("SUPERFAN") == "superfan"
    with pytest.raises(BadInput):
        rules.resolve("VIP")
    assert ScoringRules().base_points("purchase", Decimal(1000), "twd") == pytest.approx(10.0)
