"""The LINE webhook as LINE drives it: signed bodies in, events stored once, bad requests refused."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta

import pytest
from linebot.v3.webhooks import (
    FollowDetail,
    FollowEvent,
    GroupSource,
    ImageMessageContent,
    JoinedMembers,
    JoinEvent,
    LeaveEvent,
    LocationMessageContent,
    MemberJoinedEvent,
    MessageEvent,
    StickerMessageContent,
    UnfollowEvent,
    UserSource,
)
from linebot.v3.webhooks.models import ContentProvider
from sqlalchemy import select

from bot.line_adapter.profiles import Profiles
from bot.write_failures import StorageUnavailable
from crm.identity import fan_by_identity
from crm.models import Interaction
from crm.profiles import fan_documents
from tests.line_adapter.conftest import (
    T0,
    LineRig,
    base,
    body_of,
    event_id,
    postback_event,
    sign,
    text_event,
    user,
)

FAN = user(1)


async def interactions(rig: LineRig) -> list[Interaction]:
    async with rig.sessions() as session:
        return list((await session.execute(select(Interaction).order_by(Interaction.id))).scalars())


async def test_a_dm_is_stored_with_the_event_time_and_the_fans_line_name(rig: LineRig) -> None:
    rig.emu.add_profile(FAN, "小慧")
    at = T0 - timedelta(minutes=3)
    eid = event_id()

    assert await rig.post(text_event(FAN, "新影片好好看！", at=at, eid=eid)) == 200

    [row] = await interactions(rig)
    assert (row.platform, row.kind, row.source_event_id) == ("line", "dm_in", eid)
    assert row.occurred_at == at
    assert row.summary == "新影片好好看！"
    async with rig.sessions() as session:
        fan = await fan_by_identity(session, "line", FAN)
        assert fan is not None
        (doc,) = await fan_documents(session, [fan], rig.crm.settings, T0, interactions=5)
    assert doc["display_name"] == "小慧"
    assert doc["identities"][0]["display_name"] == "小慧"
    assert [i["kind"] for i in doc["interactions"]] == ["dm_in"]
    assert rig.emu.delivered == []  # a DM waits for staff; no automatic answer


async def test_display_names_are_fetched_at_most_once_a_day(rig: LineRig) -> None:
    rig.emu.add_profile(FAN, "阿明")
    for n in range(3):
        await rig.post(text_event(FAN, f"msg {n}"))
    assert rig.emu.profile_requests == 1

    rig.emu.add_profile(FAN, "阿明明")
    rig.clock[0] += timedelta(hours=25)
    await rig.post(text_event(FAN, "a day later"))
    assert rig.emu.profile_requests == 2
    async with rig.sessions() as session:
        fan = await fan_by_identity(session, "line", FAN)
    assert fan is not None and fan.display_name == "阿明明"


async def test_a_burst_of_new_fans_is_named_by_one_lookup_and_one_store(rig: LineRig) -> None:
    fans = [user(100 + n) for n in range(12)]
    for n, uid in enumerate(fans):
        rig.emu.add_profile(uid, f"粉絲{n}")
    stores: list[object] = []
    submit = rig.writer.submit

    async def counting(ops):  # type: ignore[no-untyped-def]
        stores.extend(op for op in ops if getattr(op, "name", "") == "line profiles")
        return await submit(ops)

    rig.writer.submit = counting  # type: ignore[method-assign]
    assert await rig.post(*(text_event(uid, "第一次來！") for uid in fans)) == 200
    assert rig.emu.profile_requests == 12
    assert len(stores) == 1  # not one writer action per fan
    async with rig.sessions() as session:
        named = [(await fan_by_identity(session, "line", uid)).display_name for uid in fans]  # type: ignore[union-attr]
    assert named == [f"粉絲{n}" for n in range(12)]


async def test_a_profile_that_could_not_be_stored_is_asked_for_again_on_the_next_event(
        rig: LineRig, caplog: pytest.LogCaptureFixture) -> None:
    rig.emu.add_profile(FAN, "阿明")
    await rig.post(text_event(FAN, "hi"))
    submit = rig.writer.submit
    rig.emu.add_profile(FAN, "阿明明")
    rig.clock[0] += timedelta(hours=25)

    async def failing(ops):  # type: ignore[no-untyped-def]
        if any(getattr(op, "name", "") == "line profiles" for op in ops):
            raise StorageUnavailable("OperationalError: database is locked")
        return await submit(ops)

    rig.writer.submit = failing  # type: ignore[method-assign]
    await rig.adapter.profiles.refresh(FAN)  # the failure is logged, not raised
    assert rig.emu.profile_requests == 2
    assert [r.message for r in caplog.records if "profiles failed" in r.message] == [
        "LINE: refreshing 1 profiles failed: StorageUnavailable: OperationalError: database is locked"]
    rig.writer.submit = submit  # type: ignore[method-assign]
    await rig.post(text_event(FAN, "still here"))  # no clock change: retried at once
    assert rig.emu.profile_requests == 3
    async with rig.sessions() as session:
        fan = await fan_by_identity(session, "line", FAN)
    assert fan is not None and fan.display_name == "阿明明"


async def test_checking_whether_a_profile_is_due_never_waits_for_the_write_lock(rig: LineRig, engine) -> None:
    """The check reads a snapshot: another writer holding SQLite's lock (or the group writer in
    the middle of a commit) neither delays it nor is held up by it."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    rig.emu.add_profile(FAN, "阿明")
    await rig.post(text_event(FAN, "hi"))
    assert rig.emu.profile_requests == 1
    rig.clock[0] += timedelta(hours=25)
    rig.emu.add_profile(FAN, "阿明明")
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        refreshing = asyncio.create_task(rig.adapter.profiles.refresh(FAN))
        for _ in range(500):
            if rig.emu.profile_requests == 2:
                break
            await asyncio.sleep(0.01)
        assert rig.emu.profile_requests == 2  # checked and fetched while the lock was held
        assert not refreshing.done()  # storing the name does wait for the lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await asyncio.wait_for(refreshing, 10)
    async with rig.sessions() as session:
        fan = await fan_by_identity(session, "line", FAN)
    assert fan is not None and fan.display_name == "阿明明"


