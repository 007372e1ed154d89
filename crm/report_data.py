"""The figures of ``superfan report``: what the community looks like now and week by week.

Platform-free and read-only: every figure is computed from the database as at an explicit
``now``, in the creator's time zone (weeks start on Monday, local time). The HTML is drawn by
``bot/report.py``; ``superfan demo`` builds the same figures on its own database.

How the history is known:

* fans per tier at the end of a week come from ``tier_changes``: a fan's tier at time W is the
  ``from_tier`` of their first change after W, or their tier today when nothing changed since;
  a fan first seen after W is not counted. Changes are stamped when superfan made them, so an
  import of old history shows its fans arriving in the week it ran;
* the reply promise per week reads ``conversation_waits`` with the rules of :mod:`crm.sla` (spam
  and thank-you closures left out, ``elsewhere`` counts as answered), judged with what is known
  at ``now``: a wait that started in a week and was answered late is a breach of that week;
* LINE's quota: superfan's own count for the calendar month (LINE's figure, which also counts
  broadcasts sent from LINE Official Account Manager, is read by the adapter when it can be).
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import (
    Conversation,
    ConversationWait,
    Delivery,
    Drop,
    Fan,
    Interaction,
    Outbox,
    TierChange,
    table,
)
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.sla import SlaFigures, sla_figures, wait_verdicts

_f, _tc, _w, _c = table(Fan).c, table(TierChange).c, table(ConversationWait).c, table(Conversation).c
_i, _d, _dl, _o = table(Interaction).c, table(Drop).c, table(Delivery).c, table(Outbox).c
#: Weeks the report looks back over, the current one included.
WEEKS_SHOWN = 12
#: Drop summaries are cut to this many characters (the full text is in ``superfan drop show``).
DROP_TEXT_CHARS = 60
#: Delivery states the report counts; any other state is still on its way (counted as pending).
SENT, FAILED, CANCELLED, PENDING = "sent", "failed", "cancelled", "pending"
STATES = (SENT, FAILED, PENDING, CANCELLED)
#: Interaction kinds the engagement chart counts in its first pass (with the scoring weights' kinds);
#: any other kind is still counted, in a second pass over the weeks that have it.
USUAL_KINDS = ("message", "reaction", "dm_in", "dm_out", "share", "checkin", "purchase", "follow", "unfollow")


@dataclass(frozen=True)
class FunnelStep:
    """One tier of the funnel: fans in it now, fans in it or above, and the share of the step below."""

    key: str
    count: int
    at_least: int
    #: ``at_least`` as a percentage of the step below's ``at_least`` (None for the lowest tier).
    of_previous_pct: float | None


@dataclass(frozen=True)
class TrueFans:
    """Fans at the true-fan tier (its key) or above, against ``[goal]``; ``weekly`` at each week's end."""

    tier: str
    count: int
    goal: int
    progress_pct: float
    weekly: list[int]


@dataclass(frozen=True)
class SlaWeek:
    """The reply promise for the waits that started in one week."""

    waits: int
    within_sla: int
    breaches: int
    #: Still open and not yet due at ``now``: not judged yet.
    undecided: int
    within_sla_pct: float | None
    median_first_response_hours: float | None


@dataclass(frozen=True)
class TopFan:
    """One of the best fans by today's score (``tier`` is the tier's key)."""

    rank: int
    fan_id: int
    display_name: str
    tier: str
    score: float
    last_seen: datetime


@dataclass(frozen=True)
class DropResult:
    """One drop and its deliveries per platform: ``{platform: {state: n}}`` for each of :data:`STATES`
    (``cancelled``: the fan opted out before it went)."""

    drop_id: int
    created_at: datetime
    text: str
    min_tier: str
    status: str
    platforms: dict[str, dict[str, int]]


