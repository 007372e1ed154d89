"""Tiers (路人 → 粉絲 → 鐵粉 → 摯友) from the score, with hysteresis and staff pins."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from crm.errors import BadInput


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
class TierRules:
    """Ordered tiers (lowest first) plus the demotion fraction that gives hysteresis.

    ``true_fan_tier`` is the lowest tier that counts toward the "1000 true fans" goal.
    """

    tiers: Sequence[Tier] = DEFAULT_TIERS
    demote_fraction: float = 0.8
    true_fan_tier: str = "superfan"

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

    def by_score(self, score: float) -> str:
        """The highest tier whose threshold the score reaches."""
        key = self.lowest
        for tier in self.tiers:
            if score >= tier.threshold:
                key = tier.key
        return key

    def evaluate(self, current: str, score: float, pinned: str | None = None) -> str:
        """The tier a fan should hold now.

        A pin wins. Promotion happens at the threshold; demotion only once the score falls below
        ``demote_fraction`` of a tier's threshold, so a score hovering at a boundary never flaps.
        """
        if pinned is not None:
            return pinned
        target = self.by_score(score)
        if self.rank(target) >= self.rank(current):
            return target
        for tier in reversed(self.tiers[: self.rank(current) + 1]):
            if score >= tier.threshold * self.demote_fraction or tier.key == self.lowest:
                return tier.key
        return self.lowest