async def test_a_restart_does_not_refetch_names_and_opted_out_fans_are_never_looked_up(rig: LineRig) -> None:
    rig.emu.add_profile(FAN, "阿明")
    await rig.post(text_event(FAN, "hi"))
    assert rig.emu.profile_requests == 1

    restarted = Profiles(rig.adapter.sender, rig.writer, rig.sessions, rig.crm.settings,
                         clock=lambda: rig.clock[0] + timedelta(hours=23))
    await restarted.refresh(FAN)  # nothing in memory, but the database knows the name is fresh
    assert rig.emu.profile_requests == 1

    await rig.post(postback_event(FAN, "action=optout&confirm=yes", reply_token=rig.emu.issue_reply_token(FAN)))
    rig.clock[0] += timedelta(hours=25)
    await rig.post(text_event(FAN, "我的資料", reply_token=rig.emu.issue_reply_token(FAN)))
    assert rig.emu.profile_requests == 1


async def test_bad_requests_get_400_and_nothing_is_stored(rig: LineRig) -> None:
    good = body_of(text_event(FAN, "hello"))
    cases = {
        "no signature": dict(body=good, signature=None),
        "wrong signature": dict(body=good, signature=sign(good, "another-secret")),
        "signature of another body": dict(body=good, signature=sign(good + b" ")),
        "garbage signature": dict(body=good, signature="not base64 at all"),
        "truncated, signed in full": dict(body=good[:-7], signature=sign(good)),
        "truncated, signed as sent": dict(body=good[:-7]),
        "not JSON": dict(body=b"events=1"),
        "not UTF-8": dict(body=b'{"events": ["\xff\xfe"]}'),
        "no events list": dict(body=b'{"destination": "x", "events": {}}'),
        "JSON array": dict(body=b"[]"),
        "form content type": dict(body=good, content_type="application/x-www-form-urlencoded"),
        "text content type": dict(body=good, content_type="text/plain"),
        "over 1 MiB": dict(body=body_of(text_event(FAN, "x" * 1_100_000))),
    }
    for name, kwargs in cases.items():
        assert await rig.post(**kwargs) == 400, name
    assert await rig.count() == 0
    assert await rig.post(body=good) == 200  # the same body, properly sent
    assert await rig.count() == 1


async def test_a_large_body_under_the_limit_is_fine(rig: LineRig) -> None:
    events = [text_event(FAN, "長" * 4000) for _ in range(80)]
    body = body_of(*events)
    assert 900_000 < len(body) < 1_048_576
    assert await rig.post(body=body) == 200
    assert await rig.count(kind="dm_in") == 80