@dataclass(frozen=True)
class LineQuotaUse:
    """LINE messages that count against ``[line] monthly_quota`` this calendar month, as superfan knows them.

    ``pushes`` is an upper bound: a row sent without a fresh reply token of its own is counted as a
    push, though the sender may have answered it with a newer free token. ``drop_messages`` are the
    LINE drop deliveries sent this month (one per recipient). ``replies`` cost nothing.
    """

    month: str
    quota: int | None
    pushes: int
    drop_messages: int
    replies: int

    @property
    def used(self) -> int:
        """Messages counted against the quota this month."""
        return self.pushes + self.drop_messages

    @property
    def used_pct(self) -> float | None:
        return round(100.0 * self.used / self.quota, 1) if self.quota else None


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; lists over weeks line up with ``weeks``; tiers by key (the page names them)."""

    generated_at: datetime
    timezone: str
    weeks: list[datetime]
    fans: int
    #: Interactions over the weeks shown (the sum of ``engagement``).
    interactions: int
    funnel: list[FunnelStep]
    #: tier key → fans in that tier at the end of each week (the last week ends at ``now``).
    tiers_by_week: dict[str, list[int]]
    #: The first tier change on record when it falls inside the weeks shown and fans were known
    #: before it (an import, a new install): earlier weeks show fans in the tier they started in.
    tiers_recorded_from: datetime | None
    true_fans: TrueFans
    sla_recent: SlaFigures
    sla_weeks: list[SlaWeek]
    #: interaction kind → interactions of that kind per week (most frequent kind first).
    engagement: dict[str, list[int]]
    top_fans: list[TopFan]
    drops: list[DropResult]
    line_quota: LineQuotaUse

    @property
    def empty(self) -> bool:
        """Nothing to show yet: no fan, and no interaction in the weeks shown."""
        return self.fans == 0 and self.interactions == 0


def week_starts(now: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
    """The Monday 00:00 (local) that starts each of the last ``count`` weeks, oldest first."""
    local = now.astimezone(tz)
    monday = (local - timedelta(days=local.weekday())).date()
    return [datetime(d.year, d.month, d.day, tzinfo=tz)
            for d in (monday - timedelta(weeks=n) for n in range(count - 1, -1, -1))]


def _week_ends(starts: Sequence[datetime], now: datetime) -> list[datetime]:
    return [*starts[1:], now]


async def build_report(session: AsyncSession, settings: CrmSettings, now: datetime, *, weeks: int = WEEKS_SHOWN,
                       line_quota: int | None = None, top: int = 10, drops: int = 10) -> ReportData:
    """The report's figures as at ``now`` over the last ``weeks`` weeks (the current one included)."""
    tz = settings.scoring.tz
    starts = week_starts(now, tz, weeks)
    ends = _week_ends(starts, now)
    by_week = await tiers_by_week(session, settings, ends, starts[0])
    first_change = (await session.execute(select(func.min(_tc.at)))).scalar_one_or_none()
    known_before = first_change is not None and first_change > starts[0] and (await session.execute(
        select(_f.id).where(_f.first_seen_at < first_change).limit(1))).first() is not None
    counts = {tier: per_week[-1] for tier, per_week in by_week.items()}  # as at ``now``
    rules = settings.tiers
    true_keys = rules.keys[rules.rank(rules.true_fan_tier):]
    true_count = sum(counts.get(k, 0) for k in true_keys)
    goal = settings.goal.target
    engagement = await engagement_by_week(session, starts, ends, list(settings.scoring.weights))
    return ReportData(
        generated_at=now, timezone=settings.scoring.timezone, weeks=starts, fans=sum(counts.values()),
        interactions=sum(sum(v) for v in engagement.values()), funnel=funnel(counts, settings), tiers_by_week=by_week,
        tiers_recorded_from=first_change if known_before else None,
        true_fans=TrueFans(rules.true_fan_tier, true_count, goal,
                           round(100.0 * true_count / goal, 1),
                           [sum(by_week[k][n] for k in true_keys) for n in range(len(starts))]),
        sla_recent=await sla_figures(session, settings, now),
        sla_weeks=await sla_by_week(session, starts, ends, now),
        engagement=engagement,
        top_fans=await top_fans(session, settings, now, top),
        drops=await drop_results(session, drops),
        line_quota=await line_quota_use(session, now, tz, line_quota),
    )


def funnel(counts: dict[str, int], settings: CrmSettings) -> list[FunnelStep]:
    """Fans per tier, lowest first, with how many reached each tier or above."""
    rules = settings.tiers
    keys = rules.keys
    known = {k: counts.get(k, 0) for k in keys}
    known[rules.lowest] += sum(n for k, n in counts.items() if k not in known)  # tiers no longer configured
    steps: list[FunnelStep] = []
    for n, key in enumerate(keys):
        at_least = sum(known[k] for k in keys[n:])
        below = steps[-1].at_least if steps else None
        pct = round(100.0 * at_least / below, 1) if below else None
        steps.append(FunnelStep(key, known[key], at_least, pct))
    return steps


