"""The daily digest: what needs the creator's attention today, in DESIGN.md's "digest" shape.

Who is still waiting for an answer (overdue first, then higher tiers, then the longest wait), how
the team kept the reply promise over the last week, who moved tier since the last digest, a care
list (super-fans going quiet, fans who asked after the creator, first-interaction anniversaries)
and progress to the true-fans goal. The same data feeds the Discord embed, the LINE text and
``superfan digest --json``.

Read-only and set-based: every section is one or two queries whatever the community's size, so it
runs on a read session (:func:`crm.db.make_read_sessionmaker`) without holding up webhooks.
Opted-out fans are never listed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.conversations import sla_figures
from crm.drop_reports import drop_results
from crm.models import Conversation, Fan, Interaction, JobRun, TierChange, table
from crm.profiles import iso
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.stats import fans_at
from crm.tier_calibration import RISING_WITHIN, below_threshold

JOB = "digest"
SLA_WINDOW_DAYS = 7
#: Without a previous digest, tier changes of this long are shown.
FIRST_SINCE = timedelta(hours=24)
#: Interaction kinds whose text is the fan's own words (not staff's ``dm_out``).
CARE_KINDS = ("message", "dm_in")

_f = table(Fan).c
_i = table(Interaction).c
_tc = table(TierChange).c
_jr = table(JobRun).c
_c = table(Conversation).c


@dataclass(frozen=True)
class Digest:
    """One digest. Field names are the JSON's (DESIGN.md); lists hold at most ``[digest] list_limit``
    entries each, and ``counts`` has the full numbers."""

    generated_at: str
    timezone: str
    locale: str
    since: str
    unanswered: list[dict[str, Any]]
    sla: dict[str, Any]
    tier_changes: list[dict[str, Any]]
    quiet_superfans: list[dict[str, Any]]
    asked_after_you: list[dict[str, Any]]
    anniversaries: list[dict[str, Any]]
    true_fans: dict[str, Any]
    #: Fans within 20% below the next tier's threshold (by score; ``superfan tiers`` also counts the
    #: committed-pace route), closest first.
    rising: list[dict[str, Any]]
    counts: dict[str, int]
    quiet_after_days: int
    drops: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The digest as plain JSON values (what the outbox row and ``--json`` carry)."""
        return dataclasses.asdict(self)


async def build_digest(session: AsyncSession, settings: CrmSettings, now: datetime, *,
                       since: datetime | None = None) -> Digest:
    """Build the digest at ``now``; tier changes after ``since`` (default: the previous digest's run,
    else the last 24 hours)."""
    tz = settings.scoring.tz
    limit = settings.digest.list_limit
    if since is None:
        since = await previous_digest_at(session, now) or now - FIRST_SINCE
    waiting, waiting_count, overdue = await _unanswered(session, settings, now, limit)
    changes, change_count = await _tier_changes(session, settings, since, now, limit)
    quiet, quiet_count = await _quiet_superfans(session, settings, now, limit)
    asked, asked_count = await _asked_after_you(session, settings, now, limit)
    anniversaries = await _anniversaries(session, settings, now)
    rising, rising_count = await _rising(session, settings, now, limit)
    drops = await _drops(session, settings, since, now, limit)
    return Digest(
        generated_at=_iso(now, tz), timezone=str(tz.key), locale=settings.locale, since=_iso(since, tz),
        unanswered=waiting, sla=await _sla(session, settings, now), tier_changes=changes,
        quiet_superfans=quiet, asked_after_you=asked, anniversaries=anniversaries[:limit],
        true_fans=await true_fans(session, settings), rising=rising,
        counts={"rising": rising_count, "unanswered": waiting_count, "overdue": overdue, "tier_changes": change_count,
                "quiet_superfans": quiet_count, "asked_after_you": asked_count, "anniversaries": len(anniversaries)},
        quiet_after_days=settings.digest.quiet_after_days, drops=drops,
    )


async def _drops(session: AsyncSession, settings: CrmSettings, since: datetime, now: datetime,
                 limit: int) -> list[dict[str, Any]]:
    """Drops created, finished or still going out since ``since``: sent / failed / pending, LINE quota used."""
    tz = settings.scoring.tz
    rules = settings.tiers
    out = []
    for d in await drop_results(session, since, now, limit=limit):
        out.append({"id": d["id"], "status": d["status"], "min_tier": d["min_tier"],
                    "tier": rules.name(d["min_tier"], settings.locale) if d["min_tier"] in rules.keys
                    else d["min_tier"], "topic": d["topic"], "platforms": d["platforms"],
                    "sponsored": d["sponsored"], "evergreen": d["evergreen"],
                    "created_at": _iso(datetime.fromisoformat(d["created_at"]), tz),
                    "sent": d["sent"], "failed": d["failed"], "pending": d["pending"],
                    "quota_used": d["quota_used"], "per_platform": d["per_platform"]})
    return out


