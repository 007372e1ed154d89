"""The report's figures on a small community built through the real crm functions at known times.

``seed`` is shared with the HTML tests (tests/bot/test_report.py): what the page shows must be
exactly what ``expected`` says here.
"""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm import outbox
from crm.conversations import note_reply, open_conversation
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Conversation, ConversationWait, Delivery, Drop, Fan, Interaction, table
from crm.privacy import set_opt_out
from crm.profiles import fan_documents
from crm.report_data import build_report, week_starts
from crm.settings import CrmSettings
from crm.tiers_service import pin

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # Sunday 20:00 in Taipei: the third week of three
H = timedelta(hours=1)
T1 = datetime(2026, 11, 3, 4, 0, tzinfo=UTC)   # week of 11-02
T2 = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)  # week of 11-09
T3 = datetime(2026, 11, 17, 4, 0, tzinfo=UTC)  # week of 11-16
WEEKS = 3


NAMES = {"Ua": "阿美", "111": "Bo", "Uc": "小陳", "Ud": "Dora", "Ue": "不公開"}


def item(who: str, kind: str, at: datetime, *, platform: str = "line", amount: int | None = None) -> InteractionIn:
    return InteractionIn(platform, who, kind, at, f"{who}-{kind}-{at.timestamp()}", NAMES.get(who, who),
                         amount=Decimal(amount) if amount else None, currency="TWD" if amount else None,
                         text="hello" if kind in ("message", "dm_in") else None)


async def _reply(s: AsyncSession, settings: CrmSettings, fan_id: int, at: datetime, sent_at: datetime) -> None:
    conv = await open_conversation(s, fan_id)
    assert conv is not None
    row = await note_reply(s, settings, conv.id, text="謝謝你", by="staff", now=at)
    await outbox.mark_sent(s, row, sent_at)  # no reply token: a push


async def seed(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings) -> dict[str, int]:
    """Five fans over three weeks, two pins, three DM waits, one drop; fan ids by name."""
    async with sessions.begin() as s:
        first = await record_many(s, [
            item("Ua", "message", T1), item("111", "message", T1, platform="discord"),
            item("111", "purchase", T1, platform="discord", amount=200), item("Uc", "message", T1),
            item("Uc", "share", T1), item("Ue", "purchase", T1, amount=800)], settings, T1)
        ids = dict(zip(["a", "b", "b2", "c", "c2", "e"], first.fan_ids, strict=True))
        await set_opt_out(s, ids["e"], True)
    async with sessions.begin() as s:
        second = await record_many(s, [
            item("Ua", "reaction", T2), item("Ua", "message", T2 + H), item("Ua", "purchase", T2, amount=400),
            item("Ud", "dm_in", T2)], settings, T2)
        ids["d"] = second.fan_ids[3]
        await pin(s, settings, ids["a"], "superfan", by="staff", now=T2)
        await _reply(s, settings, ids["d"], T2 + 2 * H, T2 + 2 * H)  # answered in 2 h
    async with sessions.begin() as s:
        await record_many(s, [item("Uc", "dm_in", T3)], settings, T3)
        await pin(s, settings, ids["b"], "close_friend", by="staff", now=T3)
        await _reply(s, settings, ids["c"], T3 + 30 * H, T3 + 30 * H)  # answered in 30 h: late
        fresh = await outbox.enqueue(s, platform="line", kind="answer", recipient="Uc", payload={"text": "ok"},
                                     now=T3, reply_token="token-1", reply_until=T3 + H)
        assert fresh is not None
        await outbox.mark_sent(s, fresh, T3 + 10 * timedelta(seconds=1))  # within the token's life: free
        carrier = await outbox.enqueue(s, platform="line", kind="drop", recipient="multicast",
                                       payload={"to": ["Ua", "Ub", "Uc"]}, now=T3)
        await outbox.mark_sent(s, carrier, T3 + H)
        drop_id = (await s.execute(insert(table(Drop)).returning(table(Drop).c.id).values(
            text="聖誕限定\n  手機桌布，只給鐵粉以上的你們", min_tier="superfan", platforms="line,discord",
            created_at=T3, status="sending"))).scalar_one()
        for fan, platform, external_id, status, sent_at, carried in [
            ("a", "line", "Ua", "sent", T3 + H, carrier), ("b", "line", "Ub", "failed", None, carrier),
            ("c", "line", "Uc", "pending", None, carrier), ("a", "discord", "1", "sent", T3 + H, None),
        ]:
            await s.execute(insert(table(Delivery)).values(
                drop_id=drop_id, fan_id=ids[fan], platform=platform, external_id=external_id, status=status,
                sent_at=sent_at, outbox_id=carried))
        ids["drop"] = drop_id
    async with sessions.begin() as s:
        await record_many(s, [item("111", "dm_in", NOW - 3 * H, platform="discord")], settings, NOW - 3 * H)
    return ids


