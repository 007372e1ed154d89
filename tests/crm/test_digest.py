"""The daily digest on fixed data: exact lists, in the creator's time zone, opted-out fans never shown.

``seed`` is also used by the CLI test (tests/bot/test_digest_job.py): ``superfan digest --json
--now`` must print exactly these lists.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.conversations import note_reply, open_conversation
from crm.digest import anniversary_days, build_digest
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan, JobRun, TierChange, table
from crm.settings import CrmSettings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # 20:00 in Taipei
H = timedelta(hours=1)
D = timedelta(days=1)


def msg(who: str, kind: str, at: datetime, text: str | None = None, name: str | None = None,
        platform: str = "line") -> InteractionIn:
    return InteractionIn(platform, who, kind, at, f"{who}-{kind}-{at.timestamp()}", name or who, text=text)


async def seed(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings) -> dict[str, int]:
    """Seven fans and a previous digest; returns fan ids by name."""
    items = [
        msg("Uming", "message", NOW - 30 * D, "晚安", "阿明"),                          # 鐵粉, quiet 30 days
        msg("Uhui", "dm_in", NOW - 2 * D, "最近好嗎？好久沒看到你", "小慧", "discord"),  # asks, waits, overdue
        msg("Uken", "message", NOW - 1 * D, "Are you OK?  Miss your posts", "Ken"),  # asks (public)
        msg("Uken", "dm_in", NOW - 3 * H, "請問周邊什麼時候到", "Ken"),                 # waits, in time
        msg("Ulu", "dm_in", NOW - 5 * H, "hi", "路人甲"),                              # waits, in time
        msg("Ugone", "message", NOW - 40 * D, "最近好嗎", "不記錄"),                     # opted out
        msg("Uok", "dm_in", NOW - 3 * D, "謝謝", "答好了"),                             # answered in 2 h
    ]
    async with sessions.begin() as s:
        rec = await record_many(s, items, settings, NOW - 30 * D + H)
        ids = dict(zip(["ming", "hui", "ken", "ken2", "lu", "gone", "ok"], rec.fan_ids, strict=True))
        conv = await open_conversation(s, ids["ok"])
        assert conv is not None
        await note_reply(s, settings, conv.id, text="收到", by="staff", now=NOW - 3 * D + 2 * H)
        # Tiers, first interactions and a staff message are set by hand: the digest reads them as stored.
        fans = table(Fan)
        for name, tier, first, seen in [
            ("ming", "superfan", datetime(2024, 11, 22, 2, 0, tzinfo=UTC), NOW - 30 * D),   # 10:00 local: 2 years
            ("hui", "close_friend", datetime(2025, 3, 1, tzinfo=UTC), NOW - 2 * D),
            ("ken", "fan", datetime(2026, 1, 5, tzinfo=UTC), NOW - 3 * H),
            ("lu", "passerby", datetime(2025, 11, 21, 17, 0, tzinfo=UTC), NOW - 5 * H),  # 11-22 01:00 local: 1 year
            ("gone", "superfan", datetime(2023, 11, 22, 4, 0, tzinfo=UTC), NOW - 40 * D),
            ("ok", "passerby", datetime(2025, 11, 22, 16, 30, tzinfo=UTC), NOW - 3 * D),  # 11-23 00:30 local: no
        ]:
            await s.execute(update(fans).where(fans.c.id == ids[name])
                            .values(tier=tier, first_seen_at=first, last_seen_at=seen))
        await s.execute(update(fans).where(fans.c.id == ids["gone"]).values(opted_out=True))
        await s.execute(table(TierChange).delete())
        await s.execute(insert(table(TierChange)), [
            {"fan_id": ids["ken"], "from_tier": "passerby", "to_tier": "fan", "reason": "score", "at": NOW - 2 * D},
            {"fan_id": ids["lu"], "from_tier": None, "to_tier": "passerby", "reason": "score", "at": NOW - 3 * H},
            {"fan_id": ids["ming"], "from_tier": "close_friend", "to_tier": "superfan", "reason": "decay",
             "at": NOW - 1 * H},
            {"fan_id": ids["gone"], "from_tier": "fan", "to_tier": "superfan", "reason": "score", "at": NOW - 2 * H},
        ])
        await s.execute(insert(table(JobRun)), [{"job": "digest", "run_key": "2026-11-21", "started_at": NOW - 1 * D}])
    return ids


def expected_lists(ids: dict[str, int]) -> dict[str, Any]:
    """What the digest at NOW lists (zh-TW, Asia/Taipei)."""
    return {
        "unanswered": [
            {"conversation_id": 0, "fan_id": ids["hui"], "display_name": "小慧", "tier": "摯友",
             "tier_key": "close_friend", "platform": "discord", "waiting_since": "2026-11-20T20:00:00+08:00",
             "due_at": "2026-11-21T20:00:00+08:00", "overdue": True, "hours_waiting": 48.0},
            {"conversation_id": 0, "fan_id": ids["ken"], "display_name": "Ken", "tier": "粉絲", "tier_key": "fan",
             "platform": "line", "waiting_since": "2026-11-22T17:00:00+08:00", "due_at": "2026-11-23T17:00:00+08:00",
             "overdue": False, "hours_waiting": 3.0},
            {"conversation_id": 0, "fan_id": ids["lu"], "display_name": "路人甲", "tier": "路人",
             "tier_key": "passerby", "platform": "line", "waiting_since": "2026-11-22T15:00:00+08:00",
             "due_at": "2026-11-23T15:00:00+08:00", "overdue": False, "hours_waiting": 5.0},
        ],
        "tier_changes": [
            {"fan_id": ids["ming"], "display_name": "阿明", "from_tier": "摯友", "to_tier": "鐵粉",
             "direction": "down", "reason": "decay", "at": "2026-11-22T19:00:00+08:00"},
            {"fan_id": ids["lu"], "display_name": "路人甲", "from_tier": None, "to_tier": "路人",
             "direction": "up", "reason": "score", "at": "2026-11-22T17:00:00+08:00"},
        ],
        "quiet_superfans": [
            {"fan_id": ids["ming"], "display_name": "阿明", "tier": "鐵粉", "last_seen": "2026-10-23T20:00:00+08:00",
             "days_quiet": 30},
        ],
        "asked_after_you": [
            {"fan_id": ids["ken"], "display_name": "Ken", "tier": "粉絲", "platform": "line",
             "at": "2026-11-21T20:00:00+08:00", "phrase": "are you ok"},
            {"fan_id": ids["hui"], "display_name": "小慧", "tier": "摯友", "platform": "discord",
             "at": "2026-11-20T20:00:00+08:00", "phrase": "最近好嗎"},
        ],
        "anniversaries": [
            {"fan_id": ids["ming"], "display_name": "阿明", "tier": "鐵粉", "first_seen": "2024-11-22T10:00:00+08:00",
             "years": 2},
            {"fan_id": ids["lu"], "display_name": "路人甲", "tier": "路人", "first_seen": "2025-11-22T01:00:00+08:00",
             "years": 1},
        ],
    }


def without_conversation_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**u, "conversation_id": 0} for u in items]


async def test_digest_lists_exactly_who_needs_attention(sessions, settings):
    ids = await seed(sessions, settings)
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    expected = expected_lists(ids)
    assert without_conversation_ids(digest["unanswered"]) == expected["unanswered"]
    for key in ("tier_changes", "quiet_superfans", "asked_after_you", "anniversaries"):
        assert digest[key] == expected[key], key
    assert digest["generated_at"] == "2026-11-22T20:00:00+08:00"
    assert digest["timezone"] == "Asia/Taipei"
    assert digest["since"] == "2026-11-21T20:00:00+08:00"  # the previous digest
    assert digest["sla"] == {"window_days": 7, "conversations": 4, "answered": 1, "within_sla": 1,
                             "within_sla_pct": 50.0, "median_first_response_hours": 2.0, "breaches": 1}
    assert digest["true_fans"] == {"count": 3, "goal": 1000, "progress_pct": 0.3, "tier": "鐵粉"}  # as /stats
    assert digest["counts"] == {"unanswered": 3, "overdue": 1, "tier_changes": 2, "quiet_superfans": 1,
                                "asked_after_you": 2, "anniversaries": 2, "rising": 0}
    assert digest["drops"] == []


async def test_lists_are_cut_at_the_limit_and_the_counts_stay_whole(sessions, settings):
    await seed(sessions, settings)
    small = CrmSettings(digest=type(settings.digest)(list_limit=1))
    async with sessions() as s:
        digest = (await build_digest(s, small, NOW)).as_json()
    assert [len(digest[k]) for k in ("unanswered", "tier_changes", "asked_after_you", "anniversaries")] == [1] * 4
    assert digest["counts"]["unanswered"] == 3 and digest["counts"]["anniversaries"] == 2


async def test_without_a_previous_digest_tier_changes_cover_the_last_day(sessions, settings):
    await seed(sessions, settings)
    async with sessions.begin() as s:
        await s.execute(table(JobRun).delete())
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    assert digest["since"] == "2026-11-21T20:00:00+08:00"
    assert [c["reason"] for c in digest["tier_changes"]] == ["decay", "score"]
    async with sessions() as s:
        wider = (await build_digest(s, settings, NOW, since=NOW - 3 * D)).as_json()
    assert [c["to_tier"] for c in wider["tier_changes"]] == ["鐵粉", "路人", "粉絲"]


async def test_care_phrases_are_not_found_when_text_is_not_stored(sessions, settings):
    no_text = CrmSettings(store_text=False)
    await seed(sessions, no_text)
    async with sessions() as s:
        digest = (await build_digest(s, no_text, NOW)).as_json()
    assert digest["asked_after_you"] == []


async def test_a_staff_message_with_a_care_phrase_is_not_a_fan_asking(sessions, settings):
    ids = await seed(sessions, settings)
    async with sessions.begin() as s:
        await record_many(s, [msg("Ulu", "dm_out", NOW - H, "還好嗎？")], settings, NOW)
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    assert ids["lu"] not in [a["fan_id"] for a in digest["asked_after_you"]]


def test_anniversary_days_count_in_local_dates_and_29_february_falls_on_28():
    assert anniversary_days(date(2026, 11, 22), date(2024, 1, 1)) == [date(2025, 11, 22), date(2024, 11, 22)]
    assert anniversary_days(date(2026, 11, 22), date(2026, 1, 1)) == []
    assert anniversary_days(date(2025, 2, 28), date(2023, 5, 1)) == [date(2024, 2, 28), date(2024, 2, 29),
                                                                      date(2023, 2, 28)]
    assert anniversary_days(date(2028, 2, 29), date(2023, 1, 1)) == [date(2024, 2, 29)]


async def test_rising_fans_are_those_just_below_the_next_tier_closest_first(sessions, settings):
    from decimal import Decimal

    # Purchases worth 9 points each (5 + 800 TWD x 0.005) a day ago: 5 of them ≈ 45 (粉絲, 75% of
    # 鐵粉's 60: not rising), 6 and a share ≈ 56 (93%: rising), one ≈ 9 (路人, 89% of 粉絲's 10).
    now = NOW
    items = []
    for who, buys in (("U-a", 5), ("U-b", 6), ("U-c", 1)):
        items += [InteractionIn("line", who, "purchase", now - timedelta(days=1, minutes=n), f"{who}-{n}", who,
                                amount=Decimal(800), currency="TWD") for n in range(buys)]
    items.append(InteractionIn("line", "U-b", "share", now - timedelta(days=1), "U-b-share", "U-b"))
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    async with sessions() as s:
        digest = (await build_digest(s, settings, now)).as_json()
    assert [(r["display_name"], r["tier"], r["next_tier"], r["threshold"]) for r in digest["rising"]] \
        == [("U-b", "粉絲", "鐵粉", 60.0), ("U-c", "路人", "粉絲", 10.0)]
    assert digest["counts"]["rising"] == 2
    small = CrmSettings(digest=type(settings.digest)(list_limit=1))
    async with sessions() as s:
        cut = (await build_digest(s, small, now)).as_json()
    assert [r["display_name"] for r in cut["rising"]] == ["U-b"] and cut["counts"]["rising"] == 2


async def test_a_fan_who_moved_twice_is_one_line_and_a_fan_back_where_they_started_none(sessions, settings):
    ids = await seed(sessions, settings)
    async with sessions.begin() as s:
        await s.execute(insert(table(TierChange)), [
            {"fan_id": ids["hui"], "from_tier": "passerby", "to_tier": "fan", "reason": "score", "at": NOW - 5 * H},
            {"fan_id": ids["hui"], "from_tier": "fan", "to_tier": "superfan", "reason": "score", "at": NOW - 4 * H},
            {"fan_id": ids["ok"], "from_tier": "passerby", "to_tier": "fan", "reason": "score", "at": NOW - 6 * H},
            {"fan_id": ids["ok"], "from_tier": "fan", "to_tier": "passerby", "reason": "decay", "at": NOW - 2 * H},
        ])
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    lines = [(c["display_name"], c["from_tier"], c["to_tier"], c["direction"]) for c in digest["tier_changes"]]
    assert lines == [("阿明", "摯友", "鐵粉", "down"), ("路人甲", None, "路人", "up"), ("小慧", "路人", "鐵粉", "up")]
    assert digest["counts"]["tier_changes"] == 3
