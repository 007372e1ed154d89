"""The calibration view behind ``superfan tiers`` and ``/stats``: how scores spread over the tiers,
who is about to move up ("rising"), and what a trial threshold would change before the creator
writes it into the config.

Everything is evaluated with the same rule the hourly refresh uses (crm.tiers: score alone or
committed pace), so the view never disagrees with the tiers fans will get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.tiers import Evidence, Tier, TierRules
from crm.tiers_service import CHUNK, commitment_counts, tenure_days

RISING_WITHIN = 0.2  # "rising": within 20% below the next threshold
BINS_PER_TIER = 4


@dataclass(frozen=True)
class FanPoint:
    fan_id: int
    name: str
    tier: str
    pinned: str | None
    score: float
    evidence: Evidence


@dataclass(frozen=True)
class Bin:
    tier: str
    low: float
    high: float | None  # None: open-ended top bin
    count: int


@dataclass(frozen=True)
class Rising:
    fan_id: int
    name: str
    tier: str
    next_tier: str
    value: float  # the score, or the pace when the fan is committed and the next tier is gated
    threshold: float


@dataclass(frozen=True)
class Move:
    fan_id: int
    name: str
    from_tier: str
    to_tier: str


@dataclass(frozen=True)
class Calibration:
    counts: dict[str, int]
    bins: list[Bin]
    rising: list[Rising]
    trial: dict[str, float] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)


async def load_points(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[FanPoint]:
    """Every fan's score and tier evidence today (one pass, grouped counts per 500 fans)."""
    state, divisor = await current_scores(session, settings.scoring, now)
    rows = (await session.execute(select(Fan.id, Fan.display_name, Fan.tier, Fan.tier_pinned, Fan.score_base,
                                         Fan.first_seen_at).order_by(Fan.id))).all()
    points: list[FanPoint] = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        counts = await commitment_counts(session, settings, [int(r[0]) for r in chunk], now)
        for fan_id, name, tier, pinned, base, first in chunk:
            evidence = Evidence(counts.get(int(fan_id), 0), tenure_days(first, now), state.half_life_days)
            points.append(FanPoint(int(fan_id), name, tier, pinned, float(base) / divisor, evidence))
    return points


def with_thresholds(rules: TierRules, trial: Mapping[str, float]) -> TierRules:
    """The rules with some thresholds replaced (keys must be tier keys)."""
    return replace(rules, tiers=tuple(Tier(t.key, float(trial.get(t.key, t.threshold)), t.names)
                                      for t in rules.tiers))


def calibrate(points: list[FanPoint], rules: TierRules, trial: Mapping[str, float] | None = None,
              rising_limit: int = 10) -> Calibration:
    """Histogram per tier, rising fans, and (with ``trial`` thresholds) who would move up or down."""
    counts = {key: 0 for key in rules.keys}
    for p in points:
        counts[rules.get(p.tier).key] += 1
    bins = _bins(points, rules)
    rising: list[Rising] = []
    for p in points:
        if p.pinned is not None or rules.rank(p.tier) + 1 >= len(rules.tiers):
            continue
        nxt = rules.tiers[rules.rank(p.tier) + 1]
        value = p.score
        if rules.gated(nxt.key) and rules.committed(p.evidence):
            value = max(value, p.evidence.pace(p.score))
        if nxt.threshold * (1 - RISING_WITHIN) <= value < nxt.threshold:
            rising.append(Rising(p.fan_id, p.name, p.tier, nxt.key, round(value, 1), nxt.threshold))
    rising.sort(key=lambda r: (-r.value / r.threshold, r.fan_id))
    moves: list[Move] = []
    if trial:
        tried = with_thresholds(rules, trial)
        for p in points:  # against what the refresh would do under today's rules, not the stored tier
            today = rules.evaluate(p.tier, p.score, p.pinned, p.evidence)
            target = tried.evaluate(p.tier, p.score, p.pinned, p.evidence)
            if target != today:
                moves.append(Move(p.fan_id, p.name, today, target))
        moves.sort(key=lambda m: (-tried.rank(m.to_tier) + tried.rank(m.from_tier), m.fan_id))
    return Calibration(counts, bins, rising[:rising_limit], dict(trial or {}), moves)


def _bins(points: list[FanPoint], rules: TierRules) -> list[Bin]:
    """Each tier's score range cut into equal bins; the top tier's runs to twice its threshold, then open."""
    edges: list[tuple[str, float, float | None]] = []
    for i, tier in enumerate(rules.tiers):
        high = rules.tiers[i + 1].threshold if i + 1 < len(rules.tiers) else max(2 * tier.threshold, 1.0)
        step = (high - tier.threshold) / BINS_PER_TIER
        edges += [(tier.key, tier.threshold + k * step, tier.threshold + (k + 1) * step) for k in range(BINS_PER_TIER)]
    top = rules.tiers[-1]
    edges.append((top.key, max(2 * top.threshold, 1.0), None))
    counts = [0] * len(edges)
    for p in points:
        for n, (_key, low, upper) in enumerate(edges):
            if p.score >= low and (upper is None or p.score < upper):
                counts[n] += 1
                break
    return [Bin(key, round(low, 1), None if upper is None else round(upper, 1), c)
            for (key, low, upper), c in zip(edges, counts, strict=True)]
