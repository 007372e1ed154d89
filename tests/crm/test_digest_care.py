"""The digest's "asked after you" list: each fan once, at their latest care-phrase message of the
last ``care_days``, latest first; opted-out fans never; the count whole when the list is cut."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.digest import build_digest
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan, table
from crm.settings import CrmSettings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # 20:00 in Taipei
H = timedelta(hours=1)
D = timedelta(days=1)


def said(who: str, at: datetime, text: str, kind: str = "message", platform: str = "line",
         n: int = 0) -> InteractionIn:
    return InteractionIn(platform, who, kind, at, f"{who}-{kind}-{at.timestamp()}-{n}", who, text=text)


async def record(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
                 items: list[InteractionIn]) -> dict[str, int]:
    async with sessions.begin() as s:
        rec = await record_many(s, items, settings, NOW)
    return {item.external_id: fan_id for item, fan_id in zip(items, rec.fan_ids, strict=True)}


async def asked(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings) -> tuple[list[tuple], int]:
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    return ([(a["display_name"], a["platform"], a["at"], a["phrase"]) for a in digest["asked_after_you"]],
            digest["counts"]["asked_after_you"])


async def test_each_fan_once_at_their_latest_care_message_latest_first(sessions, settings):
    await record(sessions, settings, [
        said("Amy", NOW - 5 * D, "最近好嗎"),
        said("Amy", NOW - 2 * H, "ARE YOU OK?", kind="dm_in"),     # Amy's latest care message
        said("Amy", NOW - 1 * H, "好喜歡這首歌"),                     # later, but no care phrase
        said("Bob", NOW - 3 * H, "你還好嗎"),
        said("Bob", NOW - 4 * D, "miss your posts"),
        said("Cat", NOW - 6 * D, "好久沒發文了耶", platform="discord"),
        said("Dan", NOW - 8 * D, "最近好嗎"),                        # older than care_days
        said("Eve", NOW - 1 * H, "還好嗎？", kind="dm_out"),          # staff's words, not the fan's
    ])
    listed, count = await asked(sessions, settings)
    assert listed == [("Amy", "line", "2026-11-22T18:00:00+08:00", "are you ok"),
                      ("Bob", "line", "2026-11-22T17:00:00+08:00", "還好嗎"),
                      ("Cat", "discord", "2026-11-16T20:00:00+08:00", "好久沒發文")]
    assert count == 3


async def test_an_opted_out_fan_is_never_listed_nor_counted(sessions, settings):
    ids = await record(sessions, settings, [
        said("Amy", NOW - 2 * H, "最近好嗎"),
        said("Gone", NOW - 1 * H, "最近好嗎"),
        said("Gone", NOW - 3 * D, "are you ok"),
    ])
    async with sessions.begin() as s:
        await s.execute(update(table(Fan)).where(table(Fan).c.id == ids["Gone"]).values(opted_out=True))
    listed, count = await asked(sessions, settings)
    assert [name for name, *_ in listed] == ["Amy"]
    assert count == 1


async def test_the_list_is_cut_at_the_limit_the_count_stays_whole(sessions, settings):
    await record(sessions, settings, [said(f"F{n}", NOW - n * H, "最近好嗎") for n in range(1, 6)]
                 + [said("F5", NOW - 30 * H, "最近好嗎", n=1), said("F4", NOW - 31 * H, "are you ok", n=1)])
    small = replace(settings, digest=replace(settings.digest, list_limit=2))
    listed, count = await asked(sessions, small)
    assert [name for name, *_ in listed] == ["F1", "F2"]
    assert count == 5


async def test_fans_asking_at_the_same_moment_come_in_the_order_they_arrived_latest_first(sessions, settings):
    await record(sessions, settings, [said("Zed", NOW - H, "最近好嗎")])
    await record(sessions, settings, [said("Amy", NOW - H, "最近好嗎")])
    listed, count = await asked(sessions, settings)
    assert [name for name, *_ in listed] == ["Amy", "Zed"]
    assert count == 2


async def test_percent_and_underscore_in_a_care_phrase_are_taken_literally(sessions, settings):
    literal = replace(settings, digest=replace(settings.digest, care_phrases=("100%",)))
    await record(sessions, literal, [said("Amy", NOW - H, "100% 支持你"), said("Bob", NOW - H, "1000 分")])
    listed, count = await asked(sessions, literal)
    assert [(name, phrase) for name, _, _, phrase in listed] == [("Amy", "100%")]
    assert count == 1