def expected(ids: dict[str, int]) -> dict[str, Any]:
    """The figures at NOW over three weeks (zh-TW tier names)."""
    return {
        "fans": 5,
        "interactions": 14,
        "funnel": {"passerby": (3, 5, None), "fan": (0, 2, 40.0), "superfan": (1, 2, 100.0),
                   "close_friend": (1, 1, 50.0)},
        "tiers_by_week": {"passerby": [4, 4, 3], "fan": [0, 0, 0], "superfan": [0, 1, 1], "close_friend": [0, 0, 1]},
        "true_fans_weekly": [0, 1, 2],
        # waits, within, breaches, undecided, % within, median first response (h)
        "sla_weeks": [(0, 0, 0, 0, None, None), (1, 1, 0, 0, 100.0, 2.0), (2, 0, 1, 1, 0.0, 30.0)],
        "engagement": {"message": [3, 1, 0], "dm_in": [0, 1, 2], "dm_out": [0, 1, 1], "purchase": [2, 1, 0],
                       "reaction": [0, 1, 0], "share": [1, 0, 0]},
        "top_names": ["阿美", "Bo", "小陳", "Dora"],  # the opted-out fan's 800 NT$ would lead: left out
        "drop": {"line": {"sent": 1, "failed": 1, "pending": 1, "cancelled": 0},
                 "discord": {"sent": 1, "failed": 0, "pending": 0, "cancelled": 0}},
        "quota": {"pushes": 2, "replies": 1, "drop_messages": 1},
    }


async def test_report_figures_match_what_happened(sessions, settings):
    ids = await seed(sessions, settings)
    want = expected(ids)
    async with sessions() as s:
        data = await build_report(s, settings, NOW, weeks=WEEKS, line_quota=200)
        docs = await fan_documents(s, await _fans(s), settings, NOW, interactions=None)
    assert data.fans == want["fans"] and data.interactions == want["interactions"]
    assert {f.key: (f.count, f.at_least, f.of_previous_pct) for f in data.funnel} == want["funnel"]
    assert data.tiers_by_week == want["tiers_by_week"]
    assert data.true_fans.weekly == want["true_fans_weekly"]
    assert (data.true_fans.count, data.true_fans.goal, data.true_fans.tier) == (2, 1000, "superfan")
    assert [(w.waits, w.within_sla, w.breaches, w.undecided, w.within_sla_pct, w.median_first_response_hours)
            for w in data.sla_weeks] == want["sla_weeks"]
    assert (data.sla_recent.within_sla, data.sla_recent.breaches, data.sla_recent.median_first_response_hours) \
        == (0, 1, 30.0)
    assert data.engagement == want["engagement"]
    assert list(data.engagement)[:3] == ["message", "dm_in", "purchase"]  # most frequent first
    scores = {d["id"]: d["score"] for d in docs}
    assert [f.display_name for f in data.top_fans] == want["top_names"]
    assert [f.score for f in data.top_fans] == [round(scores[f.fan_id], 1) for f in data.top_fans]
    assert ids["e"] not in {f.fan_id for f in data.top_fans}
    (drop,) = data.drops
    assert drop.platforms == want["drop"]
    assert drop.text == "聖誕限定 手機桌布，只給鐵粉以上的你們" and drop.min_tier == "superfan"
    q = data.line_quota
    assert (q.month, q.quota, q.pushes, q.replies, q.drop_messages) == ("2026-11", 200, 2, 1, 1)
    assert (q.used, q.used_pct) == (3, 1.5)