async def _rising(session: AsyncSession, settings: CrmSettings, now: datetime,
                  limit: int) -> tuple[list[dict[str, Any]], int]:
    """Unpinned fans whose score is within ``RISING_WITHIN`` below the next tier's threshold: one
    range on the ``score_base`` index per tier, so it stays cheap at 100k fans."""
    state, divisor = await current_scores(session, settings.scoring, now)
    tiers = settings.tiers.tiers
    found: list[tuple[float, int, str, float, int]] = []
    for n, (here, nxt) in enumerate(zip(tiers, tiers[1:], strict=False)):
        low = nxt.threshold * (1 - RISING_WITHIN) * divisor
        rows = await session.execute(
            select(_f.id, _f.display_name, _f.score_base)
            .where(_f.tier == here.key, _f.tier_pinned.is_(None), _f.opted_out.is_(False),
                   _f.score_base >= low, _f.score_base < nxt.threshold * divisor))
        found += [(float(base) / divisor / nxt.threshold, fan_id, name, float(base) / divisor, n)
                  for fan_id, name, base in rows]
    # Thousands of fans can be rising at 100k fans: entries are made for the ones shown only.
    found.sort(key=lambda item: (-item[0], item[1]))
    loc = settings.locale
    return [{"fan_id": fan_id, "display_name": name, "tier": settings.tiers.name(tiers[n].key, loc),
             "next_tier": settings.tiers.name(tiers[n + 1].key, loc), "score": below_threshold(score, tiers[n + 1].threshold),
             "threshold": tiers[n + 1].threshold} for _, fan_id, name, score, n in found[:limit]], len(found)


async def previous_digest_at(session: AsyncSession, now: datetime) -> datetime | None:
    """When the last digest before ``now`` was claimed (``job_runs``), if any."""
    return (await session.execute(select(func.max(_jr.started_at)).where(_jr.job == JOB, _jr.started_at < now))
            ).scalar_one_or_none()


def _iso(at: datetime, tz: ZoneInfo) -> str:
    text = iso(at, tz)
    assert text is not None
    return text


async def _unanswered(session: AsyncSession, settings: CrmSettings, now: datetime,
                      limit: int) -> tuple[list[dict[str, Any]], int, int]:
    """The waiting conversations in the SLA's order (overdue first, then higher tiers, then the
    longest wait, as :func:`crm.conversations.unanswered` lists them for the inbox): the first
    ``limit``, the count, and how many are overdue.

    Counted and cut in SQL: the inbox's list builds every waiting conversation in Python, which with
    5,000 open conversations cost 40 ms for the 50 the digest shows."""
    tz, keys = settings.scoring.tz, settings.tiers.keys
    waiting = and_(_c.status == "waiting", _c.waiting_since.is_not(None), _c.due_at.is_not(None))
    joined = table(Conversation).join(table(Fan), _f.id == _c.fan_id)
    overdue = _c.due_at <= now
    # Counted without the fans (every conversation has its fan: a foreign key, deleted with it):
    # 5,000 fan lookups were three quarters of the count.
    count, overdue_count = (await session.execute(
        select(func.count(), func.coalesce(func.sum(case((overdue, 1), else_=0)), 0))
        .select_from(table(Conversation)).where(waiting))).one()
    rank = case({key: n for n, key in enumerate(keys)}, value=_f.tier, else_=-1)  # TierRules has one at least
    rows = await session.execute(
        select(_c.id, _c.fan_id, _f.display_name, _f.tier, _c.platform, _c.waiting_since, _c.due_at)
        .select_from(joined).where(waiting)
        .order_by(case((overdue, 0), else_=1), rank.desc(), _c.waiting_since, _c.id).limit(limit))
    items = [{"conversation_id": cid, "fan_id": fan_id, "display_name": name,
              "tier": settings.tiers.name(tier, settings.locale), "tier_key": tier, "platform": platform,
              "waiting_since": iso(since, tz), "due_at": iso(due, tz), "overdue": due <= now,
              "hours_waiting": round(max(0.0, (now - since).total_seconds()) / 3600.0, 2)}
             for cid, fan_id, name, tier, platform, since, due in rows]
    return items, int(count), int(overdue_count)


