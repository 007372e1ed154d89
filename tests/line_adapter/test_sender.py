"""Outbound LINE messages against the emulator: reply vs push, the monthly quota, retries, no doubles."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from linebot.v3.messaging import TextMessage

from bot.line_adapter.quota import QuotaExceeded
from bot.line_adapter.sender import LineSender, LineSendError
from bot.sandbox.line_emulator import LineEmulator
from tests.line_adapter.conftest import FakeMonotonic, user

FAN = user(3)
HELLO = [TextMessage(text="謝謝你的留言！")]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def clock() -> list[datetime]:
    return [datetime(2026, 11, 22, 4, 0, tzinfo=UTC)]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


def pushes(emu: LineEmulator) -> list:
    return [c for c in emu.calls if c.path.endswith("/push")]


def make_sender(emu: LineEmulator, *, quota: int = 200, **kw: object) -> LineSender:
    return LineSender(emu.base_url, emu.access_token, monthly_quota=quota, timezone="Asia/Taipei", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def sender(emu: LineEmulator, monotonic: FakeMonotonic, sleeps: Sleeps,
                 clock: list[datetime]) -> AsyncIterator[LineSender]:
    s = make_sender(emu, quota=3, monotonic=monotonic, sleep=sleeps, clock=lambda: clock[0])
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def free_plan(emu: LineEmulator, clock: list[datetime]) -> AsyncIterator[LineSender]:
    """A sender on Taiwan's free plan (200 a month); LINE's own count is read at the first send."""
    s = make_sender(emu, quota=200, clock=lambda: clock[0])
    await s.start()
    yield s
    await s.close()


async def test_fresh_reply_token_is_used_and_costs_nothing(sender: LineSender, emu: LineEmulator,
                                                           monotonic: FakeMonotonic) -> None:
    token = emu.issue_reply_token(FAN)
    received = monotonic.now
    monotonic.now += 49
    sent = await sender.reply_or_push(FAN, HELLO, reply_token=token, received_at=received)
    assert sent.via == "reply"
    assert [d.via for d in emu.delivered] == ["reply"]
    assert emu.total_usage == 0 and sender.quota.used == 0


async def test_stale_reply_token_means_push_with_a_retry_key(sender: LineSender, emu: LineEmulator,
                                                             monotonic: FakeMonotonic) -> None:
    token = emu.issue_reply_token(FAN)  # still valid for LINE, but past our 50 s margin
    received = monotonic.now
    monotonic.now += 51
    sent = await sender.reply_or_push(FAN, HELLO, reply_token=token, received_at=received)
    assert sent.via == "push"
    [call] = pushes(emu)
    uuid.UUID(call.headers["x-line-retry-key"])
    assert emu.total_usage == 1 and sender.quota.used == 1
    assert not [c for c in emu.calls if c.path.endswith("/reply")]


async def test_greetings_do_not_push_when_the_token_is_stale(sender: LineSender, emu: LineEmulator,
                                                             monotonic: FakeMonotonic) -> None:
    sent = await sender.reply_or_push(FAN, HELLO, reply_token="t", received_at=monotonic.now - 120, push=False)
    assert sent.via == "skipped"
    assert emu.calls == []


async def test_staff_answer_uses_the_fans_latest_fresh_token_once(sender: LineSender, emu: LineEmulator,
                                                                  monotonic: FakeMonotonic) -> None:
    sender.remember_token(FAN, emu.issue_reply_token(FAN), monotonic.now)
    assert (await sender.send_to_fan(FAN, HELLO)).via == "reply"
    assert (await sender.send_to_fan(FAN, HELLO)).via == "push"  # single use
    assert [d.via for d in emu.delivered] == ["reply", "push"]


async def test_quota_refuses_the_push_that_would_exceed_it(sender: LineSender, emu: LineEmulator) -> None:
    for _ in range(3):
        await sender.push(FAN, HELLO)
    with pytest.raises(QuotaExceeded) as refused:
        await sender.push(FAN, HELLO)
    assert "3/3" in str(refused.value) and "monthly_quota" in str(refused.value)
    assert emu.total_usage == 3
    assert len(pushes(emu)) == 3


async def test_quota_starts_from_lines_own_count_and_resets_each_month(free_plan: LineSender, emu: LineEmulator,
                                                                       clock: list[datetime]) -> None:
    emu.total_usage = 199
    await free_plan.push(FAN, HELLO)
    with pytest.raises(QuotaExceeded):
        await free_plan.multicast([user(n) for n in range(2)], HELLO)
    emu.total_usage = 0  # LINE's month rolled over too
    clock[0] = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 00:00 on 1 December in Taipei
    await free_plan.push(FAN, HELLO)
    assert free_plan.quota.used == 1


async def test_quota_counts_what_the_creator_sent_from_lines_console(free_plan: LineSender, emu: LineEmulator,
                                                                      clock: list[datetime]) -> None:
    """A broadcast from LINE Official Account Manager spends the same monthly quota."""
    emu.total_usage = 100
    await free_plan.push(FAN, HELLO)
    emu.total_usage += 99  # the creator's broadcast to 99 friends, not through superfan
    clock[0] += timedelta(minutes=11)
    with pytest.raises(QuotaExceeded) as refused:
        await free_plan.push(FAN, HELLO)
    assert "200/200" in str(refused.value)
    assert emu.total_usage == 200 and len(pushes(emu)) == 1  # nothing more was sent


async def test_5xx_is_retried_with_the_same_key_and_delivered_once(sender: LineSender, emu: LineEmulator,
                                                                  sleeps: Sleeps) -> None:
    emu.fail_next(500, times=2, path_contains="/push")
    await sender.push(FAN, HELLO)
    keys = {c.headers["x-line-retry-key"] for c in pushes(emu)}
    assert [c.status for c in pushes(emu)] == [500, 500, 200]
    assert len(keys) == 1
    assert len(emu.delivered) == 1
    assert sleeps == [0.5, 1.0]


async def test_429_honours_retry_after_and_gives_up_after_the_bound(sender: LineSender, emu: LineEmulator,
                                                                    sleeps: Sleeps) -> None:
    emu.fail_next(429, times=10, path_contains="/push", retry_after=3)
    with pytest.raises(LineSendError) as failed:
        await sender.push(FAN, HELLO)
    assert failed.value.status == 429
    assert len(pushes(emu)) == 4 and sleeps == [3.0, 3.0, 3.0]
    assert emu.delivered == []


async def test_other_4xx_fails_at_once_and_gives_the_quota_back(sender: LineSender, emu: LineEmulator,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    emu.fail_next(400, path_contains="/push")
    with pytest.raises(LineSendError):
        await sender.push(FAN, [TextMessage(text="secret message body")])
    assert len(pushes(emu)) == 1
    assert sender.quota.used == 0
    assert "400" in caplog.text and "secret message body" not in caplog.text


async def test_a_retry_key_line_already_accepted_is_not_delivered_again(sender: LineSender,
                                                                        emu: LineEmulator) -> None:
    key = str(uuid.uuid4())
    await sender.push(FAN, HELLO, retry_key=key)
    await sender.push(FAN, HELLO, retry_key=key)  # e.g. the caller retried after a timeout
    assert len(emu.delivered) == 1
    assert [c.status for c in pushes(emu)] == [200, 409]


async def test_a_reply_whose_first_attempt_failed_ambiguously_is_never_pushed(
        sender: LineSender, emu: LineEmulator, monotonic: FakeMonotonic) -> None:
    emu.fail_next(500, path_contains="/reply")
    token = emu.issue_reply_token(FAN)
    sent = await sender.reply_or_push(FAN, HELLO, reply_token=token, received_at=monotonic.now)
    assert sent.via == "reply"
    assert [d.via for d in emu.delivered] == ["reply"]


async def test_multicast_batches_of_500_each_with_its_own_stable_key(emu: LineEmulator) -> None:
    fans = [user(n) for n in range(1200)]
    sender = make_sender(emu, quota=5000)
    await sender.start()
    try:
        key = str(uuid.uuid4())
        sent = await sender.multicast(fans + fans[:10], HELLO, retry_key=key)
        await sender.multicast(fans, HELLO, retry_key=key)  # a retried call: every batch answered 409
    finally:
        await sender.close()
    calls = [c for c in emu.calls if c.path.endswith("/multicast")]
    assert [len(c.json["to"]) for c in calls[:3]] == [500, 500, 200]
    assert len({c.headers["x-line-retry-key"] for c in calls}) == 3
    assert [c.status for c in calls[3:]] == [409, 409, 409]
    assert sent.recipients == 1200 and len(emu.delivered) == 1200


async def test_close_releases_the_http_client(emu: LineEmulator) -> None:
    sender = make_sender(emu)
    await sender.start()
    client = sender.api.api_client
    await sender.close()
    assert client.rest_client.pool_manager.closed
    with pytest.raises(RuntimeError):
        _ = sender.api