async def _fans(s: AsyncSession) -> list[Fan]:
    return list((await s.execute(select(Fan))).scalars())


async def test_weeks_start_on_monday_in_the_creators_time_zone():
    tz = ZoneInfo("Asia/Taipei")
    starts = week_starts(NOW, tz, 3)
    assert [w.isoformat() for w in starts] == ["2026-11-02T00:00:00+08:00", "2026-11-09T00:00:00+08:00",
                                                "2026-11-16T00:00:00+08:00"]
    # Sunday 23:30 in Taipei is Sunday 15:30 UTC: still the week that began on Monday the 16th.
    assert week_starts(datetime(2026, 11, 22, 15, 30, tzinfo=UTC), tz, 1)[0].day == 16
    assert week_starts(datetime(2026, 11, 22, 16, 30, tzinfo=UTC), tz, 1)[0].day == 23


async def test_history_counts_a_fan_in_the_tier_they_held_then(sessions, settings):
    """A fan promoted and later demoted shows each tier in its own week, and is absent before first seen."""
    async with sessions.begin() as s:
        (fid,) = (await record_many(s, [item("Ux", "message", T1)], settings, T1)).fan_ids
        await pin(s, settings, fid, "close_friend", by="staff", now=T2)
        await pin(s, settings, fid, None, by="staff", now=T3)  # unpinned: back to what the score says
        (late,) = (await record_many(s, [item("Uy", "message", T3)], settings, T3)).fan_ids
    async with sessions() as s:
        data = await build_report(s, settings, NOW, weeks=4)
    assert data.tiers_by_week["passerby"] == [0, 1, 0, 2]
    assert data.tiers_by_week["close_friend"] == [0, 0, 1, 0]
    assert data.tiers_recorded_from == T2  # Ux was known before the first change: the page says so
    async with sessions() as s:
        covered = await build_report(s, settings, NOW, weeks=1)
    assert covered.tiers_recorded_from is None  # changes on record since before the first week shown


async def test_an_empty_database_gives_zeros_not_errors(sessions, settings):
    async with sessions() as s:
        data = await build_report(s, settings, NOW, weeks=WEEKS)
    assert data.empty and data.fans == 0 and data.interactions == 0
    assert [f.at_least for f in data.funnel] == [0, 0, 0, 0]
    assert all(v == [0, 0, 0] for v in data.tiers_by_week.values())
    assert data.engagement == {} and data.top_fans == [] and data.drops == []
    assert data.tiers_recorded_from is None
    assert [w.within_sla_pct for w in data.sla_weeks] == [None, None, None]
    assert data.sla_recent.within_sla_pct is None
    assert (data.line_quota.used, data.line_quota.quota, data.line_quota.used_pct) == (0, None, None)


async def test_fans_first_seen_after_now_are_not_counted(sessions, settings):
    """A report built as at an earlier time leaves out what happened after it."""
    await seed(sessions, settings)
    async with sessions() as s:
        data = await build_report(s, settings, T2 - H, weeks=2)
    assert data.fans == 4  # Dora arrives at T2
    assert data.interactions == 6
    assert data.tiers_by_week["passerby"] == [4, 4] and data.tiers_by_week["superfan"] == [0, 0]


async def test_only_sent_rows_of_this_month_count_against_the_quota(sessions, settings):
    await seed(sessions, settings)
    async with sessions.begin() as s:
        await s.execute(update(table(Delivery)).values(sent_at=T1 - 10 * 24 * H))  # October: last month
    async with sessions() as s:
        q = (await build_report(s, settings, NOW, weeks=1, line_quota=200)).line_quota
        december = (await build_report(s, settings, datetime(2026, 12, 1, 0, 0, tzinfo=UTC), weeks=1,
                                       line_quota=200)).line_quota
    assert (q.pushes, q.drop_messages) == (2, 0)
    assert december.month == "2026-12" and december.used == 0  # Taipei is already in December