async def test_unknown_and_malformed_events_are_dead_letters_the_rest_stored(rig: LineRig) -> None:
    good = text_event(FAN, "still here")
    unknown = {"type": "somethingNew", "timestamp": 1, "mode": "active", "webhookEventId": event_id(),
               "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": FAN}}
    no_timestamp = text_event(user(2), "broken").to_dict()
    del no_timestamp["timestamp"]
    bad_message = text_event(user(3), "odd").to_dict()
    bad_message["message"]["type"] = "hologram"
    assert await rig.post(unknown, good, no_timestamp, bad_message, "not an object") == 200
    # A message of a type LINE adds later is still the fan talking; the rest is kept to replay.
    assert [(r.kind, r.summary) for r in await interactions(rig)] == [("dm_in", "still here"),
                                                                      ("dm_in", "[hologram]")]
    from sqlalchemy import select

    from crm.models import DeadLetter
    async with rig.sessions() as session:
        kept = (await session.execute(select(DeadLetter.event_type, DeadLetter.reason).order_by(DeadLetter.id))).all()
    assert kept == [("somethingNew", "event type unknown to this version"),
                    ("message", "timestamp missing or out of range"), (None, "event is not an object")]


async def test_empty_event_list_is_lines_verify_call(rig: LineRig) -> None:
    assert await rig.post() == 200
    assert await rig.count() == 0


async def test_emoji_zero_width_and_cjk_text_survive(rig: LineRig) -> None:
    texts = ["🎉🔥 謝謝！", "zero\u200bwidth\u200d joiner 👩‍👩‍👧", "ｆｕｌｌｗｉｄｔｈ　スペース", "𠮷野家 🀄"]
    for n, text in enumerate(texts):
        await rig.post(text_event(user(10 + n), text))
    stored = sorted((await interactions(rig)), key=lambda r: r.fan_id)
    assert [r.summary for r in stored] == [" ".join(t.split()) for t in texts]


async def test_redelivered_events_are_stored_once(rig: LineRig) -> None:
    first = text_event(FAN, "hi", eid="01REDELIVERYTESTAAAAAAAAAA")
    again = text_event(FAN, "hi", eid="01REDELIVERYTESTAAAAAAAAAA", redelivery=True)
    other = text_event(FAN, "second message")
    assert await rig.post(first) == 200
    assert await rig.post(again, other) == 200
    assert await rig.post(again) == 200
    assert await rig.count() == 2


async def test_100_concurrent_requests_are_all_stored_once_in_few_transactions(rig: LineRig) -> None:
    bodies = []
    for n in range(100):
        events = [text_event(user(n % 17), f"burst {n}-{k}") for k in range(3)]
        if n % 10 == 0:  # some requests repeat an earlier request's event (LINE redelivers)
            events.append(text_event(user(0), "burst 0-0", eid="01CONCURRENTDUPLICATEAAAAA"))
        bodies.append(body_of(*events))
    groups_before = rig.writer.groups

    statuses = await asyncio.gather(*(rig.post(body=b, settle=False) for b in bodies))
    await rig.adapter.drain()

    assert statuses == [200] * 100
    assert await rig.count() == 100 * 3 + 1
    assert rig.writer.groups - groups_before < 100  # requests shared transactions