async def tiers_by_week(session: AsyncSession, settings: CrmSettings, ends: Sequence[datetime],
                        since: datetime) -> dict[str, list[int]]:
    """Fans per tier at each of ``ends`` (see the module docstring), from today's tiers and the
    changes after ``since``: one grouped count over all fans, then only the fans that moved."""
    rules = settings.tiers
    keys = rules.keys
    out = {k: [0] * len(ends) for k in keys}

    def tier_of(key: str | None) -> str:
        return key if key in out else rules.lowest

    arrived = _week_of(_f.first_seen_at, ends, inclusive=True)
    by_week = select(_f.tier, arrived.label("week")).where(_f.first_seen_at <= ends[-1]).subquery()
    for tier, week, n in await session.execute(
            select(by_week.c.tier, by_week.c.week, func.count()).group_by(by_week.c.tier, by_week.c.week)):
        for later in range(int(week), len(ends)):  # known from the week they arrived on
            out[tier_of(tier)][later] += int(n)
    moves: dict[int, list[tuple[datetime, str | None]]] = defaultdict(list)
    for fan_id, at, from_tier in await session.execute(
            select(_tc.fan_id, _tc.at, _tc.from_tier).where(_tc.at > since).order_by(_tc.at, _tc.id)):
        moves[int(fan_id)].append((at, from_tier))
    ids = sorted(moves)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for fan_id, tier, first_seen in await session.execute(
                select(_f.id, _f.tier, _f.first_seen_at).where(_f.id.in_(chunk))):
            history = moves[fan_id]
            times = [at for at, _ in history]
            for n, end in enumerate(ends):
                if first_seen > end:
                    continue
                out[tier_of(tier)][n] -= 1  # counted above with today's tier
                later = bisect.bisect_right(times, end)
                out[tier_of(history[later][1] if later < len(history) else tier)][n] += 1
    return out


async def sla_by_week(session: AsyncSession, starts: Sequence[datetime], ends: Sequence[datetime],
                      now: datetime) -> list[SlaWeek]:
    """Per week: waits that started in it, answered within SLA, breaches, and the median first
    response of the conversations opened in it (the digest's figures, week by week).

    The waits are counted per week in one grouped query (:func:`crm.sla.wait_verdicts`); only the
    first responses are read, with their week, for the medians."""
    request, within_sla, breach, undecided = wait_verdicts(now)
    week = _week_of(_w.started_at, ends).label("week")
    weeks = len(starts)
    counts = {int(n): (total, within, breaches, waiting) for n, total, within, breaches, waiting in (
        await session.execute(
            select(week, func.count().filter(request), func.count().filter(within_sla), func.count().filter(breach),
                   func.count().filter(undecided))
            .where(_w.started_at >= starts[0], _w.started_at < ends[-1], _w.started_at <= now).group_by(week)))}
    week_firsts: list[list[float]] = [[] for _ in range(weeks)]
    for n, seconds in await session.execute(
            select(_week_of(_c.opened_at, ends), _c.first_response_seconds)
            .where(_c.opened_at >= starts[0], _c.opened_at < ends[-1], _c.opened_at <= now,
                   _c.first_response_seconds.is_not(None))):
        week_firsts[int(n)].append(seconds)
    out = []
    for n in range(weeks):
        total, within, breaches, waiting = (int(v) for v in counts.get(n, (0, 0, 0, 0)))
        decided = within + breaches
        out.append(SlaWeek(
            total, within, breaches, waiting, round(100.0 * within / decided, 1) if decided else None,
            round(statistics.median(week_firsts[n]) / 3600.0, 2) if week_firsts[n] else None))
    return out


async def engagement_by_week(session: AsyncSession, starts: Sequence[datetime], ends: Sequence[datetime],
                             kinds: Sequence[str] = ()) -> dict[str, list[int]]:
    """Interactions per kind and week (by when they happened, up to and including the last end),
    most frequent kind first.

    Each week is one pass over its range of ``interactions(occurred_at)`` counting kinds with
    ``count(*) FILTER``: no rows to sort (a ``GROUP BY`` sorts them all; with ``temp_store=MEMORY``
    that cost 2.5 times the reading at 2.3M rows). The newest week counts ``kinds`` and
    :data:`USUAL_KINDS`, each older week the kinds seen so far (each one a comparison a row); rows of
    any other kind are grouped in a second pass over that week, only when it has some.
    """
    counted = list(dict.fromkeys([*USUAL_KINDS, *kinds]))
    found: dict[str, list[int]] = {}
    for week in reversed(range(len(ends))):
        start, end = starts[week], ends[week]
        in_week = and_(_i.occurred_at >= start, _i.occurred_at <= end if week == len(ends) - 1 else _i.occurred_at < end)
        total, *per_kind = (await session.execute(
            select(func.count(), *(func.count().filter(_i.kind == kind) for kind in counted)).where(in_week))).one()
        for kind, n in zip(counted, per_kind, strict=True):
            if n:
                found.setdefault(kind, [0] * len(ends))[week] = int(n)
        if total > sum(per_kind):
            for kind, n in await session.execute(
                    select(_i.kind, func.count()).where(in_week, _i.kind.not_in(counted)).group_by(_i.kind)):
                found.setdefault(kind, [0] * len(ends))[week] = int(n)
        counted = list(found)
    return dict(sorted(found.items(), key=lambda kv: (-sum(kv[1]), kv[0])))


