"""Recording interactions: dedupe, identity resolution, display names, opt-out, bad input."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crm.errors import BadInput
from crm.identity import fan_by_identity
from crm.ingest import record, record_many
from crm.interaction import InteractionIn
from crm.models import Fan, Identity, Interaction
from crm.privacy import set_opt_out


def msg(ext: str, eid: str | None, at, name: str | None = None, kind: str = "message", platform: str = "line",
        **kw) -> InteractionIn:
    return InteractionIn(platform, ext, kind, at, eid, name, **kw)


async def count(session, model) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_same_event_recorded_100_times_is_stored_once(sessions, settings, now):
    item = msg("U1", "evt-1", now - timedelta(hours=1), "小慧", kind="purchase", amount=Decimal(500), currency="TWD")
    statuses = []
    for _ in range(100):
        async with sessions.begin() as s:
            statuses.append((await record(s, item, settings, now)).status)
    assert statuses.count("stored") == 1 and statuses.count("duplicate") == 99
    async with sessions() as s:
        assert await count(s, Interaction) == 1
        assert await count(s, Fan) == 1
        fan = await fan_by_identity(s, "line", "U1")
        assert fan is not None and fan.score_base > 0


@pytest.mark.parametrize("kind", ["message", "follow"])  # a follow earns no points: a lost race takes back nothing
async def test_same_event_from_100_concurrent_tasks_is_stored_once(sessions, settings, now, kind):
    item = msg("U-conc", "evt-conc", now - timedelta(minutes=5), "阿明", kind=kind)

    async def one() -> str:
        async with sessions.begin() as s:
            return (await record(s, item, settings, now)).status

    statuses = await asyncio.gather(*(one() for _ in range(100)))
    assert statuses.count("stored") == 1
    async with sessions() as s:
        assert await count(s, Interaction) == 1
        assert await count(s, Identity) == 1
        assert await count(s, Fan) == 1  # losers' provisional fans were discarded


async def test_duplicates_inside_one_batch_are_reported(sessions, settings, now):
    at = now - timedelta(days=1)
    items = [msg("U2", "e", at), msg("U2", "e", at), msg("U2", "f", at + timedelta(minutes=5))]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
    assert [r.status for r in result.results] == ["stored", "duplicate", "stored"]


async def test_same_event_id_on_two_platforms_is_two_events(sessions, settings, now):
    at = now - timedelta(days=1)
    async with sessions.begin() as s:
        a = await record(s, msg("U3", "123", at, platform="line"), settings, now)
        b = await record(s, msg("99", "123", at, platform="discord"), settings, now)
    assert a.status == b.status == "stored" and a.fan_id != b.fan_id


async def test_identity_resolves_to_the_same_fan_and_names_stay_fresh(sessions, settings, now):
    at = now - timedelta(days=2)
    async with sessions.begin() as s:
        first = await record(s, msg("U4", "a", at, "Hui"), settings, now)
        again = await record(s, msg("U4", "b", at + timedelta(hours=1), "小慧 ✨"), settings, now)
        nameless = await record(s, msg("U4", "c", at + timedelta(hours=2), None), settings, now)
    assert first.new_fan and not again.new_fan
    assert first.fan_id == again.fan_id == nameless.fan_id
    async with sessions() as s:
        fan = await s.get(Fan, first.fan_id)
        assert fan is not None and fan.display_name == "小慧 ✨"
        ident = (await s.execute(select(Identity).where(Identity.external_id == "U4"))).scalar_one()
        assert ident.display_name == "小慧 ✨"


async def test_in_one_batch_the_newest_name_wins_even_when_the_newest_item_has_none(sessions, settings, now):
    at = now - timedelta(days=2)
    items = [msg("U5", "c", at + timedelta(hours=2), None), msg("U5", "a", at, "Hui"),
             msg("U5", "b", at + timedelta(hours=1), "小慧 ✨"), msg("U6", "d", at + timedelta(hours=1), "阿明"),
             msg("U6", "e", at, "Ming")]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
    async with sessions() as s:
        names = {r.fan_id: (await s.get(Fan, r.fan_id)).display_name for r in result.results}
    assert names[result.results[0].fan_id] == "小慧 ✨" and names[result.results[3].fan_id] == "阿明"


async def test_first_and_last_seen_follow_event_time_not_arrival(sessions, settings, now):
    old = now - timedelta(days=30)
    async with sessions.begin() as s:
        r = await record_many(s, [msg("U5", "x", old + timedelta(days=3)), msg("U5", "y", old)], settings, now)
    async with sessions() as s:
        fan = await s.get(Fan, r.results[0].fan_id)
        assert fan is not None and fan.first_seen_at == old and fan.last_seen_at == old + timedelta(days=3)


async def test_opted_out_fan_is_not_recorded(sessions, settings, now):
    async with sessions.begin() as s:
        r = await record(s, msg("U6", "1", now - timedelta(hours=3)), settings, now)
        await set_opt_out(s, r.fan_id, True)
    async with sessions.begin() as s:
        again = await record(s, msg("U6", "2", now - timedelta(hours=2)), settings, now)
    assert again.status == "opted_out"
    async with sessions() as s:
        assert await count(s, Interaction) == 1


async def test_event_without_id_gets_a_stable_digest(sessions, settings, now):
    at = now - timedelta(hours=1)
    item = msg("shop-1", None, at, platform="shop", kind="purchase", amount=Decimal("99.5"), currency="twd")
    async with sessions.begin() as s:
        assert (await record(s, item, settings, now)).status == "stored"
        assert (await record(s, item, settings, now)).status == "duplicate"
    async with sessions() as s:
        row = (await s.execute(select(Interaction))).scalar_one()
        assert row.amount_cents == 9950 and row.currency == "TWD"


async def test_message_text_summary_respects_privacy_setting(sessions, settings, now):
    from dataclasses import replace

    at = now - timedelta(hours=1)
    async with sessions.begin() as s:
        await record(s, msg("U7", "t1", at, text="  很喜歡\n今天的影片 "), settings, now)
        await record(s, msg("U8", "t2", at, text="secret"), replace(settings, store_text=False), now)
    async with sessions() as s:
        rows = dict((await s.execute(select(Interaction.source_event_id, Interaction.summary))).all())
    assert rows == {"t1": "很喜歡 今天的影片", "t2": None}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("platform", "LINE!", "platform"), ("kind", "", "kind"), ("external_id", "", "external_id"),
     ("currency", "NTD$", "currency"), ("amount", Decimal(-5), "amount")],
)
async def test_bad_input_is_refused_and_nothing_is_stored(sessions, settings, now, field, value, problem):

    item = msg("U9", "bad", now, kind="purchase", amount=Decimal(1), currency="TWD")._replace(**{field: value})
    async with sessions() as s:
        with pytest.raises(BadInput, match=problem):
            await record(s, item, settings, now)
        await s.rollback()
        assert await count(s, Interaction) == 0


async def test_half_an_emoji_is_replaced_not_the_whole_message_lost(sessions, settings, now):
    broken = InteractionIn("line", "U-surrogate", "dm_in", now - timedelta(minutes=1), "e-sur", "小慧\ud83d",
                           text='謝謝 🎉 "引號" \\ 半個\ud83d 表情')
    async with sessions.begin() as s:
        result = await record_many(s, [broken], settings, now)
    assert result.statuses == ["stored"]
    async with sessions() as s:
        summary = (await s.execute(select(Interaction.summary))).scalar_one()
        fan = await fan_by_identity(s, "line", "U-surrogate")
    assert summary == '謝謝 🎉 "引號" \\ 半個\ufffd 表情'
    assert fan is not None and fan.display_name == "小慧\ufffd"


async def test_last_seen_keeps_up_to_the_minute_through_a_burst(sessions, settings, now):
    start = now.replace(second=5, microsecond=0) - timedelta(hours=1)
    times = [start + timedelta(seconds=s) for s in (0, 20, 40, 70, 95, 150)]
    for n, at in enumerate(times):  # reactions past the day's cap: no points, only last-seen moves
        async with sessions.begin() as s:
            await record(s, msg("U-burst", f"burst-{n}", at, kind="reaction"), settings, now)
        async with sessions() as s:
            fan = await fan_by_identity(s, "line", "U-burst")
        assert fan is not None and at - timedelta(minutes=1) < fan.last_seen_at <= at


async def test_last_seen_only_moves_forward_and_by_the_minute(sessions, settings, now):
    """A fan who writes all through a burst is rewritten once a minute, on every database; an older
    event never moves last-seen back. ``follow`` earns no points, so only last-seen can change."""
    at = now.replace(second=10, microsecond=0) - timedelta(hours=1)
    steps = [("s1", at, at), ("s2", at + timedelta(seconds=40), at), ("s3", at - timedelta(minutes=5), at),
             ("s4", at + timedelta(seconds=70), at + timedelta(seconds=70))]
    for eid, when, expected in steps:
        async with sessions.begin() as s:
            assert (await record(s, msg("U-seen", eid, when, kind="follow"), settings, now)).status == "stored"
        async with sessions() as s:
            fan = await fan_by_identity(s, "line", "U-seen")
        assert fan is not None and fan.last_seen_at == expected, eid


async def test_an_event_id_shared_by_many_senders_stores_one_interaction_and_creates_one_fan(
        sessions, settings, now):
    # A forged or buggy sender reuses one webhookEventId for a thousand users: only the event that
    # is stored makes a fan; the others are duplicates and leave no empty fan records behind.
    items = [msg(f"U{n:04d}", "shared-event", now - timedelta(minutes=1), f"粉絲{n}") for n in range(1000)]
    async with sessions.begin() as s:
        result = await record_many(s, items, settings, now)
    assert result.stored == 1 and result.duplicates == 999
    async with sessions() as s:
        assert await count(s, Interaction) == 1
        assert await count(s, Fan) == 1 and await count(s, Identity) == 1
    async with sessions.begin() as s:  # the same again, later: still one fan
        again = await record_many(s, items[:10], settings, now)
    assert again.stored == 0
    async with sessions() as s:
        assert await count(s, Fan) == 1
