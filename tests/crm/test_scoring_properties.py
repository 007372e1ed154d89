"""Properties of the score and tiers, checked by hypothesis on pure functions and the database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.scoring import Allowance, ScoringRules, base_term, decayed, score_at
from crm.tiers import TierRules

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 22, tzinfo=UTC)
H = 90.0

events = st.lists(
    st.tuples(st.floats(min_value=0, max_value=50, allow_nan=False), st.integers(min_value=0, max_value=3 * 365 * 86400)),
    min_size=1, max_size=60,
)


@given(events, st.randoms(use_true_random=False))
def test_decayed_score_equals_naive_sum_in_any_arrival_order(evts, rnd):
    shuffled = list(evts)
    rnd.shuffle(shuffled)
    base = 0.0
    for points, age in shuffled:
        base += base_term(points, NOW - timedelta(seconds=age), EPOCH, H)
    naive = sum(p * 2 ** (-(age / 86400) / H) for p, age in evts)
    assert math.isclose(score_at(base, NOW, EPOCH, H), naive, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(sum(decayed(p, NOW - timedelta(seconds=a), NOW, H) for p, a in evts), naive,
                        rel_tol=1e-9, abs_tol=1e-9)


burst = st.lists(st.integers(min_value=0, max_value=3 * 86400), min_size=1, max_size=400)


@given(burst, st.sampled_from(["message", "reaction", "dm_in", "share", "checkin"]))
def test_daily_caps_and_cooldown_hold_for_any_burst(offsets, kind):
    rules = ScoringRules()
    allowance = Allowance(rules)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    per_day: dict[object, float] = {}
    awarded: list[datetime] = []
    for off in offsets:
        at = start + timedelta(seconds=off)
        points = allowance.award(7, kind, at.timestamp(), rules.base_points(kind, None, None))
        day = rules.local_day(at)
        per_day[day] = per_day.get(day, 0.0) + points
        if points > 0:
            awarded.append(at)
    cap = rules.daily_caps[kind]
    assert all(total <= cap + 1e-9 for total in per_day.values())
    cooldown = rules.cooldown_seconds.get(kind)
    if cooldown:
        awarded.sort()
        assert all((b - a).total_seconds() >= cooldown for a, b in zip(awarded, awarded[1:], strict=False))


@given(st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), min_size=2, max_size=200),
       st.sampled_from([10.0, 60.0, 150.0]), st.floats(min_value=0.5, max_value=5))
def test_hysteresis_never_flaps_around_a_threshold(noise, threshold, width):
    rules = TierRules()
    tier = rules.by_score(threshold - width)
    changes = 0
    # A score oscillating within ±width of a threshold: at most one promotion, and a demotion
    # only once it fell below demote_fraction of the tier's threshold.
    for n in noise:
        score = threshold + (n % (2 * width)) - width
        new = rules.evaluate(tier, score)
        if new != tier:
            changes += 1
            if rules.rank(new) < rules.rank(tier):
                assert score < rules.get(tier).threshold * rules.demote_fraction
            tier = new
    assert changes <= 1 or width > threshold * (1 - rules.demote_fraction)


@given(st.floats(min_value=0, max_value=10_000, allow_nan=False),
       st.sampled_from(["passerby", "fan", "superfan", "close_friend"]),
       st.sampled_from(["passerby", "fan", "superfan", "close_friend"]))
def test_pins_win_over_any_score(score, current, pinned):
    assert TierRules().evaluate(current, score, pinned) == pinned


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["message", "share", "purchase", "checkin"]),
                          st.integers(min_value=0, max_value=200 * 86400)), min_size=1, max_size=25),
       st.randoms(use_true_random=False))
async def test_stored_score_is_exact_for_out_of_order_imports(sessions, settings, now, evts, rnd):
    """Record a history in random order: the fan's score equals Σ stored points · 2^(−age/H)."""
    from decimal import Decimal

    from sqlalchemy import delete, select

    from crm.ingest import record
    from crm.interaction import InteractionIn
    from crm.models import Base, Fan, Interaction

    async with sessions.begin() as s:
        for table in reversed(Base.metadata.sorted_tables):
            await s.execute(delete(table))
    items = [InteractionIn("line", "Uprop", kind, now - timedelta(seconds=age), f"p{n}",
                           amount=Decimal(500) if kind == "purchase" else None,
                           currency="TWD" if kind == "purchase" else None) for n, (kind, age) in enumerate(evts)]
    rnd.shuffle(items)
    for item in items:
        async with sessions.begin() as s:
            await record(s, item, settings, now)
    async with sessions() as s:
        fan = (await s.execute(select(Fan))).scalar_one()
        rows = (await s.execute(select(Interaction.points, Interaction.occurred_at))).all()
    naive = sum(decayed(p, at, now, settings.scoring.half_life_days) for p, at in rows)
    assert math.isclose(score_at(fan.score_base, now, EPOCH, settings.scoring.half_life_days), naive,
                        rel_tol=1e-9, abs_tol=1e-9)