def _week_of(column: Any, ends: Sequence[datetime], *, inclusive: bool = False) -> Any:
    """The index of the first week whose end a time comes before (at or before, ``inclusive``), as one
    CASE worked out per row; times past the last end fall in the last week (callers bound them)."""
    before = [(column <= end if inclusive else column < end, n) for n, end in enumerate(ends[:-1])]
    return case(*before, else_=len(ends) - 1) if before else literal(0, Integer)


async def top_fans(session: AsyncSession, settings: CrmSettings, now: datetime, top: int) -> list[TopFan]:
    """The ``top`` fans by today's score; fans who opted out are left out of a report."""
    _, divisor = await current_scores(session, settings.scoring, now)
    rows = await session.execute(
        select(_f.id, _f.display_name, _f.tier, _f.score_base, _f.last_seen_at)
        .where(_f.opted_out.is_(False), _f.score_base > 0, _f.first_seen_at <= now)
        .order_by(_f.score_base.desc(), _f.id).limit(top))
    return [TopFan(n, fan_id, name, tier, round(base / divisor, 1), seen)
            for n, (fan_id, name, tier, base, seen) in enumerate(rows, start=1)]


async def drop_results(session: AsyncSession, limit: int) -> list[DropResult]:
    """The newest ``limit`` drops with their deliveries counted by platform and state."""
    drops = (await session.execute(
        select(_d.id, _d.created_at, _d.text, _d.min_tier, _d.status, _d.platforms)
        .order_by(_d.created_at.desc(), _d.id.desc()).limit(limit))).all()
    if not drops:
        return []
    tally: dict[int, dict[str, dict[str, int]]] = defaultdict(dict)
    for drop_id, platform, status, n in await session.execute(
            select(_dl.drop_id, _dl.platform, _dl.status, func.count())
            .where(_dl.drop_id.in_([d[0] for d in drops])).group_by(_dl.drop_id, _dl.platform, _dl.status)):
        state = status if status in STATES else PENDING
        counts = tally[drop_id].setdefault(platform, dict.fromkeys(STATES, 0))
        counts[state] += int(n)
    out = []
    for drop_id, created, text, min_tier, status, platforms in drops:
        per = tally.get(drop_id, {})
        for platform in (p.strip() for p in (platforms or "").split(",")):
            if platform:
                per.setdefault(platform, dict.fromkeys(STATES, 0))
        short = " ".join(text.split())
        short = short if len(short) <= DROP_TEXT_CHARS else short[: DROP_TEXT_CHARS - 1] + "…"
        out.append(DropResult(drop_id, created, short, min_tier, status, dict(sorted(per.items()))))
    return out


def month_bounds(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar month of ``now`` in ``tz`` (LINE's quota month), as [start, end)."""
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, 1, tzinfo=tz)
    end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
    return start, end


async def line_quota_use(session: AsyncSession, now: datetime, tz: ZoneInfo, quota: int | None) -> LineQuotaUse:
    """What superfan spent of LINE's monthly quota this month (see :class:`LineQuotaUse`)."""
    start, end = month_bounds(now, tz)
    in_month = and_(_o.platform == "line", _o.status == SENT, _o.sent_at >= start, _o.sent_at < end, _o.sent_at <= now)
    carries_drop = select(_dl.outbox_id).where(_dl.outbox_id.is_not(None)).scalar_subquery()
    replied = and_(_o.reply_token.is_not(None), _o.reply_until.is_not(None), _o.sent_at <= _o.reply_until)
    pushes, replies = (await session.execute(
        select(func.sum(case((replied, 0), else_=1)), func.sum(case((replied, 1), else_=0)))
        .where(in_month, _o.id.not_in(carries_drop)))).one()
    drop_messages = (await session.execute(
        select(func.count()).select_from(table(Delivery))
        .where(_dl.platform == "line", _dl.status == SENT, _dl.sent_at >= start, _dl.sent_at < end,
               _dl.sent_at <= now))).scalar_one()
    return LineQuotaUse(start.strftime("%Y-%m"), quota, int(pushes or 0), int(drop_messages or 0), int(replies or 0))
