"""The calibration view behind ``superfan tiers`` and ``/stats``: how scores spread over the tiers,
who is about to move up ("rising"), and what a trial threshold would change before the creator
writes it into the config.

Everything is evaluated with the same rule the hourly refresh uses (crm.tiers: score alone or
committed pace), so the view never disagrees with the tiers fans will get.

Bounded at any community size (issue #19): nothing loads every fan. "Today's score ≥ x" is
exactly "score_base ≥ :func:`crm.score_bounds.base_at_least` (x)", so tier counts and the
histogram are range counts on the ``fans.tier`` and ``fans.score_base`` indexes. Rising fans and trial moves can only be fans whose
score (or, for the gated tier, committed pace) lies in a narrow band: those are range-selected,
their commitment counts read for them alone, and each is evaluated with :meth:`TierRules.evaluate`
exactly as the refresh does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, true, union
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan, table
from crm.score_bounds import base_at_least, score_between
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.stats import tier_counts
from crm.tiers import Evidence, Tier, TierRules
from crm.tiers_service import CHUNK, commitment_counts, tenure_days

RISING_WITHIN = 0.2  # "rising": within 20% below the next threshold


def below_threshold(value: float, threshold: float) -> float:
    """A rising fan's score as shown, to one decimal: rounded as everywhere, except that a score
    just under the threshold shows 9.9, not the 10 the fan still needs (「10 分，到 粉絲 要 10 分」)."""
    shown = round(value, 1)
    return shown if shown < threshold else math.floor(value * 10) / 10
BINS_PER_TIER = 4
#: Tenure bands for the pace route's candidates: within a band the share of the long-run score a
#: fan's tenure allows grows at most by this factor, so the band's score range stays narrow.
_SHARE_STEP = 1.1
_SLACK = 1e-6  # relative widening of the pace bands' score bounds (exactness comes from evaluate)

_f = table(Fan).c


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


def with_thresholds(rules: TierRules, trial: Mapping[str, float]) -> TierRules:
    """The rules with some thresholds replaced (keys must be tier keys)."""
    return replace(rules, tiers=tuple(Tier(t.key, float(trial.get(t.key, t.threshold)), t.names)
                                      for t in rules.tiers))


async def calibrate(session: AsyncSession, settings: CrmSettings, now: datetime,
                    trial: Mapping[str, float] | None = None, *, rising_limit: int = 10) -> Calibration:
    """Histogram per tier, rising fans, and (with ``trial`` thresholds) who would move up or down."""
    rules = settings.tiers
    tried = with_thresholds(rules, trial) if trial else None
    state, divisor = await current_scores(session, settings.scoring, now)
    scale = _Scale(divisor, state.half_life_days, now)
    counts = {key: 0 for key in rules.keys}
    for tier, n in (await tier_counts(session)).items():
        counts[rules.get(tier).key] += n
    bins = await _bins(session, rules, divisor)
    rising = await _rising(session, settings, scale, rising_limit)
    moves = await _moves(session, settings, tried, scale) if tried is not None else []
    return Calibration(counts, bins, rising, dict(trial or {}), moves)


@dataclass(frozen=True)
class _Scale:
    divisor: float  # today's score = score_base / divisor
    half_life_days: float
    now: datetime


# the histogram

def _bin_edges(rules: TierRules) -> list[tuple[str, float, float | None]]:
    """Each tier's score range cut into equal bins; the top tier's runs to twice its threshold, then open."""
    edges: list[tuple[str, float, float | None]] = []
    for i, tier in enumerate(rules.tiers):
        high = rules.tiers[i + 1].threshold if i + 1 < len(rules.tiers) else max(2 * tier.threshold, 1.0)
        step = (high - tier.threshold) / BINS_PER_TIER
        edges += [(tier.key, tier.threshold + k * step, tier.threshold + (k + 1) * step) for k in range(BINS_PER_TIER)]
    top = rules.tiers[-1]
    edges.append((top.key, max(2 * top.threshold, 1.0), None))
    return edges


async def _bins(session: AsyncSession, rules: TierRules, divisor: float) -> list[Bin]:
    """Fans per bin, each fan in the first bin whose ``[low, high)`` holds its score.

    The bins' bounds cut the score_base line into pieces that each lie wholly inside or outside
    every bin; each piece goes to the first bin holding it and is counted on the index.
    """
    edges = _bin_edges(rules)
    bound = {e: base_at_least(e, divisor) for _key, low, high in edges for e in (low, high) if e is not None}
    cuts = sorted(set(bound.values()))
    pieces: list[tuple[float, float | None, int]] = []  # [start, end) and its bin
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else None
        owner = next((n for n, (_key, low, high) in enumerate(edges) if bound[low] <= start
                      and (high is None or (end is not None and end <= bound[high]))), None)
        if owner is None:
            continue
        if pieces and pieces[-1][2] == owner and pieces[-1][1] == start:
            pieces[-1] = (pieces[-1][0], end, owner)
        else:
            pieces.append((start, end, owner))
    counts = [0] * len(edges)
    for start, end, owner in pieces:
        cond = _f.score_base >= start if end is None else and_(_f.score_base >= start, _f.score_base < end)
        counts[owner] += int((await session.execute(select(func.count()).select_from(table(Fan)).where(cond)))
                             .scalar_one())
    return [Bin(key, round(low, 1), None if high is None else round(high, 1), c)
            for (key, low, high), c in zip(edges, counts, strict=True)]


# candidates: fans at a tier, and fans whose committed pace may lie in a band

def _at_rank(rules: TierRules, rank: int, *, indexed: bool = True) -> ColumnElement[bool]:
    """Fans whose stored tier has this rank (unknown keys, from an older config, count as lowest).
    ``indexed=False`` keeps the tier index out of the query plan (another index narrows more)."""
    tier = _f.tier if indexed else _f.tier.concat("")
    if rank == 0:
        return or_(tier == rules.lowest, tier.not_in(rules.keys))
    return tier == rules.keys[rank]


def _at_or_above(rules: TierRules, rank: int) -> ColumnElement[bool]:
    return true() if rank == 0 else _f.tier.in_(rules.keys[rank:])


def _share(tenure: float, half_life_days: float) -> float:
    return 1.0 - math.pow(2.0, -max(tenure, 0.0) / half_life_days)


@dataclass(frozen=True)
class _TenureBand:
    """Fans first seen in ``(after, until]`` whose score_base lies in ``[low, high]`` (None: open)."""

    until: datetime
    after: datetime | None
    low: float | None
    high: float | None

    def dates(self) -> list[ColumnElement[bool]]:
        return [_f.first_seen_at <= self.until] + ([] if self.after is None else [_f.first_seen_at > self.after])

    def by_tenure(self) -> list[ColumnElement[bool]]:
        """The band for the first_seen_at index (the score compared without its index)."""
        score = _f.score_base + 0
        return self.dates() + ([] if self.low is None else [score >= self.low]) + (
            [] if self.high is None else [score <= self.high])

    def by_score(self) -> list[ColumnElement[bool]]:
        """The band's scores for the score_base index (its dates are left to the evaluation)."""
        return ([] if self.low is None else [_f.score_base >= self.low]) + (
            [] if self.high is None else [_f.score_base <= self.high])