async def _sla(session: AsyncSession, settings: CrmSettings, now: datetime) -> dict[str, Any]:
    figures = await sla_figures(session, settings, now, window_days=SLA_WINDOW_DAYS)
    return {"window_days": SLA_WINDOW_DAYS, "conversations": figures.conversations, "answered": figures.answered,
            "within_sla": figures.within_sla, "within_sla_pct": figures.within_sla_pct,
            "median_first_response_hours": figures.median_first_response_hours, "breaches": figures.breaches}


async def _tier_changes(session: AsyncSession, settings: CrmSettings, since: datetime, now: datetime,
                        limit: int) -> tuple[list[dict[str, Any]], int]:
    """Fans whose tier moved after ``since``, one line each, newest first: from the tier before their
    first move to the tier after their last (路人 → 鐵粉, not two lines); a fan back where they
    started is left out. ``reason`` is the last move's. The ``tier_changes.at`` index bounds the scan."""
    tz, rules, loc = settings.scoring.tz, settings.tiers, settings.locale
    per_fan = (select(_tc.fan_id, func.min(_tc.id).label("first"), func.max(_tc.id).label("last"))
               .where(_tc.at > since, _tc.at <= now).group_by(_tc.fan_id).subquery())
    first, last = table(TierChange).alias("first_move"), table(TierChange).alias("last_move")
    joined = (per_fan.join(first, first.c.id == per_fan.c.first).join(last, last.c.id == per_fan.c.last)
              .join(table(Fan), _f.id == per_fan.c.fan_id))
    moved = and_(_f.opted_out.is_(False),
                 or_(first.c.from_tier.is_(None), first.c.from_tier != last.c.to_tier))
    count = (await session.execute(select(func.count()).select_from(joined).where(moved))).scalar_one()
    rows = await session.execute(
        select(per_fan.c.fan_id, _f.display_name, first.c.from_tier, last.c.to_tier, last.c.reason, last.c.at)
        .select_from(joined).where(moved).order_by(last.c.at.desc(), last.c.id.desc()).limit(limit))
    items = []
    for fan_id, name, before, after, reason, at in rows:
        up = before is None or rules.rank(after) > rules.rank(before)
        items.append({"fan_id": fan_id, "display_name": name,
                      "from_tier": rules.name(before, loc) if before else None, "to_tier": rules.name(after, loc),
                      "direction": "up" if up else "down", "reason": reason, "at": iso(at, tz)})
    return items, int(count)


def _true_fan_keys(settings: CrmSettings) -> list[str]:
    rules = settings.tiers
    return rules.keys[rules.rank(rules.true_fan_tier):]


async def _quiet_superfans(session: AsyncSession, settings: CrmSettings, now: datetime,
                           limit: int) -> tuple[list[dict[str, Any]], int]:
    """鐵粉 and above silent for ``quiet_after_days``: the most valuable first."""
    tz = settings.scoring.tz
    quiet = and_(_f.tier.in_(_true_fan_keys(settings)), _f.opted_out.is_(False),
                 _f.last_seen_at < now - timedelta(days=settings.digest.quiet_after_days))
    count = (await session.execute(select(func.count()).select_from(table(Fan)).where(quiet))).scalar_one()
    # Ordered by an expression, not the column: with the column, SQLite walked every fan down the
    # score index looking for quiet true fans (45-150 ms at 100k fans, and all of them when none is
    # quiet) instead of taking the few hundred true fans from the tier index and sorting those.
    rows = await session.execute(select(_f.id, _f.display_name, _f.tier, _f.last_seen_at).where(quiet)
                                 .order_by((_f.score_base + 0).desc(), _f.id).limit(limit))
    return [{"fan_id": i, "display_name": name, "tier": settings.tiers.name(tier, settings.locale),
             "last_seen": iso(seen, tz), "days_quiet": (now - seen).days} for i, name, tier, seen in rows], int(count)


