"""The calibration view (``superfan tiers``, ``/stats``): histogram per tier, rising fans, trial
thresholds. It is read from index ranges and the few fans near a threshold; every figure must equal
what evaluating every fan one by one gives (``every_fan_view`` below, the view as it was first built)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.tiers_cli import calibration_lines, parse_trial
from crm import tier_calibration
from crm.errors import BadInput
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan, Interaction, table
from crm.score_bounds import base_at_least
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.tier_calibration import (
    BINS_PER_TIER,
    RISING_WITHIN,
    Bin,
    Calibration,
    Move,
    Rising,
    below_threshold,
    calibrate,
    with_thresholds,
)
from crm.tiers import Evidence, TierRules
from crm.tiers_service import commitment_counts, tenure_days

RULES = TierRules()
DAY = timedelta(days=1)
Sessions = async_sessionmaker[AsyncSession]


# the reference: every fan loaded and evaluated one by one

async def every_fan_view(session: AsyncSession, settings: CrmSettings, now: datetime,
                         trial: Mapping[str, float] | None = None, rising_limit: int = 10) -> Calibration:
    rules = settings.tiers
    state, divisor = await current_scores(session, settings.scoring, now)
    rows = (await session.execute(select(Fan.id, Fan.display_name, Fan.tier, Fan.tier_pinned, Fan.score_base,
                                         Fan.first_seen_at).order_by(Fan.id))).all()
    counts_of = await commitment_counts(session, settings, [int(r[0]) for r in rows], now)
    points = [(int(fid), name, tier, pinned, float(base) / divisor,
               Evidence(counts_of.get(int(fid), 0), tenure_days(first, now), state.half_life_days))
              for fid, name, tier, pinned, base, first in rows]
    counts = {key: 0 for key in rules.keys}
    for p in points:
        counts[rules.get(p[2]).key] += 1
    edges: list[tuple[str, float, float | None]] = []
    for i, tier in enumerate(rules.tiers):
        high = rules.tiers[i + 1].threshold if i + 1 < len(rules.tiers) else max(2 * tier.threshold, 1.0)
        step = (high - tier.threshold) / BINS_PER_TIER
        edges += [(tier.key, tier.threshold + k * step, tier.threshold + (k + 1) * step) for k in range(BINS_PER_TIER)]
    edges.append((rules.tiers[-1].key, max(2 * rules.tiers[-1].threshold, 1.0), None))
    in_bin = [0] * len(edges)
    for p in points:
        for n, (_key, low, upper) in enumerate(edges):
            if p[4] >= low and (upper is None or p[4] < upper):
                in_bin[n] += 1
                break
    bins = [Bin(key, round(low, 1), None if upper is None else round(upper, 1), c)
            for (key, low, upper), c in zip(edges, in_bin, strict=True)]
    rising = []
    for fid, name, tier, pinned, score, evidence in points:
        if pinned is not None or rules.rank(tier) + 1 >= len(rules.tiers):
            continue
        nxt = rules.tiers[rules.rank(tier) + 1]
        value = score
        if rules.gated(nxt.key) and rules.committed(evidence):
            value = max(value, evidence.pace(score))
        if nxt.threshold * (1 - RISING_WITHIN) <= value < nxt.threshold:
            rising.append(Rising(fid, name, tier, nxt.key, below_threshold(value, nxt.threshold), nxt.threshold))
    rising.sort(key=lambda r: (-r.value / r.threshold, r.fan_id))
    moves = []
    if trial:
        tried = with_thresholds(rules, trial)
        for fid, name, tier, pinned, score, evidence in points:
            today = rules.evaluate(tier, score, pinned, evidence)
            target = tried.evaluate(tier, score, pinned, evidence)
            if target != today:
                moves.append(Move(fid, name, today, target))
        moves.sort(key=lambda m: (-tried.rank(m.to_tier) + tried.rank(m.from_tier), m.fan_id))
    return Calibration(counts, bins, rising[:rising_limit], dict(trial or {}), moves)


# communities written straight into the tables

async def add_fans(sessions: Sessions, settings: CrmSettings, now: datetime, fans: list[dict[str, Any]]) -> None:
    """Fans with a given ``score`` (or ``base``), ``tenure`` in days and ``commitments`` in the window."""
    async with sessions() as s:
        _, divisor = await current_scores(s, settings.scoring, now)
    rows, interactions = [], []
    for fan in fans:
        base = fan["base"] if "base" in fan else fan["score"] * divisor
        rows.append({"id": fan["id"], "display_name": fan.get("name", f"fan {fan['id']}"),
                     "name_key": f"fan {fan['id']}", "opted_out": False, "score_base": base,
                     "tier": fan["tier"], "tier_pinned": fan.get("pinned"),
                     "first_seen_at": now - fan.get("tenure", 400) * DAY, "last_seen_at": now})
        window = settings.tiers.commitment_days
        count = fan.get("commitments", 0)
        for n in range(count):  # inside the window, every one earned points
            interactions.append(("purchase", now - window * DAY * (n + 1) / (count + 1), 10.0, fan["id"]))
        for kind, at, points in (("purchase", now - (window + 1) * DAY, 10.0), ("share", now - DAY, 0.0),
                                 ("message", now - DAY, 0.45)):  # outside, unawarded, not a commitment
            interactions.append((kind, at, points, fan["id"]))
    async with sessions.begin() as s:
        await s.execute(insert(table(Fan)), rows)
        await s.execute(insert(table(Interaction)), [
            {"fan_id": fid, "platform": "line", "kind": kind, "occurred_at": at, "recorded_at": now, "points": pts,
             "source_event_id": f"e{n}"} for n, (kind, at, pts, fid) in enumerate(interactions)])


async def both_views(sessions: Sessions, settings: CrmSettings, now: datetime,
                     trial: Mapping[str, float] | None = None, rising_limit: int = 10) -> tuple[Any, Any]:
    async with sessions() as s:
        view = await calibrate(s, settings, now, trial, rising_limit=rising_limit)
        reference = await every_fan_view(s, settings, now, trial, rising_limit)
    return asdict(view), asdict(reference)


FIXED = [
    {"id": 1, "name": "阿明", "tier": "passerby", "score": 1.0},
    {"id": 2, "name": "小慧", "tier": "passerby", "score": 9.0},  # rising to 粉絲 (9 of 10)
    {"id": 3, "name": "Wei", "tier": "fan", "score": 30.0},
    {"id": 4, "name": "Amber", "tier": "fan", "score": 50.0},  # rising to 鐵粉 (50 of 60)
    {"id": 5, "name": "新朋友", "tier": "fan", "score": 41.0, "commitments": 20, "tenure": 100},  # pace 76
    {"id": 6, "name": "Kevin", "tier": "superfan", "score": 70.0},
    {"id": 7, "name": "老朋友", "tier": "close_friend", "score": 10.0, "pinned": "close_friend"},
]


async def test_superfan_tiers_output_on_fixed_data(sessions, settings, now):
    await add_fans(sessions, settings, now, FIXED)
    async with sessions() as s:
        view = await calibrate(s, settings, now, parse_trial(["True fan=45"], RULES))
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


async def test_a_higher_trial_threshold_shows_who_would_drop(sessions, settings, now):
    await add_fans(sessions, settings, now, FIXED)
    async with sessions() as s:
        view = await calibrate(s, settings, now, {"superfan": 100.0})
    assert [(m.fan_id, m.name, m.from_tier, m.to_tier) for m in view.moves] == [
        (5, "新朋友", "superfan", "fan"), (6, "Kevin", "superfan", "fan")]


def test_bad_trial_is_a_usage_error():
    for bad in ("鐵粉", "鐵粉=lots", "鐵粉=-3", "king=5"):
        with pytest.raises(BadInput):
            parse_trial([bad], RULES)
    fan = RULES.tiers[1]
    with pytest.raises(BadInput) as below:  # the trial would put 鐵粉 under 粉絲: no longer a ladder
        parse_trial([f"鐵粉={fan.threshold / 2:g}"], RULES)
    assert below.value.code == "tiers.trial_order"
    assert f"{RULES.name(fan.key)} {fan.threshold:g} < {RULES.name('superfan')} {fan.threshold / 2:g}" \
        in below.value.params["order"]


def test_a_score_reaches_a_bound_exactly_when_its_base_reaches_the_base_bound():
    rng = random.Random(7)
    for _ in range(2000):
        divisor = 2.0 ** rng.uniform(-3, 40)
        score = rng.choice([0.0, 10.0, 48.0, 60.0, 150.0 * 0.8, rng.uniform(0, 500)])
        bound = base_at_least(score, divisor)
        assert bound / divisor >= score and math.nextafter(bound, -math.inf) / divisor < score
        for base in (bound, math.nextafter(bound, math.inf), score * divisor, rng.uniform(0, 2 * bound + 1)):
            assert (base / divisor >= score) == (base >= bound)


EDGE_TENURES = (0.0, 10.0, 44.999, 45.0, 45.001, 60.0, 100.0, 180.0, 365.0, 1000.0)


def generated_community(rules: TierRules, divisor: float, seed: int, size: int = 400) -> list[dict[str, Any]]:
    """Fans at and around every threshold, demotion point, rising edge, bin edge and pace edge,
    plus random ones; some pinned, some at a tier the config no longer has."""
    rng = random.Random(seed)
    marks = []
    for tier in rules.tiers:
        marks += [tier.threshold, tier.threshold * rules.demote_fraction, tier.threshold * (1 - RISING_WITHIN)]
    marks += [40.0, 45.0, 50.0, 55.0, 100.0, 2.5, 22.5, 82.5, 300.0, 5.0, 12.0, 120.0]
    fans = []
    gated = rules.get(rules.true_fan_tier)
    paces = [gated.threshold, gated.threshold * (1 - RISING_WITHIN), gated.threshold * rules.demote_fraction,
             45.0, 50.0, 55.0, 100.0, 120.0]
    for tenure in EDGE_TENURES:  # committed or nearly, at a pace on a mark, at each tier near the gated one
        share = 1.0 - 2.0 ** (-tenure / 90.0)
        for pace in paces:
            for tier in rules.keys[max(0, rules.rank(gated.key) - 1):rules.rank(gated.key) + 2]:
                for commitments in (rules.commitment_actions - 1, rules.commitment_actions):
                    fans.append({"id": size + len(fans) + 1, "tenure": tenure, "tier": tier, "commitments": commitments,
                                 "base": pace * share * divisor * rng.choice([1.0, 1 - 1e-12, 1 + 1e-12])})
    for fan_id in range(1, size + 1):
        tenure = rng.choice(EDGE_TENURES)
        how = rng.random()
        if how < 0.25:
            base = base_at_least(rng.choice(marks), divisor)  # the least score that reaches the mark
            base = rng.choice([base, math.nextafter(base, -math.inf), math.nextafter(base, math.inf)])
        elif how < 0.45:  # the committed pace at a mark
            share = 1.0 - 2.0 ** (-tenure / 90.0)
            base = rng.choice(marks) * share * divisor * rng.choice([1.0, 1 - 1e-12, 1 + 1e-12])
        elif how < 0.5:
            base = 0.0
        else:
            base = rng.uniform(0, 250) * divisor
        fans.append({"id": fan_id, "base": base, "tenure": tenure,
                     "tier": rng.choice([*rules.keys, rules.lowest, "retired_tier"]),
                     "pinned": rng.choice(rules.keys) if rng.random() < 0.06 else None,
                     "commitments": rng.choice([0, 0, 1, rules.commitment_actions - 1, rules.commitment_actions, 9])})
    return fans


TRIALS: list[dict[str, float]] = [
    {"superfan": 50.0}, {"superfan": 100.0}, {"fan": 5.0}, {"fan": 12.0, "close_friend": 120.0},
    {"passerby": 3.0}, {"fan": 9.5, "superfan": 55.0, "close_friend": 200.0}, {"close_friend": 60.5},
]


@pytest.mark.parametrize("variant", ["default", "no_minimum_tenure", "gated_top", "no_hysteresis"])
@pytest.mark.parametrize("read_by", ["either", "dates", "scores"])
async def test_the_view_equals_evaluating_every_fan(sessions, settings, now, variant, read_by, monkeypatch):
    if read_by != "either":  # the index chosen for each tenure band must not change the view
        monkeypatch.setattr(tier_calibration, "_read_by_tenure", lambda *sizes: read_by == "dates")
    rules = {"default": RULES, "no_minimum_tenure": replace(RULES, min_tenure_days=0.0, commitment_actions=1),
             "gated_top": replace(RULES, true_fan_tier="close_friend"),
             "no_hysteresis": replace(RULES, demote_fraction=1.0)}[variant]
    settings = replace(settings, tiers=rules)
    async with sessions() as s:
        _, divisor = await current_scores(s, settings.scoring, now)
    await add_fans(sessions, settings, now, generated_community(rules, divisor, seed=len(variant)))
    view, reference = await both_views(sessions, settings, now, rising_limit=10_000)
    assert view == reference
    assert sum(view["counts"].values()) == 400 + len(EDGE_TENURES) * 8 * (3 if variant != "gated_top" else 2) * 2
    assert len(view["rising"]) > 10
    assert sum(b["count"] for b in view["bins"]) > 300
    assert sum(r["next_tier"] == rules.true_fan_tier and r["value"] > 0 for r in view["rising"]) > 5
    shown, reference = await both_views(sessions, settings, now)
    assert shown == reference and len(shown["rising"]) == 10
    moved = 0
    for trial in TRIALS:
        view, reference = await both_views(sessions, settings, now, trial)
        assert view == reference, trial
        moved += len(view["moves"])
    assert moved > 50


async def test_recorded_commitments_and_tenure_are_the_evidence(sessions, settings, now):
    """A newcomer with five purchases in the window is a true fan today by committed pace: a
    trial threshold above that pace would take it away."""
    items = [InteractionIn("line", "U1", "checkin", now - 100 * DAY, "c1", "小慧")]
    items += [InteractionIn("line", "U1", "purchase", now - d * DAY, f"o{d}", "小慧", amount=Decimal(1000),
                            currency="TWD") for d in range(1, 6)]
    items.append(InteractionIn("line", "U2", "message", now - DAY, "m1", "阿明"))
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    view, reference = await both_views(sessions, settings, now, {"superfan": 100.0})
    assert view == reference
    assert [(m["name"], m["from_tier"], m["to_tier"]) for m in view["moves"]] == [("小慧", "superfan", "fan")]


async def test_an_empty_community(sessions, settings, now):
    view, reference = await both_views(sessions, settings, now, {"superfan": 50.0})
    assert view == reference and view["rising"] == [] and view["moves"] == []


def test_a_rising_score_never_shows_as_the_threshold_it_has_not_reached():
    assert below_threshold(9.96, 10.0) == 9.9  # not 「10 分，到 粉絲 要 10 分」
    assert below_threshold(8.99999, 10.0) == 9.0  # as the other lists round it
    assert below_threshold(59.14, 60.0) == 59.1
    assert below_threshold(149.95, 150.0) == 149.9