def _tenure_bands(rules: TierRules, low: float, high: float, scale: _Scale) -> list[_TenureBand]:
    """Bands that hold every fan known ``min_tenure_days`` or longer whose pace may lie in ``[low, high]``.

    Within a tenure band the share ``s`` of the long-run score lies in ``[s_a, s_b]``, so a pace in
    ``[low, high]`` means a score in ``[low·s_a, high·s_b]``.
    """
    half, now, divisor = scale.half_life_days, scale.now, scale.divisor
    starts, share = [rules.min_tenure_days], _share(rules.min_tenure_days, half)
    while share < 0.99 and len(starts) < 64:
        share = min(max(share * _SHARE_STEP, 0.05), 0.99)
        starts.append(-half * math.log2(1.0 - share))
    second, day_second = timedelta(seconds=1), 1 / 86400
    bands = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else None
        # a second's slack on each side of the band, in the dates and in the shares they allow
        share_low = _share(start - day_second, half)
        share_high = 1.0 if end is None else _share(end + day_second, half)
        bands.append(_TenureBand(
            now - timedelta(days=start) + second, None if end is None else now - timedelta(days=end) - second,
            # a share below 1e-9 makes the pace 0 whatever the score
            low * share_low * divisor * (1 - _SLACK) if low > 0 and share_low > 1e-9 else None,
            high * share_high * divisor * (1 + _SLACK) if high >= 0 and (low > 0 or share_low > 1e-9) else None))
    return bands


_Row = tuple[int, str, float, datetime]  # id, stored tier, score_base, first seen


def _read_by_tenure(by_tenure: int, by_score: int) -> bool:
    """Whether a tenure band is read through its dates (fewer fans there than in its scores)."""
    return by_tenure <= by_score


