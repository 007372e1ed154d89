"""The calibration view (``superfan tiers``): histogram per tier, rising fans, trial thresholds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.tiers_cli import calibration_lines, parse_trial
from crm.errors import BadInput
from crm.ingest import record_many
from crm.tier_calibration import FanPoint, calibrate, load_points
from crm.tiers import Evidence, TierRules

RULES = TierRules()
OLD = Evidence(commitments=0, tenure_days=400, half_life_days=90)


def point(fan_id: int, name: str, tier: str, score: float, evidence: Evidence = OLD,
          pinned: str | None = None) -> FanPoint:
    return FanPoint(fan_id, name, tier, pinned, score, evidence)


FIXED = [
    point(1, "阿明", "passerby", 1.0),
    point(2, "小慧", "passerby", 9.0),  # rising to 粉絲 (9 of 10)
    point(3, "Wei", "fan", 30.0),
    point(4, "Amber", "fan", 50.0),  # rising to 鐵粉 (50 of 60)
    point(5, "新朋友", "fan", 41.0, Evidence(commitments=20, tenure_days=100, half_life_days=90)),  # pace 76
    point(6, "Kevin", "superfan", 70.0),
    point(7, "老朋友", "close_friend", 10.0, pinned="close_friend"),
]


def test_superfan_tiers_output_on_fixed_data():
    view = calibrate(FIXED, RULES, parse_trial(["True fan=45"], RULES))
    lines = calibration_lines(view, RULES, "en")
    assert lines[0] == "Today's scores by tier (points)"
    assert lines[1:3] == ["Passer-by          0–2.5 ██████████████████████████████ 1",
                          "Passer-by          2.5–5  0"]
    assert "True fan         60–82.5 ██████████████████████████████ 1" in lines
    assert "Fans per tier: Passer-by 2, Fan 3, True fan 1, Close friend 1" in lines
    rising = lines[lines.index("Rising (within 20% of the next tier):") + 1:][:2]
    assert rising == ["  #2 小慧: Passer-by → Fan, 9.0 of 10", "  #4 Amber: Fan → True fan, 50.0 of 60"]
    # today's rules already make 新朋友 a true fan (committed pace), so only Amber moves at 45
    assert lines[-2:] == ["With True fan 45: 1 fans would move", "  ↑ #4 Amber: Fan → True fan"]


def test_a_higher_trial_threshold_shows_who_would_drop():
    view = calibrate(FIXED, RULES, {"superfan": 100.0})
    assert [(m.fan_id, m.from_tier, m.to_tier) for m in view.moves] == [(5, "superfan", "fan"),
                                                                        (6, "superfan", "fan")]


def test_bad_trial_is_a_usage_error():
    for bad in ("鐵粉", "鐵粉=lots", "鐵粉=-3", "king=5"):
        with pytest.raises(BadInput):
            parse_trial([bad], RULES)


async def test_points_read_score_commitment_and_tenure(sessions, settings, now):
    from decimal import Decimal

    from crm.interaction import InteractionIn

    items = [InteractionIn("line", "U1", "checkin", now - timedelta(days=d), f"c{d}", "小慧") for d in (1, 2, 90)]
    items.append(InteractionIn("line", "U1", "purchase", now - timedelta(days=3), "o1", "小慧", amount=Decimal(1000),
                               currency="TWD"))
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    async with sessions() as s:
        (p,) = await load_points(s, settings, now)
    assert p.evidence.commitments == 3  # the check-in 90 days ago is outside the 60-day window
    assert p.evidence.tenure_days == pytest.approx(90)
    assert p.score == pytest.approx(1.5 * (2 ** (-1 / 90) + 2 ** (-2 / 90) + 2 ** (-1)) + 10 * 2 ** (-3 / 90), abs=0.01)