# A generated community for the weekly figures: rows on every week's edges, before the first week
# and after ``now``, kinds no chart knows in advance, waits ended in every way (or ended after ``now``).
GEN_WEEKS = 5
KINDS = ("message", "message", "message", "reaction", "dm_in", "share", "purchase", "checkin", "event_checkin",
         "stream_view", "poll_vote")
ENDINGS = (None, "reply", "reply", "elsewhere", "spam", "thanks")


def _edge_times(rng: random.Random, starts: list[datetime], now: datetime, n: int) -> list[datetime]:
    """``n`` times from two days before the first week to a day after ``now``, a third of them on or
    one microsecond either side of a week's edge (or of ``now``)."""
    edges = [*starts, now]
    span = (now + timedelta(days=1) - (starts[0] - timedelta(days=2))).total_seconds()
    out = []
    for _ in range(n):
        if rng.random() < 0.35:
            out.append(rng.choice(edges) + rng.choice((-1, 0, 0, 1)) * timedelta(microseconds=1))
        else:
            out.append(starts[0] - timedelta(days=2) + timedelta(seconds=rng.uniform(0, span)))
    return out


def _week(at: datetime, starts: list[datetime], now: datetime, *, last_inclusive: bool) -> int | None:
    """The week a time falls in as the module docstring says it (brute force: every week tried)."""
    ends = [*starts[1:], now]
    for n, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if start <= at < end or (last_inclusive and n == len(ends) - 1 and at == end):
            return n
    return None


async def _generated_community(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
                               starts: list[datetime], now: datetime, seed: int) -> None:
    rng = random.Random(seed)
    times = _edge_times(rng, starts, now, 400)
    items = [InteractionIn("line", f"U{rng.randrange(12)}", rng.choice(KINDS), at, f"gen-{n}", None)
             for n, at in enumerate(times)]
    async with sessions.begin() as s:
        fan_ids = (await record_many(s, items, settings, now + timedelta(days=2))).fan_ids
        conv_ids = []
        for opened in _edge_times(rng, starts, now, 40):
            answered = rng.random() < 0.8
            conv_ids.append((await s.execute(insert(table(Conversation)).returning(table(Conversation).c.id).values(
                fan_id=rng.choice(fan_ids), platform="line", status="answered" if answered else "waiting",
                opened_at=opened,
                first_response_seconds=rng.choice((60.0, 3600.0, 7200.0, rng.uniform(1, 90_000))) if answered
                else None))).scalar_one())
        for started in _edge_times(rng, starts, now, 150):
            due = rng.choice((started + timedelta(hours=rng.uniform(0, 48)), now, started, max(started, now) + H))
            how = rng.choice(ENDINGS)
            ended = None if how is None else rng.choice(
                (due, due + timedelta(microseconds=1), started + timedelta(hours=rng.uniform(0, 72)), now))
            await s.execute(insert(table(ConversationWait)).values(
                conversation_id=rng.choice(conv_ids), fan_id=rng.choice(fan_ids), started_at=started, due_at=due,
                ended_at=ended, ended_by=how))