async def _pace_rows(session: AsyncSession, rules: TierRules, low: float, high: float, scale: _Scale,
                     tiers: ColumnElement[bool]) -> list[_Row]:
    """Unpinned fans at ``tiers`` (written without the tier index) whose committed pace may lie in
    ``[low, high]``: more than those, never fewer.

    Each tenure band is read through the index that holds fewer of its fans: the first_seen_at
    index for its dates or the score_base index for its scores (both counted first, on the indexes
    alone), so neither a community of old fans nor one of newcomers makes it read every fan.
    """
    bands = _tenure_bands(rules, low, high, scale)
    fans = table(Fan)
    sizes = (await session.execute(select(*[
        select(func.count()).select_from(fans).where(and_(true(), *conds)).scalar_subquery()
        for band in bands for conds in (band.dates(), band.by_score())]))).one()
    parts = [select(_f.id, _f.tier, _f.score_base, _f.first_seen_at).where(
        _f.tier_pinned.is_(None), tiers,
        *(band.by_tenure() if _read_by_tenure(sizes[2 * n], sizes[2 * n + 1]) else band.by_score()))
        for n, band in enumerate(bands)]
    return [(int(fan_id), tier, float(base), first)
            for fan_id, tier, base, first in await session.execute(union(*parts))]


async def _rows(session: AsyncSession, *wheres: Sequence[ColumnElement[bool]]) -> list[_Row]:
    """Unpinned fans matching any of ``wheres`` (one SELECT each, so each can use its index)."""
    parts = [select(_f.id, _f.tier, _f.score_base, _f.first_seen_at).where(_f.tier_pinned.is_(None), *where)
             for where in wheres]
    stmt = parts[0] if len(parts) == 1 else union(*parts)
    return [(int(fan_id), tier, float(base), first) for fan_id, tier, base, first in await session.execute(stmt)]


async def _with_evidence(session: AsyncSession, settings: CrmSettings, scale: _Scale, rows: Sequence[_Row],
                         counted: Callable[[str, float, Evidence], bool] | None = None,
                         ) -> list[tuple[int, str, float, Evidence]]:
    """Each fan once, in id order, with today's score and tier evidence. The commitment counts are
    read (per 500 fans) for those ``counted`` says they may matter to, given the evidence without."""
    out: list[tuple[int, str, float, Evidence]] = []
    for fan_id, tier, base, first in sorted({row[0]: row for row in rows}.values()):
        out.append((fan_id, tier, base / scale.divisor, Evidence(0, tenure_days(first, scale.now), scale.half_life_days)))
    wanted = [fan_id for fan_id, tier, score, evidence in out if counted is None or counted(tier, score, evidence)]
    counts: dict[int, int] = {}
    for start in range(0, len(wanted), CHUNK):
        counts.update(await commitment_counts(session, settings, wanted[start : start + CHUNK], scale.now))
    return [(fan_id, tier, score, replace(evidence, commitments=counts[fan_id]) if fan_id in counts else evidence)
            for fan_id, tier, score, evidence in out]


async def _scores(session: AsyncSession, scale: _Scale,
                  where: Sequence[ColumnElement[bool]]) -> list[tuple[int, str, float]]:
    """Unpinned fans matching ``where``: id, stored tier and today's score (no evidence read)."""
    stmt = select(_f.id, _f.tier, _f.score_base).where(_f.tier_pinned.is_(None), *where)
    return [(int(fan_id), tier, float(base) / scale.divisor) for fan_id, tier, base in await session.execute(stmt)]


