"""LINE display names: looked up by one background worker, never on the way to a webhook's 200."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web

from bot.line_adapter.profiles import BUSY_RATE, Profiles
from bot.sandbox.line_emulator import PROFILE_PREFIX, LineEmulator
from crm.identity import fan_by_identity
from crm.interaction import InteractionIn
from crm.privacy import set_opt_out
from tests.line_adapter.conftest import T0, FakeMonotonic, LineRig, event_id, text_event, user


class HeldProfiles(LineEmulator):
    """The LINE emulator, but profile answers wait until ``release`` (and note when each was asked)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked: list[tuple[str, float]] = []

    async def _profile(self, request: web.Request) -> web.Response:
        self.asked.append((request.match_info["user_id"], self._clock()))
        await self.gate.wait()
        return await super()._profile(request)


@pytest.fixture
async def emu() -> AsyncIterator[HeldProfiles]:
    async with HeldProfiles() as emulator:
        yield emulator


def profile_calls(emu: LineEmulator) -> Counter[str]:
    return Counter(c.path.removeprefix(PROFILE_PREFIX) for c in emu.calls if c.path.startswith(PROFILE_PREFIX))


def count_name_stores(rig: LineRig) -> list[int]:
    """Wrap the writer: every 'line profiles' action submitted is counted."""
    stores: list[int] = []
    submit = rig.writer.submit

    async def counting(ops):  # type: ignore[no-untyped-def]
        stores.extend(1 for op in ops if getattr(op, "name", "") == "line profiles")
        return await submit(ops)

    rig.writer.submit = counting  # type: ignore[method-assign]
    return stores


async def store_fans(rig: LineRig, uids: list[str]) -> None:
    """Fans stored without the webhook (so the running worker is never told about them)."""
    await rig.writer.submit([InteractionIn("line", uid, "message", T0, event_id(), None, text="hi") for uid in uids])


async def names(rig: LineRig, uids: list[str]) -> list[str | None]:
    async with rig.sessions() as session:
        fans = [await fan_by_identity(session, "line", uid) for uid in uids]
    return [fan.display_name if fan else None for fan in fans]


async def test_a_burst_of_new_fans_is_acknowledged_while_their_profiles_are_still_unanswered(
        rig: LineRig, emu: HeldProfiles) -> None:
    emu.gate.clear()
    fans = [user(1000 + n) for n in range(60)]
    stores = count_name_stores(rig)

    statuses = [await rig.post(*(text_event(uid, "第一次來！") for uid in fans[i : i + 10]), settle=False)
                for i in range(0, len(fans), 10)]

    assert statuses == [200] * 6
    assert await rig.count() == 60  # every event stored and acknowledged ...
    for _ in range(200):
        if emu.asked:
            break
        await asyncio.sleep(0.01)
    assert emu.asked and not emu.gate.is_set()  # ... while LINE had not answered a single profile
    emu.gate.set()
    await rig.adapter.drain()
    calls = profile_calls(emu)
    assert sorted(calls) == sorted(fans) and set(calls.values()) == {1}  # one look-up per fan
    assert await names(rig, fans) == [f"User {uid[-4:]}" for uid in fans]
    assert 1 <= len(stores) <= 6  # names stored in a few batches, not one transaction per fan


async def test_a_restart_looks_up_the_fans_nobody_looked_up_but_never_an_opted_out_one(rig: LineRig,
                                                                                         emu: HeldProfiles) -> None:
    waiting = [user(2000 + n) for n in range(5)]
    quiet = user(2999)
    await store_fans(rig, [*waiting, quiet])
    async with rig.sessions.begin() as session:
        fan = await fan_by_identity(session, "line", quiet)
        assert fan is not None
        await set_opt_out(session, fan.id, True)
    assert profile_calls(emu) == Counter()  # the running worker was never told about them

    restarted = Profiles(rig.adapter.sender, rig.writer, rig.crm.read, rig.crm.settings, clock=lambda: rig.clock[0])
    await restarted.start()
    try:
        await restarted.settle()
    finally:
        await restarted.close()

    assert sorted(profile_calls(emu)) == sorted(waiting)
    assert await names(rig, waiting) == [f"User {uid[-4:]}" for uid in waiting]
    assert (await names(rig, [quiet]))[0] != f"User {quiet[-4:]}"


async def test_profile_look_ups_keep_to_the_rate_limit_and_store_a_batch_per_second(rig: LineRig,
                                                                                    emu: HeldProfiles) -> None:
    fake = FakeMonotonic()
    emu._clock = fake  # the emulator notes the (fake) time each profile is asked for

    async def sleep(seconds: float) -> None:
        fake.now += seconds
        await asyncio.sleep(0)

    fans = [user(3000 + n) for n in range(12)]
    await store_fans(rig, fans)
    stores = count_name_stores(rig)
    worker = Profiles(rig.adapter.sender, rig.writer, rig.crm.read, rig.crm.settings, clock=lambda: rig.clock[0],
                      rate=5.0, flush_every=1.0, monotonic=fake, sleep=sleep,
                      fetchers=1)  # one at a time: each request starts at the fake time it was allowed
    await worker.settle()

    times = sorted(at for _, at in emu.asked)
    assert len(times) == 12
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in zip(times, times[5:], strict=False))
    assert len(stores) == 3  # 5 + 5 + 2: about a second of answers per transaction
    assert await names(rig, fans) == [f"User {uid[-4:]}" for uid in fans]


async def test_while_the_writer_has_webhooks_queued_look_ups_slow_to_the_busy_rate(
        rig: LineRig, emu: HeldProfiles, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMonotonic()
    emu._clock = fake

    busy = {"queued": 3}

    async def sleep(seconds: float) -> None:
        fake.now += seconds
        if len(emu.asked) >= 6:
            busy["queued"] = 0  # the burst is over: the rest go at the full rate
        await asyncio.sleep(0)

    fans = [user(3100 + n) for n in range(12)]
    await store_fans(rig, fans)
    monkeypatch.setattr(type(rig.writer), "pending", property(lambda self: busy["queued"]))
    worker = Profiles(rig.adapter.sender, rig.writer, rig.crm.read, rig.crm.settings, clock=lambda: rig.clock[0],
                      rate=100.0, flush_every=1.0, monotonic=fake, sleep=sleep, fetchers=1)
    await worker.settle()

    times = [at for _, at in sorted(emu.asked, key=lambda asked: asked[1])]
    assert len(times) == 12
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(gap >= 1 / BUSY_RATE - 1e-9 for gap in gaps[:5])  # busy: 10 a second at most
    assert all(gap <= 1 / 100.0 + 1e-9 for gap in gaps[6:])  # quiet again: 100 a second
    assert await names(rig, fans) == [f"User {uid[-4:]}" for uid in fans]


async def test_a_name_is_looked_up_again_only_after_the_refresh_interval(rig: LineRig, emu: HeldProfiles) -> None:
    fan = user(4000)
    for n in range(3):
        assert await rig.post(text_event(fan, f"msg {n}")) == 200
    assert profile_calls(emu)[fan] == 1
    emu.add_profile(fan, "阿明明")
    rig.clock[0] += timedelta(hours=25)
    assert await rig.post(text_event(fan, "a day later")) == 200
    assert profile_calls(emu)[fan] == 2
    assert await names(rig, [fan]) == ["阿明明"]
