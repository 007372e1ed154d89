"""Loyalty points and the decayed score.

Points are decided once, when an interaction is recorded, and stored on it, so the history
explains the score. The score decays exponentially with half-life H:

    score(t) = Σ points_i · 2^(−(t − t_i)/H)

Kept as ``score_base = Σ points_i · 2^((t_i − T0)/H)`` for a shared epoch T0 so that recording is
O(1) (add one term, in any order of arrival) and ``ORDER BY score_base`` is today's ranking.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import fan_kind_scores
from crm.db import insert_ignore
from crm.models import Fan, ScoreState

DAY_SECONDS = 86_400.0
DEFAULT_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
#: Rebase when a term's factor would pass 2^REBASE_EXPONENT (floats overflow past 2^1023).
REBASE_EXPONENT = 600.0

DEFAULT_WEIGHTS: dict[str, float] = {
    "message": 0.1,
    "reaction": 0.05,
    "dm_in": 0.1,
    "share": 2.5,
    "referral": 4.0,
    "checkin": 1.5,
    "event_checkin": 4.0,
    "purchase": 5.0,
    "membership": 25.0,  # LINE paid membership joined or renewed: a commitment like a purchase
}
DEFAULT_DAILY_CAPS: dict[str, float] = {
    "message": 0.25,
    "reaction": 0.1,
    "dm_in": 0.1,
    "share": 5.0,
    "referral": 12.0,
    "checkin": 1.5,
}


@dataclass(frozen=True)
class ScoringRules:
    """Weights, caps and decay; built from the ``[scoring]`` config section."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    purchase_per_unit: Mapping[str, float] = field(default_factory=lambda: {"TWD": 0.005})
    daily_caps: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DAILY_CAPS))
    cooldown_seconds: Mapping[str, float] = field(default_factory=lambda: {"message": 60.0})
    half_life_days: float = 90.0
    timezone: str = "Asia/Taipei"

    @property
    def tz(self) -> ZoneInfo:
        return _zone(self.timezone)

    def base_points(self, kind: str, amount: Decimal | None, currency: str | None) -> float:
        """Points before caps: the kind's weight, plus the per-unit weight for purchases."""
        points = self.weights.get(kind, 0.0)
        if amount is not None and currency and kind == "purchase":
            points += float(amount) * float(self.purchase_per_unit.get(currency.upper(), 0.0))
        return points if points > 0.0 else 0.0

    def local_day(self, at: datetime) -> date:
        return _local_day(self.timezone, int(at.timestamp()) // 900)

    def local_day_ts(self, ts: float) -> date:
        return _local_day(self.timezone, int(ts) // 900)


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=65_536)
def _local_day(zone: str, quarter_hour: int) -> date:
    """Local date of a 15-minute slot: every UTC offset in use is a multiple of 15 minutes."""
    return datetime.fromtimestamp(quarter_hour * 900, UTC).astimezone(_zone(zone)).date()


def term_function(epoch: datetime, half_life_days: float) -> Callable[[float, float], float]:
    """A fast ``base_term`` for one epoch and a POSIX timestamp, for loops over many interactions."""
    epoch_ts = epoch.timestamp()
    span = half_life_days * DAY_SECONDS

    def term(points: float, ts: float) -> float:
        return points * 2.0 ** ((ts - epoch_ts) / span) if points else 0.0

    return term


def exponent(at: datetime, epoch: datetime, half_life_days: float) -> float:
    return (at - epoch).total_seconds() / (half_life_days * DAY_SECONDS)


def base_term(points: float, at: datetime, epoch: datetime, half_life_days: float) -> float:
    """The contribution of ``points`` earned at ``at`` to ``score_base``."""
    if points == 0.0:
        return 0.0
    return points * math.pow(2.0, exponent(at, epoch, half_life_days))


def score_at(score_base: float, now: datetime, epoch: datetime, half_life_days: float) -> float:
    return score_base * math.pow(2.0, -exponent(now, epoch, half_life_days))


def base_for_score(score: float, now: datetime, epoch: datetime, half_life_days: float) -> float:
    """The ``score_base`` that equals ``score`` at ``now``: turns thresholds into index ranges."""
    return score * math.pow(2.0, exponent(now, epoch, half_life_days))


def decayed(points: float, at: datetime, now: datetime, half_life_days: float) -> float:
    return points * math.pow(2.0, -(now - at).total_seconds() / (half_life_days * DAY_SECONDS))


@dataclass
class Allowance:
    """What a fan has already earned, per kind: points per local day and times of awarded events.

    One instance follows a batch of interactions so that caps and cooldowns hold across the batch
    and against what is already stored. Times are POSIX timestamps (floats): this runs per row.
    """

    rules: ScoringRules
    earned: dict[tuple[int, str, date], float] = field(default_factory=dict)
    awarded_at: dict[tuple[int, str], list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._caps = dict(self.rules.daily_caps)
        self._cooldowns = dict(self.rules.cooldown_seconds)
        self._days: dict[int, date] = {}

    def _day(self, ts: float) -> date:
        quarter = int(ts) // 900
        day = self._days.get(quarter)
        if day is None:
            day = self._days[quarter] = self.rules.local_day_ts(ts)
        return day

    def note_existing(self, fan_id: int, kind: str, ts: float, points: float, day: date | None = None) -> None:
        if points <= 0:
            return
        key = (fan_id, kind, day or self._day(ts))
        self.earned[key] = self.earned.get(key, 0.0) + points
        if kind in self._cooldowns:
            bisect.insort(self.awarded_at.setdefault((fan_id, kind), []), ts)

    def award(self, fan_id: int, kind: str, ts: float, base: float) -> float:
        """Points actually granted for one interaction at timestamp ``ts``, and remember them."""
        if base <= 0:
            return 0.0
        cap = self._caps.get(kind)
        cooldown = self._cooldowns.get(kind)
        if cap is None and not cooldown:
            return base
        points = base
        if cap is not None:
            quarter = int(ts) // 900
            day = self._days.get(quarter)
            if day is None:
                day = self._days[quarter] = self.rules.local_day_ts(ts)
            key = (fan_id, kind, day)
            earned = self.earned.get(key, 0.0)
            if base > cap - earned:
                points = cap - earned
                if points <= 1e-12:
                    return 0.0
        if cooldown:
            times = self.awarded_at.get((fan_id, kind))
            if times is None:
                self.awarded_at[(fan_id, kind)] = [ts]
            else:
                i = bisect.bisect_left(times, ts)
                if (i < len(times) and times[i] - ts < cooldown) or (i > 0 and ts - times[i - 1] < cooldown):
                    return 0.0
                times.insert(i, ts)
        if cap is not None:
            self.earned[key] = earned + points
        return points

    @property
    def window_kinds(self) -> set[str]:
        """Kinds whose award depends on earlier awards (capped or cooled down)."""
        return set(self.rules.daily_caps) | set(self.rules.cooldown_seconds)


async def score_state(session: AsyncSession, rules: ScoringRules) -> ScoreState:
    """The epoch row, created on first use. Its half-life changes only through a rescore."""
    state = await session.get(ScoreState, 1)
    if state is None:
        await session.execute(insert_ignore(session, ScoreState, "id"),
                              [{"id": 1, "epoch": DEFAULT_EPOCH, "half_life_days": rules.half_life_days}])
        state = await session.get(ScoreState, 1)
        assert state is not None
    return state


_EPOCH_TTL_SECONDS = 10.0
_epochs: dict[str, tuple[datetime, float, float]] = {}


async def current_epoch(session: AsyncSession, rules: ScoringRules) -> tuple[datetime, float]:
    """``(epoch, half_life_days)`` for the hot path, cached for a few seconds per database.

    The row changes only on a rebase (centuries apart) or a rescore, which clear this process's
    cache; another process picks the change up within the TTL.
    """
    key = str(session.get_bind().engine.url)
    cached = _epochs.get(key)
    if cached is not None and cached[2] > time.monotonic():
        return cached[0], cached[1]
    state = await score_state(session, rules)
    _epochs[key] = (state.epoch, state.half_life_days, time.monotonic() + _EPOCH_TTL_SECONDS)
    return state.epoch, state.half_life_days


def forget_epoch() -> None:
    """Drop cached epochs (after a rescore or rebase changed the row)."""
    _epochs.clear()


async def rebase_if_needed(session: AsyncSession, state: ScoreState, now: datetime) -> bool:
    """Move the epoch to ``now`` when terms approach float overflow; scales every score_base."""
    if exponent(now, state.epoch, state.half_life_days) < REBASE_EXPONENT:
        return False
    factor = math.pow(2.0, -exponent(now, state.epoch, state.half_life_days))
    await session.execute(update(Fan).values(score_base=Fan.score_base * factor))
    await fan_kind_scores.scale(session, factor)
    state.epoch = now
    await session.flush()
    forget_epoch()
    return True


def breakdown(
    rows: Iterable[tuple[str, float, datetime]], now: datetime, half_life_days: float
) -> dict[str, dict[str, float]]:
    """Per kind: points as earned and their value today (decayed). Explains a fan's score."""
    out: dict[str, dict[str, float]] = {}
    for kind, points, at in rows:
        if points <= 0:
            continue
        entry = out.setdefault(kind, {"points": 0.0, "decayed": 0.0, "count": 0})
        entry["points"] += points
        entry["decayed"] += decayed(points, at, now, half_life_days)
        entry["count"] += 1
    return {k: {n: round(v, 2) for n, v in e.items()} for k, e in sorted(out.items())}


async def current_scores(session: AsyncSession, rules: ScoringRules, now: datetime) -> tuple[ScoreState, float]:
    """The epoch row and the divisor that turns a score_base into today's score.

    Only reads, so that fan cards and lists can use read-only sessions: before the first score
    is stored (the writer creates the row) it is the row as it will be created.
    """
    state = await session.get(ScoreState, 1)
    if state is None:
        state = ScoreState(id=1, epoch=DEFAULT_EPOCH, half_life_days=rules.half_life_days)  # not added
    return state, math.pow(2.0, exponent(now, state.epoch, state.half_life_days))