async def _names(session: AsyncSession, fan_ids: Sequence[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    ids = sorted(set(fan_ids))
    for start in range(0, len(ids), CHUNK):
        rows = await session.execute(select(_f.id, _f.display_name).where(_f.id.in_(ids[start : start + CHUNK])))
        names.update((int(fan_id), name) for fan_id, name in rows)
    return names


# rising fans and trial moves

async def _rising(session: AsyncSession, settings: CrmSettings, scale: _Scale, limit: int) -> list[Rising]:
    """Unpinned fans within RISING_WITHIN below the next tier: by score, or by committed pace when
    the next tier is gated; the closest first (then by id), ``limit`` of them."""
    rules = settings.tiers
    found: list[Rising] = []
    for rank, nxt in enumerate(rules.tiers[1:]):
        low = nxt.threshold * (1 - RISING_WITHIN)
        if not rules.gated(nxt.key):
            for fan_id, tier, score in await _scores(session, scale, [
                    _at_rank(rules, rank), score_between(low, nxt.threshold, scale.divisor)]):
                if low <= score < nxt.threshold:
                    found.append(Rising(fan_id, "", tier, nxt.key, below_threshold(score, nxt.threshold), nxt.threshold))
            continue
        # gated: a committed fan's value is the pace when higher (a pace in the band, a score below it)
        rows = await _rows(session, [_at_rank(rules, rank), score_between(low, nxt.threshold, scale.divisor)])
        rows += await _pace_rows(session, rules, low, nxt.threshold, scale, _at_rank(rules, rank, indexed=False))
        unsure = []
        for row in {row[0]: row for row in rows}.values():  # the commitment counts are read only for fans they could make rising
            score, tenure = row[2] / scale.divisor, tenure_days(row[3], scale.now)
            paced = max(score, Evidence(0, tenure, scale.half_life_days).pace(score))
            if tenure >= rules.min_tenure_days and (low <= paced < nxt.threshold or low <= score < nxt.threshold):
                unsure.append(row)
            elif low <= score < nxt.threshold:  # not known long enough for the pace route
                found.append(Rising(row[0], "", row[1], nxt.key, below_threshold(score, nxt.threshold), nxt.threshold))
        for fan_id, tier, score, evidence in await _with_evidence(session, settings, scale, unsure):
            value = max(score, evidence.pace(score)) if rules.committed(evidence) else score
            if low <= value < nxt.threshold:
                found.append(Rising(fan_id, "", tier, nxt.key, below_threshold(value, nxt.threshold), nxt.threshold))
    found.sort(key=lambda r: (-r.value / r.threshold, r.fan_id))
    names = await _names(session, [r.fan_id for r in found[:limit]])
    return [replace(r, name=names.get(r.fan_id, "")) for r in found[:limit]]


async def _moves(session: AsyncSession, settings: CrmSettings, tried: TierRules, scale: _Scale) -> list[Move]:
    """Who the trial thresholds would move, against what the refresh does under today's rules.

    A threshold enters :meth:`TierRules.evaluate` only through comparisons of the score with it and
    with its demotion fraction, and (gated tier) of the committed pace with it and of a holder's pace
    with its demotion fraction; a fan all of whose such comparisons come out the same under both
    thresholds gets the same tier. So only fans with a score (or pace) between the two can move.
    """
    rules = settings.tiers
    conds: list[list[ColumnElement[bool]]] = []
    rows: list[_Row] = []
    for rank, (today, trial) in enumerate(zip(rules.tiers, tried.tiers, strict=True)):
        if today.threshold == trial.threshold or (rank == 0 and not rules.gated(today.key)):
            continue  # the lowest tier's threshold decides nothing (every fan reaches and holds it)
        low = min(today.threshold * rules.demote_fraction, trial.threshold * rules.demote_fraction)
        high = max(today.threshold, trial.threshold)
        conds.append([score_between(low, high, scale.divisor, high_inclusive=True)])
        if rules.gated(today.key):
            rows += await _pace_rows(session, rules, min(today.threshold, trial.threshold), high, scale,
                                     true())  # reached by the committed pace
            # held: a holder's pace against the demotion fraction (few hold the gated tier or above:
            # read through the tier index, the score compared without its index)
            top = base_at_least(math.nextafter(high, math.inf), scale.divisor)
            conds.append([_at_or_above(rules, rank), _f.score_base + 0 < top])
    if not conds:
        return []
    rows += await _rows(session, *conds)
    gated = rules.get(rules.true_fan_tier)
    low, high = sorted((gated.threshold, tried.get(gated.key).threshold))
    fraction = rules.demote_fraction

    def counted(tier: str, score: float, evidence: Evidence) -> bool:
        """Whether the commitments can matter under either thresholds: on the pace route (known
        long enough, a pace reaching the gated tier, a score below it) or to a holder of the gated
        tier or above (a score below its demotion point, a pace reaching it)."""
        pace = evidence.pace(score)
        return ((evidence.tenure_days >= rules.min_tenure_days and pace >= low and score < high)
                or (rules.rank(tier) >= rules.rank(gated.key) and pace >= low * fraction and score < high * fraction))

    found: list[tuple[int, str, str]] = []
    for fan_id, tier, score, evidence in await _with_evidence(session, settings, scale, rows, counted):
        now_tier = rules.evaluate(tier, score, None, evidence)
        target = tried.evaluate(tier, score, None, evidence)
        if target != now_tier:
            found.append((fan_id, now_tier, target))
    names = await _names(session, [fan_id for fan_id, _, _ in found])
    moves = [Move(fan_id, names.get(fan_id, ""), frm, to) for fan_id, frm, to in found]
    moves.sort(key=lambda m: (-tried.rank(m.to_tier) + tried.rank(m.from_tier), m.fan_id))
    return moves

