"""The domain's view of configuration: plain values, no file or environment access."""

from __future__ import annotations

from dataclasses import dataclass, field

from crm.reply_hours import ReplyHours
from crm.scoring import ScoringRules
from crm.tiers import TierRules

#: Short messages that thank rather than ask: after a reply they do not restart the SLA clock.
DEFAULT_THANKS = ("謝謝", "感謝", "thanks", "thank you", "👍", "[sticker]")


@dataclass(frozen=True)
class TrueFanGoal:
    """Either a count, or an income goal divided by the yearly spend of one true fan."""

    count: int | None = None
    income: float | None = None
    yearly_spend_per_fan: float | None = None
    currency: str = "TWD"

    @property
    def target(self) -> int:
        if self.count:
            return self.count
        if self.income and self.yearly_spend_per_fan:
            return max(1, round(self.income / self.yearly_spend_per_fan))
        return 1000


@dataclass(frozen=True)
class DigestRules:
    """What the daily digest looks for (``[digest]``): who is going quiet, who asked after the creator."""

    #: A 鐵粉 (or higher) silent this many days is on the care list.
    quiet_after_days: int = 14
    #: Phrases that mean a fan is asking after the creator; matched in stored message summaries.
    care_phrases: tuple[str, ...] = ("最近好嗎", "好久沒發文", "還好嗎", "are you ok", "miss your posts")
    #: How many days back the phrases are looked for.
    care_days: int = 7
    #: Each list of the digest holds at most this many entries (its full count is in ``counts``).
    list_limit: int = 50


@dataclass(frozen=True)
class SlaRules:
    """The reply promise (``[sla]``): answer within ``reply_within_hours`` of reply time.

    ``thanks``: whole messages (case, spaces and trailing punctuation aside) that do not reopen
    an answered conversation; ``[sticker]`` stands for any sticker. ``inbox``: a staff inbox
    exists (Discord on with an inbox channel), so inbound DMs, reminders and breaches are queued
    for it; without one the clock still runs and the digest and ``superfan inbox`` show it.
    """

    reply_within_hours: float = 24.0
    remind_before_hours: float = 4.0
    calendar: ReplyHours = field(default_factory=ReplyHours)
    thanks: tuple[str, ...] = DEFAULT_THANKS
    inbox: bool = False


@dataclass(frozen=True)
class DropRules:
    """Exclusive drops (``[drops]``): which platform a fan on both receives a drop on, and the
    disclosure a sponsored drop starts with (the seeds require #廣告 or #贊助 on paid content)."""

    #: ``discord``, ``line`` (the other one when the fan cannot be reached there) or ``both``.
    prefer: str = "discord"
    disclosure: str = "#廣告"
    #: Discord channel per tier key where a drop for that tier is also posted (absent: no post).
    tier_channel_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmSettings:
    scoring: ScoringRules = field(default_factory=ScoringRules)
    tiers: TierRules = field(default_factory=TierRules)
    goal: TrueFanGoal = field(default_factory=TrueFanGoal)
    locale: str = "zh-TW"
    #: Keep a short summary of message text on interactions (off: nothing of the text is stored).
    store_text: bool = True
    summary_chars: int = 140
    sla: SlaRules = field(default_factory=SlaRules)
    digest: DigestRules = field(default_factory=DigestRules)
    drops: DropRules = field(default_factory=DropRules)
