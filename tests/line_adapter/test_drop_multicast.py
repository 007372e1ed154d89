"""A drop's LINE part through the real outbox drainer and LINE sender against the emulator:
persisted batches of at most 500, each fan exactly once under faults, never over the quota."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.drop_views import DropViews
from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.sender import LineSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import session_transact
from bot.sandbox.line_emulator import LineEmulator
from crm.drops import DropDraft, create_drop
from crm.models import Delivery, Drop, Outbox
from crm.settings import CrmSettings, DropRules
from tests.crm.test_drops import add_fan, add_line_fans
from tests.line_adapter.conftest import T0, user


class Clock:
    """The drainer's clock: jumps to the next retry instead of sleeping on it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sender(emu: LineEmulator) -> AsyncIterator[LineSender]:
    line = LineSender(emu.base_url, emu.access_token, monthly_quota=100_000, timezone="Asia/Taipei",
                      clock=lambda: T0)
    await line.start()
    yield line
    await line.close()


async def fans(sessions: async_sessionmaker[AsyncSession], n: int, *, below: int = 0, unfollowed: int = 0) -> None:
    async with sessions.begin() as s:
        await add_line_fans(s, range(n), T0)
        for k in range(n, n + below):
            await add_fan(s, k, T0, tier="fan")
        for k in range(n + below, n + below + unfollowed):
            await add_fan(s, k, T0, line="unfollowed")


async def drop(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings | None = None, **kw: object) -> int:
    async with sessions.begin() as s:
        made = await create_drop(s, settings or CrmSettings(), DropDraft(**{"text": "獨家幕後花絮", "min_tier": "鐵粉",
                                                                            "platforms": ("line",), **kw}), T0)
    return made.id


async def send_all(sessions: async_sessionmaker[AsyncSession], sender: LineSender, clock: Clock,
                   rules: DropRules = DropRules()) -> OutboxDrainer:
    """Drain until no row is pending, moving the clock to each retry's time."""
    handler = LineOutboxSender(sender, clock=clock, drops=DropViews(sessions, rules))
    drainer = OutboxDrainer("line", session_transact(sessions), handler, clock=clock)
    for _ in range(100):
        await drainer.drain_once()
        async with sessions() as s:
            due = (await s.execute(select(func.min(Outbox.next_attempt_at)).where(Outbox.status == "pending"))
                   ).scalar_one()
        if due is None:
            return drainer
        clock.now = max(clock.now, due)
    raise AssertionError("rows still pending after 100 passes")


