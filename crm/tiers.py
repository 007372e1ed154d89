"""Tiers (路人 → 粉絲 → 鐵粉 → 摯友) from the score, with hysteresis and staff pins.

A fan reaches a tier by either of two routes:

* **score alone**: today's decayed score reaches the tier's threshold (as it always has);
* **committed pace**, for the true-fan tier (鐵粉) only: the fan has taken at least
  ``commitment_actions`` commitment actions (purchases, check-ins, shares, referrals, event
  check-ins, memberships) in the last ``commitment_days`` days, has been known for at least
  ``min_tenure_days`` days, and their *pace* reaches the threshold. The pace is the score divided
  by the share of its long-run value that the fan's tenure allows, ``1 − 2^(−tenure/H)``: a fan
  who joined 100 days ago has had time to build only 54% of what the same habits give in a year,
  so 41 points at 100 days is a pace of 76.

Why both: a fixed threshold misses committed fans who joined a few months ago (issue #18: recall
0.70 on a community with recent fans), while a lower threshold alone would let heavy chatters in.
The gate means talk alone never takes the pace route; the score-alone route stays out of reach of
talk because messages, reactions and DMs are capped (0.45 points a day by default, whose decayed
ceiling is 0.45·H/ln 2 ≈ 58 < 60). The minimum tenure keeps one big purchase on day one from
making a 鐵粉. Measured on four simulated communities × three seeds (benchmarks/bench_signal.py).

Where it runs: the write path (crm/ingest.py, per webhook group) knows only the score, so it calls
:meth:`TierRules.evaluate` without evidence: it promotes by score alone and never moves a fan out
of a gated tier (it cannot tell whether their commitment still holds). The hourly refresh
(crm/tiers_service.reevaluate) reads the commitment counts and tenure with one grouped query per
500 fans and takes the pace route and the demotions. A committed newcomer therefore becomes 鐵粉
within the hour, not on the very event; nothing flaps, because both paths agree on the
score-alone route.

Hysteresis: a fan keeps a tier until the score falls below ``demote_fraction`` of its threshold
and, on the pace route, the pace does too or no commitment action is left in the window. Staff
pins win over everything.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from crm.errors import BadInput

#: Interactions that cost the fan something (money, a trip, a daily habit, their own reputation).
COMMITMENT_KINDS: tuple[str, ...] = ("purchase", "checkin", "share", "referral", "event_checkin", "membership")


@dataclass(frozen=True)
class Tier:
    key: str
    threshold: float
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, locale: str) -> str:
        return self.names.get(locale) or self.names.get("zh-TW") or self.key


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("passerby", 0.0, {"zh-TW": "路人", "en": "Passer-by"}),
    Tier("fan", 10.0, {"zh-TW": "粉絲", "en": "Fan"}),
    Tier("superfan", 60.0, {"zh-TW": "鐵粉", "en": "True fan"}),
    Tier("close_friend", 150.0, {"zh-TW": "摯友", "en": "Close friend"}),
)


@dataclass(frozen=True)
class Evidence:
    """What the score alone does not say: recent commitment and how long the fan has been known."""

    commitments: int  # commitment actions that earned points in the last ``commitment_days``
    tenure_days: float  # since the fan was first seen
    half_life_days: float

    def pace(self, score: float) -> float:
        """The score at the fan's pace: divided by the share of the long-run score their tenure allows."""
        share = 1.0 - math.pow(2.0, -max(self.tenure_days, 0.0) / self.half_life_days)
        return score / share if share > 1e-9 else 0.0


@dataclass(frozen=True)
class Standing:
    """Why a fan holds their tier and what is missing for the next one (the fan card's explanation).

    ``why``: ``pinned`` | ``score`` (score alone) | ``pace`` (committed pace) | ``held``
    (hysteresis keeps a tier the fan no longer reaches) | ``start`` (the lowest tier).
    """

    tier: str
    why: str
    score: float
    pace: float | None
    next_tier: str | None = None
    next_threshold: float | None = None
    points_missing: float | None = None  # score-alone route
    commitments_missing: int | None = None  # pace route (gated tiers only)
    tenure_days_missing: float | None = None
    pace_missing: float | None = None


