"""Who receives a drop, on which platform, and who is left out and why.

Eligible: at or above the drop's tier (a staff pin is the tier), with the topic among their
preferences or tags when the drop has one, not opted out, and **reachable** on one of the drop's
platforms:

* LINE: the fan has a LINE identity and their latest ``follow``/``unfollow`` on LINE is not an
  unfollow (blocking the account arrives as an unfollow);
* Discord: a Discord identity, not left the server (latest ``follow``/``unfollow`` on Discord,
  i.e. joined/left), and Discord has not refused the bot's DMs (``identities.dm_closed_at``).

A fan reachable on both gets the drop once, on ``[drops] prefer`` (``discord``/``line``; the other
when the preferred one is unreachable), or on each with ``both``. Everything is read in a few
set-based queries joined on the tier filter, so a preview of 10^4 recipients is a handful of trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import BadInput
from crm.models import Fan, FanTopic, Identity, Interaction
from crm.settings import CrmSettings

PLATFORMS = ("line", "discord")
PREFER = ("discord", "line", "both")
#: Why an at-tier fan does not receive a drop (catalogue keys ``drops.reason.<reason>``).
REASONS = ("opted_out", "topic", "unfollowed", "left_server", "dms_closed", "no_platform")
_UNREACHABLE = {"line": "unfollowed", "discord": "left_server"}


@dataclass(frozen=True)
class Recipient:
    fan_id: int
    display_name: str
    platform: str
    external_id: str


@dataclass
class Audience:
    """The recipients (each fan once per platform it goes to) and the at-tier fans left out."""

    recipients: list[Recipient] = field(default_factory=list)
    #: reason → fan ids, in id order.
    left_out: dict[str, list[int]] = field(default_factory=dict)

    def on(self, platform: str) -> list[Recipient]:
        return [r for r in self.recipients if r.platform == platform]

    def counts(self) -> dict[str, int]:
        return {p: sum(1 for r in self.recipients if r.platform == p) for p in PLATFORMS}


@dataclass
class _Reach:
    ids: dict[str, str] = field(default_factory=dict)  # platform → external id
    dms_closed: bool = False
    latest: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (platform, kind) → newest

    def problem(self, platform: str) -> str | None:
        """None when reachable on ``platform``, else why not."""
        if platform not in self.ids:
            return "no_platform"
        left, joined = self.latest.get((platform, "unfollow")), self.latest.get((platform, "follow"))
        if left is not None and (joined is None or left > joined):
            return _UNREACHABLE[platform]
        if platform == "discord" and self.dms_closed:
            return "dms_closed"
        return None


def qualifying_tiers(settings: CrmSettings, min_tier: str) -> list[str]:
    """The tier keys at or above ``min_tier`` (a key or a display name)."""
    rules = settings.tiers
    key = rules.resolve(min_tier)
    return [k for k in rules.keys if rules.rank(k) >= rules.rank(key)]


def check_platforms(platforms: Iterable[str]) -> tuple[str, ...]:
    """``line``/``discord`` in canonical order; raises BadInput for anything else or none."""
    given = {p.strip().lower() for p in platforms if p.strip()}
    bad = sorted(given - set(PLATFORMS))
    if bad or not given:
        raise BadInput(f"platforms must be line and/or discord, not {sorted(given)!r}", code="drop.bad_platform",
                       platforms=", ".join(sorted(given)) or "-")
    return tuple(p for p in PLATFORMS if p in given)


async def plan_audience(session: AsyncSession, settings: CrmSettings, *, min_tier: str, platforms: Sequence[str],
                        topic: str | None = None, fan_ids: Sequence[int] | None = None) -> Audience:
    """The drop's recipients and the at-tier fans left out (optionally among ``fan_ids`` only)."""
    tiers = qualifying_tiers(settings, min_tier)
    chosen = check_platforms(platforms)
    prefer = settings.drops.prefer
    at_tier = select(Fan.id).where(func.coalesce(Fan.tier_pinned, Fan.tier).in_(tiers))
    if fan_ids is not None:
        at_tier = at_tier.where(Fan.id.in_(sorted(set(fan_ids))))
    fans = (await session.execute(select(Fan.id, Fan.display_name, Fan.opted_out)
                                  .where(Fan.id.in_(at_tier)).order_by(Fan.id))).all()
    with_topic = await _with_topic(session, at_tier, topic) if topic else None
    reach = await _reach(session, at_tier)
    audience = Audience()
    for fan_id, name, opted_out in fans:
        fan_id = int(fan_id)
        if opted_out:
            reason: str | None = "opted_out"
        elif with_topic is not None and fan_id not in with_topic:
            reason = "topic"
        else:
            state = reach.get(fan_id, _Reach())
            problems = {p: state.problem(p) for p in chosen}
            usable = [p for p in chosen if problems[p] is None]
            for platform in _pick(usable, prefer):
                audience.recipients.append(Recipient(fan_id, name, platform, state.ids[platform]))
            reason = None if usable else _why(problems, prefer)
        if reason is not None:
            audience.left_out.setdefault(reason, []).append(fan_id)
    return audience


def _pick(usable: list[str], prefer: str) -> list[str]:
    if prefer == "both" or len(usable) < 2:
        return usable
    return [prefer if prefer in usable else usable[0]]


def _why(problems: dict[str, str | None], prefer: str) -> str:
    """The reason shown for a fan reachable nowhere: an account they left beats having none."""
    order = sorted(problems, key=lambda p: p != prefer)
    found = [why for p in order if (why := problems[p]) is not None and why != "no_platform"]
    return found[0] if found else "no_platform"


async def _with_topic(session: AsyncSession, at_tier: Select[Any], topic: str) -> set[int]:
    from crm.topics import normalise_topic

    key = normalise_topic(topic)
    rows = await session.execute(select(FanTopic.fan_id).where(FanTopic.fan_id.in_(at_tier), FanTopic.topic == key))
    return {int(fan_id) for (fan_id,) in rows}


async def _reach(session: AsyncSession, at_tier: Select[Any]) -> dict[int, _Reach]:
    found: dict[int, _Reach] = {}
    identities = await session.execute(
        select(Identity.fan_id, Identity.platform, Identity.external_id, Identity.dm_closed_at)
        .where(Identity.fan_id.in_(at_tier), Identity.platform.in_(PLATFORMS)).order_by(Identity.id))
    for fan_id, platform, external_id, dm_closed_at in identities:
        state = found.setdefault(int(fan_id), _Reach())
        if platform not in state.ids:  # a merged fan with two accounts on one platform: the first
            state.ids[platform] = external_id
            if platform == "discord":
                state.dms_closed = dm_closed_at is not None
    memberships = await session.execute(
        select(Interaction.fan_id, Interaction.platform, Interaction.kind, func.max(Interaction.occurred_at))
        .where(Interaction.fan_id.in_(at_tier), Interaction.kind.in_(("follow", "unfollow")),
               Interaction.platform.in_(PLATFORMS))
        .group_by(Interaction.fan_id, Interaction.platform, Interaction.kind))
    for fan_id, platform, kind, newest in memberships:
        if int(fan_id) in found:
            found[int(fan_id)].latest[(platform, kind)] = newest
    return found