async def delivery_statuses(sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
    async with sessions() as s:
        return Counter(dict((await s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all()))


async def test_1234_fans_get_it_in_three_multicasts_each_exactly_once(sessions, emu, sender) -> None:
    await fans(sessions, 1234, below=40, unfollowed=25)
    drop_id = await drop(sessions)
    await send_all(sessions, sender, Clock())

    calls = [c for c in emu.calls if c.path == "/v2/bot/message/multicast"]
    assert len(calls) == 3 and all(len(c.json["to"]) <= 500 for c in calls)
    keys = [c.headers["x-line-retry-key"] for c in calls]
    assert len(set(keys)) == 3 and all(uuid.UUID(k) for k in keys)
    assert emu.received() == Counter({user(k): 1 for k in range(1234)})  # nobody below the tier, nobody unfollowed
    assert emu.aggregation_units == Counter({f"superfan_drop_{drop_id}": 1234})
    assert {m["text"] for d in emu.delivered for m in d.messages} == {"獨家幕後花絮"}
    assert await delivery_statuses(sessions) == Counter({"sent": 1234})
    async with sessions() as s:
        row = await s.get(Drop, drop_id)
        assert row is not None and (row.status, row.quota_used) == ("finished", 1234)


async def test_30_percent_429_and_500_still_reach_everyone_exactly_once(sessions, emu, sender) -> None:
    await fans(sessions, 5000)
    await drop(sessions)
    emu.fail_randomly(429, 0.15, path_contains="multicast", seed=3)
    emu.fail_randomly(500, 0.15, path_contains="multicast", seed=4, after_accept=True)  # taken, answer lost
    drainer = await send_all(sessions, sender, Clock())

    failures = Counter(c.status for c in emu.calls if c.path.endswith("multicast"))
    assert failures[429] and failures[500], f"the faults never fired: {failures}"
    assert failures[409], "no batch was retried after LINE had taken it: the retry key was not exercised"
    assert emu.received() == Counter({user(k): 1 for k in range(5000)})
    assert await delivery_statuses(sessions) == Counter({"sent": 5000})
    assert drainer.failed == 0


async def test_a_send_past_the_quota_is_refused_and_recorded_per_fan(sessions, emu) -> None:
    await fans(sessions, 30)
    await drop(sessions)
    emu.monthly_quota = 100
    emu.total_usage = 90  # spent elsewhere this month (e.g. a broadcast from LINE's console)
    small = LineSender(emu.base_url, emu.access_token, monthly_quota=100, timezone="Asia/Taipei", clock=lambda: T0)
    await small.start()
    try:
        await send_all(sessions, small, Clock())
    finally:
        await small.close()
    assert emu.received() == Counter() and emu.total_usage == 90
    async with sessions() as s:
        errors = (await s.execute(select(Delivery.status, Delivery.error))).all()
    assert set(errors) == {("failed", "LINE monthly quota reached")}


async def test_sponsored_drop_with_image_reads_as_staff_wrote_it(sessions, emu, sender) -> None:
    await fans(sessions, 2)
    settings = replace(CrmSettings(), drops=DropRules(disclosure="#贊助"))
    await drop(sessions, settings, link="https://shop.example/p", image_url="https://cdn.example/p.jpg",
               sponsored=True)
    await send_all(sessions, sender, Clock(), settings.drops)
    (call,) = [c for c in emu.calls if c.path.endswith("multicast")]
    assert call.json["messages"] == [
        {"type": "text", "text": "#贊助\n獨家幕後花絮\nhttps://shop.example/p"},
        {"type": "image", "originalContentUrl": "https://cdn.example/p.jpg",
         "previewImageUrl": "https://cdn.example/p.jpg"}]


async def test_a_scheduled_drop_waits_for_its_time_and_goes_once(sessions, emu, sender) -> None:
    await fans(sessions, 3)
    at = T0 + timedelta(hours=3)
    await drop(sessions, scheduled_at=at)
    clock = Clock()
    handler = LineOutboxSender(sender, clock=clock, drops=DropViews(sessions, DropRules()))
    early = OutboxDrainer("line", session_transact(sessions), handler, clock=clock)
    clock.now = at - timedelta(seconds=1)
    assert await early.drain_once() == 0 and emu.received() == Counter()
    clock.now = at
    # a restarted process: a fresh drainer on the same rows
    again = OutboxDrainer("line", session_transact(sessions), handler, clock=clock)
    assert await again.drain_once() == 1
    assert await early.drain_once() == 0
    assert emu.received() == Counter({user(k): 1 for k in range(3)})


async def test_past_lines_monthly_unit_names_the_drop_still_goes_out_untagged(sessions, emu, sender) -> None:
    await fans(sessions, 3)
    emu.aggregation_unit_limit = 0  # this month's 1,000 unit names are used up
    drop_id = await drop(sessions)
    await send_all(sessions, sender, Clock())
    assert emu.received() == Counter({user(k): 1 for k in range(3)})
    assert [c.status for c in emu.calls if c.path.endswith("multicast")] == [400, 200]
    assert emu.aggregation_units == Counter()
    async with sessions() as s:
        row = await s.get(Drop, drop_id)
        assert row is not None and row.status == "finished"


async def test_a_fan_erased_before_the_send_is_not_sent_to(sessions, emu, sender) -> None:
    from crm.privacy import forget_fan

    await fans(sessions, 4)
    drop_id = await drop(sessions)
    async with sessions.begin() as s:  # a PDPA erasure between create and send (e.g. a scheduled drop)
        fan_id = (await s.execute(select(Delivery.fan_id).where(Delivery.external_id == user(2)))).scalar_one()
        await forget_fan(s, CrmSettings(), fan_id, T0)
    await send_all(sessions, sender, Clock())
    assert emu.received() == Counter({user(k): 1 for k in (0, 1, 3)})
    async with sessions() as s:
        row = await s.get(Drop, drop_id)
        assert row is not None and (row.status, row.quota_used) == ("finished", 3)


async def test_a_drop_whose_only_fan_was_erased_finishes_without_a_call(sessions, emu, sender) -> None:
    from crm.privacy import forget_fan

    await fans(sessions, 1)
    drop_id = await drop(sessions)
    async with sessions.begin() as s:
        fan_id = (await s.execute(select(Delivery.fan_id))).scalar_one()
        await forget_fan(s, CrmSettings(), fan_id, T0)
    await send_all(sessions, sender, Clock())
    assert [c for c in emu.calls if c.path.endswith("multicast")] == []
    async with sessions() as s:
        row = await s.get(Drop, drop_id)
        assert row is not None and row.status == "finished" and row.finished_at is not None