@dataclass(frozen=True)
class TierRules:
    """Ordered tiers (lowest first), the demotion fraction that gives hysteresis, and the
    commitment gate of the pace route (see the module docstring).

    ``true_fan_tier`` is the lowest tier that counts toward the "1000 true fans" goal, and the
    one the pace route leads to.
    """

    tiers: Sequence[Tier] = DEFAULT_TIERS
    demote_fraction: float = 0.8
    true_fan_tier: str = "superfan"
    commitment_actions: int = 5
    commitment_days: int = 60
    min_tenure_days: float = 45.0
    commitment_kinds: tuple[str, ...] = COMMITMENT_KINDS

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("at least one tier is needed")
        thresholds = [t.threshold for t in self.tiers]
        if thresholds != sorted(thresholds) or len(set(thresholds)) != len(thresholds):
            raise ValueError("tier thresholds must be strictly increasing")
        if not 0 < self.demote_fraction <= 1:
            raise ValueError("demote_fraction must be in (0, 1]")
        if self.true_fan_tier not in self.keys:
            raise ValueError(f"true_fan_tier {self.true_fan_tier!r} is not a tier")
        if self.commitment_actions < 1 or self.commitment_days < 1 or self.min_tenure_days < 0:
            raise ValueError("commitment_actions and commitment_days must be >= 1, min_tenure_days >= 0")

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    @property
    def _keys(self) -> tuple[str, ...]:
        cached: tuple[str, ...] | None = self.__dict__.get("_key_cache")
        if cached is None:
            cached = tuple(t.key for t in self.tiers)
            object.__setattr__(self, "_key_cache", cached)
        return cached

    @property
    def lowest(self) -> str:
        return self.tiers[0].key

    def rank(self, key: str) -> int:
        """Position of a tier (0 = lowest); unknown keys (from an older config) count as lowest."""
        try:
            return self._keys.index(key)
        except ValueError:
            return 0

    def get(self, key: str) -> Tier:
        return self.tiers[self.rank(key)]

    def name(self, key: str, locale: str = "zh-TW") -> str:
        return self.get(key).name(locale)

    def resolve(self, text: str) -> str:
        """A tier key from a key or a localised name, as a user types it (鐵粉, superfan, True fan)."""
        wanted = unicodedata.normalize("NFKC", text).strip().casefold()
        for tier in self.tiers:
            candidates = {tier.key, *tier.names.values()}
            if wanted in {unicodedata.normalize("NFKC", c).casefold() for c in candidates}:
                return tier.key
        raise BadInput(f"unknown tier {text!r}; tiers are: {', '.join(self.display_names())}",
                       code="tier.unknown", tier=text, tiers=self.names_by_locale())

    def display_names(self, locale: str = "zh-TW") -> list[str]:
        return [t.name(locale) for t in self.tiers]

    def names_by_locale(self) -> dict[str, list[str]]:
        """The tier names in every language the config names them in (zh-TW always), for messages."""
        locales = {"zh-TW"}.union(*(t.names for t in self.tiers))
        return {loc: self.display_names(loc) for loc in sorted(locales)}

    def gated(self, key: str) -> bool:
        """Whether a tier can also be reached on the committed-pace route: the true-fan tier only
        (the tiers above it are for the long-standing and for staff's pins)."""
        return key == self.true_fan_tier

    def by_score(self, score: float) -> str:
        """The highest tier whose threshold the score reaches."""
        key = self.lowest
        for tier in self.tiers:
            if score >= tier.threshold:
                key = tier.key
        return key

    def committed(self, evidence: Evidence | None) -> bool:
        """Whether the fan may take the pace route: enough recent commitment, known long enough."""
        return (evidence is not None and evidence.commitments >= self.commitment_actions
                and evidence.tenure_days >= self.min_tenure_days)

    def reached(self, score: float, evidence: Evidence | None = None) -> str:
        """The highest tier the fan reaches today, by score alone or (gated tiers) committed pace."""
        key = self.by_score(score)
        if self.committed(evidence):
            assert evidence is not None
            pace = evidence.pace(score)
            for tier in self.tiers:
                if self.gated(tier.key) and pace >= tier.threshold and self.rank(tier.key) > self.rank(key):
                    key = tier.key
        return key

    def holds(self, key: str, score: float, evidence: Evidence | None) -> bool:
        """Whether a fan who has this tier keeps it (hysteresis).

        Without evidence a gated tier is kept: only the refresh, which reads the commitment, may
        take it away.
        """
        tier = self.get(key)
        if key == self.lowest or score >= tier.threshold * self.demote_fraction:
            return True
        if not self.gated(key):
            return False
        if evidence is None:
            return True
        return evidence.commitments >= 1 and evidence.pace(score) >= tier.threshold * self.demote_fraction

    def evaluate(self, current: str, score: float, pinned: str | None = None,
                 evidence: Evidence | None = None) -> str:
        """The tier a fan should hold now.

        A pin wins. Promotion happens when a route reaches the threshold; demotion only once the
        fan no longer :meth:`holds` the tier, so a score hovering at a boundary never flaps.
        ``evidence=None`` (the write path) promotes by score alone and leaves gated tiers alone.
        """
        if pinned is not None:
            return pinned
        target = self.reached(score, evidence)
        if self.rank(target) >= self.rank(current):
            return target
        for tier in reversed(self.tiers[: self.rank(current) + 1]):
            if self.holds(tier.key, score, evidence) or self.rank(tier.key) <= self.rank(target):
                return tier.key
        return self.lowest

    def standing(self, current: str, score: float, pinned: str | None = None,
                 evidence: Evidence | None = None) -> Standing:
        """Why the fan holds ``current`` and what each route still needs for the next tier."""
        pace = evidence.pace(score) if evidence is not None else None
        reached = self.reached(score, evidence)
        if pinned is not None:
            why = "pinned"
        elif current == self.lowest and self.rank(reached) == 0:
            why = "start"
        elif self.rank(reached) < self.rank(current):
            why = "held"
        elif score >= self.get(current).threshold:
            why = "score"
        else:
            why = "pace"
        rank = self.rank(current)
        if rank + 1 >= len(self.tiers):
            return Standing(current, why, round(score, 1), None if pace is None else round(pace, 1))
        nxt = self.tiers[rank + 1]
        gated = self.gated(nxt.key) and evidence is not None
        return Standing(
            current, why, round(score, 1), None if pace is None else round(pace, 1), nxt.key, nxt.threshold,
            points_missing=round(max(0.0, nxt.threshold - score), 1),
            commitments_missing=max(0, self.commitment_actions - evidence.commitments) if gated and evidence else None,
            tenure_days_missing=(round(max(0.0, self.min_tenure_days - evidence.tenure_days), 1)
                                 if gated and evidence else None),
            pace_missing=round(max(0.0, nxt.threshold - (pace or 0.0)), 1) if gated else None,
        )