def _like_any(column: Any, phrases: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """``column`` contains one of ``phrases`` (case-insensitive; ``%`` and ``_`` taken literally).

    SQLite's LIKE ignores case already (ASCII, as its ``lower()`` does), so the column is compared
    as it is: ``lower()`` on every summary for every phrase cost a third of the scan (40 of 145 ms
    over a week of 10M interactions). PostgreSQL's ILIKE folds case itself."""
    def pattern(p: str) -> str:
        return "%" + p.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if dialect == "sqlite":
        return or_(*(column.like(pattern(p), escape="\\") for p in phrases))
    return or_(*(column.ilike(pattern(p), escape="\\") for p in phrases))


async def _asked_after_you(session: AsyncSession, settings: CrmSettings, now: datetime,
                           limit: int) -> tuple[list[dict[str, Any]], int]:
    """Fans whose own words of the last ``care_days`` days hold a care phrase, latest first: the
    first ``limit`` and the count.

    Reads stored summaries, so it finds nothing with ``[privacy] store_message_text`` off. Reads the
    window's interactions through the time index (migration 0010): a scan of recent activity, not
    of every interaction ever stored. Each fan's latest matching row is picked in SQL (a window
    function), so only the rows shown come back to Python: at 100k fans a week held ~7,000 matching
    rows from ~5,000 fans, and converting and skipping them in Python cost more than the scan.
    """
    phrases = [p for p in settings.digest.care_phrases if p.strip()]
    if not phrases:
        return [], 0
    tz, start = settings.scoring.tz, now - timedelta(days=settings.digest.care_days)
    latest_first = (_i.occurred_at.desc(), _i.id.desc())
    matches = (select(_i.fan_id, _i.id, _i.platform, _i.occurred_at, _i.summary,
                      func.row_number().over(partition_by=_i.fan_id, order_by=latest_first).label("nth"))
               .where(_i.occurred_at >= start, _i.occurred_at <= now, _i.kind.in_(CARE_KINDS),
                      _i.summary.is_not(None), _like_any(_i.summary, phrases, session.get_bind().dialect.name))
               .subquery())
    # Opted-out fans are left out after the ranking: all of a fan's rows go, so no one else's rank moves.
    rows = (await session.execute(
        select(_f.id, _f.display_name, _f.tier, matches.c.platform, matches.c.occurred_at, matches.c.summary,
               func.count().over().label("fans"))
        .select_from(matches.join(table(Fan), _f.id == matches.c.fan_id))
        .where(matches.c.nth == 1, _f.opted_out.is_(False))
        .order_by(matches.c.occurred_at.desc(), matches.c.id.desc()).limit(max(limit, 1)))).all()
    items = []
    for fan_id, name, tier, platform, at, summary, _ in rows[:limit]:
        said = summary.lower()
        phrase = next((p for p in phrases if p.lower() in said), phrases[0])
        items.append({"fan_id": fan_id, "display_name": name, "tier": settings.tiers.name(tier, settings.locale),
                      "platform": platform, "at": iso(at, tz), "phrase": phrase})
    return items, int(rows[0].fans) if rows else 0


def anniversary_days(today: date, first: date) -> Sequence[date]:
    """The local dates ``years`` ago whose anniversary is ``today``, from ``first`` (the earliest
    first interaction) up; a fan first seen on 29 February is celebrated on 28 February in other years."""
    days = []
    for year in range(today.year - 1, first.year - 1, -1):
        if today.month == 2 and today.day == 29 and not _leap(year):
            continue
        days.append(today.replace(year=year))
        if today.month == 2 and today.day == 28 and not _leap(today.year) and _leap(year):
            days.append(date(year, 2, 29))
    return days


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _local_day(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    following = day + timedelta(days=1)
    return start, datetime(following.year, following.month, following.day, tzinfo=tz)


async def _anniversaries(session: AsyncSession, settings: CrmSettings, now: datetime) -> list[dict[str, Any]]:
    """Fans whose first interaction was on today's local date one or more years ago (longest first)."""
    tz = settings.scoring.tz
    earliest = (await session.execute(select(func.min(_f.first_seen_at)))).scalar_one_or_none()
    if earliest is None:
        return []
    today = now.astimezone(tz).date()
    days = anniversary_days(today, earliest.astimezone(tz).date())
    if not days:
        return []
    ranges = [_local_day(day, tz) for day in days]
    stmt = (select(_f.id, _f.display_name, _f.tier, _f.first_seen_at)
            .where(_f.opted_out.is_(False), or_(*(and_(_f.first_seen_at >= a, _f.first_seen_at < b)
                                                   for a, b in ranges)))
            .order_by(_f.first_seen_at, _f.id))
    return [{"fan_id": i, "display_name": name, "tier": settings.tiers.name(tier, settings.locale),
             "first_seen": iso(first, tz), "years": today.year - first.astimezone(tz).year}
            for i, name, tier, first in await session.execute(stmt)]


async def true_fans(session: AsyncSession, settings: CrmSettings) -> dict[str, Any]:
    """Fans at the true-fan tier or above against the goal (the same figures as ``/stats``)."""
    count = await fans_at(session, _true_fan_keys(settings))
    goal = settings.goal.target
    return {"count": count, "goal": goal, "progress_pct": round(100.0 * count / goal, 1),
            "tier": settings.tiers.name(settings.tiers.true_fan_tier, settings.locale)}