async def test_group_messages_are_messages_and_lifecycle_events_map(rig: LineRig) -> None:
    member = user(2)
    group = "C" + "1" * 32
    follow = FollowEvent(source=UserSource(user_id=FAN), reply_token=rig.emu.issue_reply_token(FAN),
                         follow=FollowDetail(is_unblocked=False), **base())
    refollow = FollowEvent(source=UserSource(user_id=FAN), reply_token=rig.emu.issue_reply_token(FAN),
                           follow=FollowDetail(is_unblocked=True), **base(at=T0 + timedelta(hours=1)))
    unfollow = UnfollowEvent(source=UserSource(user_id=FAN), **base(at=T0 + timedelta(minutes=30)))
    sticker = MessageEvent(source=UserSource(user_id=FAN), reply_token="rt-s", **base(), message=StickerMessageContent(
        id="9", package_id="1", sticker_id="2", sticker_resource_type="STATIC", quote_token="q"))
    image = MessageEvent(source=UserSource(user_id=FAN), reply_token="rt-i", **base(), message=ImageMessageContent(
        id="10", content_provider=ContentProvider(type="line"), quote_token="q"))
    place = MessageEvent(source=UserSource(user_id=FAN), reply_token="rt-l", **base(), message=LocationMessageContent(
        id="11", latitude=25.03, longitude=121.56, title="台北101"))
    in_group = text_event(member, "大家好", group=group)
    joined = MemberJoinedEvent(source=GroupSource(group_id=group), reply_token="rt-j",
                               joined=JoinedMembers(members=[UserSource(user_id=user(3)), UserSource(user_id=user(4))]),
                               **base())
    bot_joined = JoinEvent(source=GroupSource(group_id=group), reply_token=rig.emu.issue_reply_token(member), **base())
    bot_left = LeaveEvent(source=GroupSource(group_id=group), **base())

    assert await rig.post(follow, unfollow, refollow, sticker, image, place, in_group, joined, bot_joined,
                          bot_left) == 200

    rows = await interactions(rig)
    assert sorted((r.kind, r.summary or "") for r in rows) == sorted([
        ("follow", ""), ("unfollow", ""), ("follow", "unblocked"), ("dm_in", "[sticker]"),
        ("dm_in", "[image]"), ("dm_in", "[location]"), ("message", "大家好"),
        ("member_joined", ""), ("member_joined", ""),
    ])
    assert [d.via for d in rig.emu.delivered_to(FAN)] == ["reply", "reply"]
    assert rig.replies_to(FAN)[0].startswith("謝謝你加入好友")
    assert rig.replies_to(FAN)[1].startswith("歡迎回來")
    assert rig.replies_to(member) == ["大家好！在群組裡傳「打卡」就能報到。"]
    assert rig.emu.total_usage == 0  # greetings never push


async def test_healthz(rig: LineRig) -> None:
    async with rig.http.get(rig.url + "/healthz") as resp:
        assert resp.status == 200
        assert json.loads(await resp.text())["status"] == "ok"


def test_the_fast_text_path_plans_exactly_what_the_full_reader_plans() -> None:
    """Text messages take a hand-checked path for speed; what they become must not depend on that."""
    from linebot.v3.webhooks import RoomSource

    from bot.line_adapter.events import plan_event
    from bot.line_adapter.webhook import LineEvent, TextIn, Unusable, line_event, parse_event
    from crm.interaction import InteractionIn
    from crm.settings import CrmSettings

    room = MessageEvent(source=RoomSource(room_id="R" + "2" * 32, user_id=FAN), reply_token="rt", **base(),
                        message=StickerMessageContent(id="1", package_id="1", sticker_id="2",
                                                      sticker_resource_type="STATIC", quote_token="q"))
    texts = [
        text_event(FAN, "普通的留言 👋"), text_event(FAN, "打卡 MEET01"), text_event(FAN, "我的資料", redelivery=True),
        text_event(user(2), "group talk", group="C" + "1" * 32), text_event(user(2), "打卡", group="C" + "1" * 32),
    ]
    standby = text_event(FAN, "我的資料").to_dict() | {"mode": "standby"}
    raws = [e.to_dict() for e in texts] + [standby]
    for raw in raws:
        fast, full = parse_event(raw), line_event(raw, raw["type"], raw["webhookEventId"])
        assert isinstance(fast, TextIn), "text messages take the fast path"
        plans = [plan_event(e, received_at=1.0, settings=CrmSettings(), checkin_keywords=["打卡"]) for e in (fast, full)]
        a, b = plans
        assert a is not None and b is not None
        assert (a.inbound, a.respond, a.push_fallback, a.keep_token) == (b.inbound, b.respond, b.push_fallback,
                                                                         b.keep_token)
        assert [op if isinstance(op, InteractionIn) else op.name for op in a.ops] == \
            [op if isinstance(op, InteractionIn) else op.name for op in b.ops]
    assert plan_event(parse_event(standby), received_at=1.0, settings=CrmSettings(),
                      checkin_keywords=[]).respond is None  # another channel answers in standby
    for broken in ({**raws[0], "timestamp": "1700000000000"}, {**raws[0], "message": {"type": "text", "id": "1"}}):
        assert isinstance(parse_event(broken), Unusable)  # not fast-tracked, and kept as a dead letter
    assert isinstance(parse_event(room.to_dict()), LineEvent)