def _verdict(due: datetime, ended: datetime | None, how: str | None, now: datetime) -> str | None:
    """A wait at ``now``, as crm/sla.py's docstrings say: None (not a request), within, breach or undecided."""
    if how in ("spam", "thanks"):
        return None
    if ended is not None and ended <= now and how in ("reply", "elsewhere"):
        return "within" if ended <= due else "breach"
    return "breach" if due <= now else "undecided"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_weekly_figures_equal_a_brute_force_count_on_a_generated_community(sessions, settings, seed):
    """Engagement per kind and week, the reply promise per week and over the last 7 days: each
    equals a count of the stored rows one by one (every row tried against every week)."""
    starts = week_starts(NOW, settings.scoring.tz, GEN_WEEKS)
    await _generated_community(sessions, settings, starts, NOW, seed)
    async with sessions() as s:
        data = await build_report(s, settings, NOW, weeks=GEN_WEEKS)
        rows = (await s.execute(select(table(Interaction).c.kind, table(Interaction).c.occurred_at))).all()
        waits = (await s.execute(select(table(ConversationWait).c.conversation_id, table(ConversationWait).c.started_at,
                                        table(ConversationWait).c.due_at, table(ConversationWait).c.ended_at,
                                        table(ConversationWait).c.ended_by))).all()
        firsts = (await s.execute(select(table(Conversation).c.opened_at,
                                         table(Conversation).c.first_response_seconds))).all()
    assert len(rows) == 400

    engagement: dict[str, list[int]] = {}
    for kind, at in rows:
        week = _week(at, starts, NOW, last_inclusive=True)
        if week is not None:
            engagement.setdefault(kind, [0] * GEN_WEEKS)[week] += 1
    assert data.engagement == dict(sorted(engagement.items(), key=lambda kv: (-sum(kv[1]), kv[0])))
    assert {"stream_view", "poll_vote"} <= set(data.engagement)  # kinds no list names are counted too
    assert data.interactions == sum(map(sum, engagement.values()))

    tally = [{"within": 0, "breach": 0, "undecided": 0} for _ in range(GEN_WEEKS)]
    medians: list[list[float]] = [[] for _ in range(GEN_WEEKS)]
    for _, started, due, ended, how in waits:
        week, verdict = _week(started, starts, NOW, last_inclusive=False), _verdict(due, ended, how, NOW)
        if week is not None and verdict is not None:
            tally[week][verdict] += 1
    for opened, seconds in firsts:
        week = _week(opened, starts, NOW, last_inclusive=False)
        if week is not None and seconds is not None:
            medians[week].append(seconds)
    want = []
    for counts, week_firsts in zip(tally, medians, strict=True):
        decided = counts["within"] + counts["breach"]
        want.append((sum(counts.values()), counts["within"], counts["breach"], counts["undecided"],
                     round(100.0 * counts["within"] / decided, 1) if decided else None,
                     round(statistics.median(week_firsts) / 3600.0, 2) if week_firsts else None))
    assert [(w.waits, w.within_sla, w.breaches, w.undecided, w.within_sla_pct, w.median_first_response_hours)
            for w in data.sla_weeks] == want
    assert sum(w.breaches for w in data.sla_weeks) > 0 and sum(w.undecided for w in data.sla_weeks) > 0

    since = NOW - timedelta(days=7)
    recent = [(cid, ended, how, _verdict(due, ended, how, NOW)) for cid, started, due, ended, how in waits
              if since <= started <= NOW]
    verdicts = [v for *_, v in recent]
    recent_firsts = [sec for opened, sec in firsts if since <= opened <= NOW and sec is not None]
    figures = data.sla_recent
    assert (figures.conversations, figures.answered, figures.within_sla, figures.breaches) == (
        len({cid for cid, *_ in recent}),
        sum(1 for _, ended, how, _ in recent if ended is not None and ended <= NOW and how in ("reply", "elsewhere")),
        verdicts.count("within"), verdicts.count("breach"))
    assert figures.median_first_response_hours == (
        round(statistics.median(recent_firsts) / 3600.0, 2) if recent_firsts else None)


async def test_a_kind_missing_from_the_newest_weeks_is_still_counted_in_older_ones(sessions, settings):
    """Weeks are counted newest first with the kinds seen so far: a kind (even one no list names)
    that only older weeks have, and weeks after an empty newest week, are counted all the same."""
    async with sessions.begin() as s:
        await record_many(s, [item("Ua", "message", T1), item("Ua", "share", T1), item("Ub", "stream_view", T1),
                              item("Ub", "referral", T2), item("Ua", "message", T2 + H)], settings, NOW)
    async with sessions() as s:
        data = await build_report(s, settings, NOW, weeks=WEEKS)
        empty_newest = await build_report(s, settings, NOW + timedelta(weeks=1), weeks=WEEKS + 1)
    assert data.engagement == {"message": [1, 1, 0], "referral": [0, 1, 0], "share": [1, 0, 0],
                               "stream_view": [1, 0, 0]}
    assert empty_newest.engagement == {kind: [*per_week, 0] for kind, per_week in data.engagement.items()}
