"""LINE outbox: reply while the token is fresh, else push (counted), and never deliver a row twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from linebot.v3.webhooks import FollowDetail, FollowEvent, UserSource
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.line_adapter.outbox_sender import LineOutboxSender, retry_key
from bot.line_adapter.sender import LineSender
from bot.outbox_cli_send import send_pending
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import session_transact
from bot.sandbox.line_emulator import LineEmulator
from crm import outbox
from crm.models import Outbox
from tests.line_adapter.conftest import T0, LineRig, base, event_id, make_config, text_event, user

FAN = user(7)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sender(emu: LineEmulator) -> AsyncIterator[LineSender]:
    async def no_sleep(_: float) -> None:
        return None

    line = LineSender(emu.base_url, emu.access_token, monthly_quota=50, timezone="Asia/Taipei", sleep=no_sleep,
                      clock=lambda: T0)
    await line.start()
    yield line
    await line.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def drainer(sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> OutboxDrainer:
    return OutboxDrainer("line", session_transact(sessions), LineOutboxSender(sender, clock=clock), clock=clock)


async def queue(sessions: async_sessionmaker[AsyncSession], *, kind: str = "answer", push: bool = True,
                token: str | None = None, until: datetime | None = None, key: str | None = None,
                text: str = "簽到成功！") -> int:
    async with sessions.begin() as session:
        row_id = await outbox.enqueue(session, platform="line", kind=kind, recipient=FAN,
                                      payload={"text": text, "push": push}, now=T0, key=key,
                                      reply_token=token, reply_until=until)
    assert row_id is not None
    return row_id


async def row(sessions: async_sessionmaker[AsyncSession], row_id: int) -> Outbox:
    async with sessions() as session:
        return (await session.execute(select(Outbox).where(Outbox.id == row_id))).scalar_one()


async def crash_after_send(sessions: async_sessionmaker[AsyncSession], sender: LineSender, clock: Clock) -> None:
    """Claim and send like the drainer, but die before "sent" is recorded; then the restart's recovery."""
    async with sessions.begin() as session:
        claimed = await outbox.claim_due(session, "line", clock.now)
    handler = LineOutboxSender(sender, clock=clock)
    for message in claimed:
        await handler(message)
    clock.now += timedelta(minutes=3)
    async with sessions.begin() as session:
        assert await outbox.recover_interrupted(session, "line", clock.now) == [m.id for m in claimed]


def texts(emu: LineEmulator) -> list[tuple[str, Any]]:
    return [(d.via, m.get("text")) for d in emu.delivered_to(FAN) for m in d.messages]


async def test_fresh_reply_token_answers_for_free(emu: LineEmulator, sender: LineSender,
                                                 sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, token=emu.issue_reply_token(FAN), until=T0 + timedelta(seconds=50))
    await drainer(sender, sessions, clock).drain_once()
    assert texts(emu) == [("reply", "簽到成功！")]
    assert (await row(sessions, row_id)).status == "sent"
    assert (emu.total_usage, sender.quota.used) == (0, 0)


async def test_stale_token_is_pushed_with_the_rows_retry_key_and_counted(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, token=emu.issue_reply_token(FAN), until=T0 + timedelta(seconds=50))
    clock.now = T0 + timedelta(seconds=51)
    await drainer(sender, sessions, clock).drain_once()
    assert texts(emu) == [("push", "簽到成功！")]
    stored = await row(sessions, row_id)
    assert stored.status == "sent"
    assert emu.delivered_to(FAN)[0].retry_key == retry_key(stored.idempotency_key)
    assert (emu.total_usage, sender.quota.used) == (1, 1)


async def test_a_greeting_with_a_stale_token_is_never_pushed(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, push=False, token="spent", until=T0 - timedelta(seconds=1))
    await drainer(sender, sessions, clock).drain_once()
    stored = await row(sessions, row_id)
    assert (stored.status, stored.last_error) == ("failed", "reply token expired (this message is never pushed)")
    assert texts(emu) == [] and emu.total_usage == 0


async def test_rate_limited_push_is_retried_after_retry_after_and_sent_once(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    emu.fail_next(429, path_contains="push", retry_after=7)
    row_id = await queue(sessions, kind="relay")
    line = drainer(sender, sessions, clock)
    await line.drain_once()
    waiting = await row(sessions, row_id)
    assert waiting.status == "pending"
    assert waiting.next_attempt_at == T0 + timedelta(seconds=7)
    assert sender.quota.used == 0  # LINE refused it: the reservation went back
    clock.now = T0 + timedelta(seconds=7)
    await line.drain_once()
    assert (await row(sessions, row_id)).status == "sent"
    assert texts(emu) == [("push", "簽到成功！")]
    assert (emu.total_usage, sender.quota.used) == (1, 1)


async def test_crash_after_line_accepted_a_push_delivers_once(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, kind="relay", key="digest:2026-12-07")
    await crash_after_send(sessions, sender, clock)
    await drainer(sender, sessions, clock).drain_once()
    assert (await row(sessions, row_id)).status == "sent"  # LINE's 409: already accepted
    assert texts(emu) == [("push", "簽到成功！")]
    assert emu.total_usage == 1


async def test_crash_after_a_reply_is_not_pushed_again(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, token=emu.issue_reply_token(FAN), until=T0 + timedelta(minutes=10))
    await crash_after_send(sessions, sender, clock)
    await drainer(sender, sessions, clock).drain_once()
    stored = await row(sessions, row_id)
    assert (stored.status, stored.last_error) == ("failed", "interrupted: the reply token was already used")
    assert texts(emu) == [("reply", "簽到成功！")]


async def test_crash_before_the_reply_went_out_replies_after_the_restart(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    row_id = await queue(sessions, token=emu.issue_reply_token(FAN), until=T0 + timedelta(minutes=10))
    async with sessions.begin() as session:  # claimed, then the process died before calling LINE
        await outbox.claim_due(session, "line", clock.now)
    clock.now += timedelta(minutes=3)
    async with sessions.begin() as session:
        await outbox.recover_interrupted(session, "line", clock.now)
    await drainer(sender, sessions, clock).drain_once()
    assert (await row(sessions, row_id)).status == "sent"
    assert texts(emu) == [("reply", "簽到成功！")]


async def test_rate_limited_reply_is_replied_again_while_fresh(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    emu.fail_next(429, path_contains="reply", retry_after=2)
    row_id = await queue(sessions, token=emu.issue_reply_token(FAN), until=T0 + timedelta(seconds=50))
    line = drainer(sender, sessions, clock)
    await line.drain_once()
    clock.now = T0 + timedelta(seconds=2)
    await line.drain_once()
    assert (await row(sessions, row_id)).status == "sent"
    assert texts(emu) == [("reply", "簽到成功！")] and emu.total_usage == 0


async def test_a_blocked_fan_fails_the_row_with_lines_reason(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    emu.fail_next(400, path_contains="push")
    row_id = await queue(sessions, kind="relay")
    await drainer(sender, sessions, clock).drain_once()
    stored = await row(sessions, row_id)
    assert stored.status == "failed" and stored.last_error and stored.last_error.startswith("LINE 400")
    assert sender.quota.used == 0


async def test_a_fans_messages_go_out_in_the_order_they_were_queued(
        emu: LineEmulator, sender: LineSender, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    emu.delay = 0.01
    for n in range(6):
        await queue(sessions, kind="relay", text=f"m{n}")
    await drainer(sender, sessions, clock).drain_once()
    assert [text for _, text in texts(emu)] == [f"m{n}" for n in range(6)]


def test_retry_keys_are_uuids_fixed_by_the_row_key() -> None:
    plain = uuid.uuid4()
    assert retry_key(plain.hex) == str(plain)
    assert retry_key("digest:2026-12-07") == retry_key("digest:2026-12-07") != retry_key("digest:2026-12-08")
    assert uuid.UUID(retry_key("digest:2026-12-07")).version == 5


async def test_unknown_kind_fails(sessions: async_sessionmaker[AsyncSession], sender: LineSender, clock: Clock) -> None:
    async with sessions.begin() as session:
        row_id = await outbox.enqueue(session, platform="line", kind="drop", recipient=FAN, payload={"text": "x"},
                                      now=T0)
    assert row_id is not None
    await drainer(sender, sessions, clock).drain_once()
    assert (await row(sessions, row_id)).last_error == "no LINE sender for kind 'drop'"


async def test_a_command_answer_is_committed_with_the_command_and_sent_from_the_outbox(rig: LineRig) -> None:
    await rig.adapter.outbox.close()  # the process "dies" right after the commit: nothing is sent yet
    token = rig.emu.issue_reply_token(FAN)
    assert await rig.post(text_event(FAN, "打卡", reply_token=token), settle=False) == 200
    async with rig.sessions() as session:
        [answer] = (await session.execute(select(Outbox))).scalars().all()
    assert (answer.kind, answer.status, answer.reply_token, answer.recipient) == ("answer", "pending", token, FAN)
    assert rig.emu.delivered == []
    assert await rig.adapter.outbox.drain_once() == 1  # "after the restart"
    [delivered] = rig.emu.delivered_to(FAN)
    assert delivered.via == "reply" and "打卡成功" in delivered.messages[0]["text"]


async def test_a_redelivered_follow_is_greeted_once_and_never_by_push(rig: LineRig) -> None:
    eid = event_id()
    follow = FollowEvent(source=UserSource(user_id=FAN), reply_token=rig.emu.issue_reply_token(FAN),
                         follow=FollowDetail(is_unblocked=False), **base(eid=eid))
    again = FollowEvent(source=UserSource(user_id=FAN), reply_token=rig.emu.issue_reply_token(FAN),
                        follow=FollowDetail(is_unblocked=False), **base(eid=eid, redelivery=True))
    await rig.post(follow)
    await rig.post(again)
    assert [d.via for d in rig.emu.delivered_to(FAN)] == ["reply"]
    async with rig.sessions() as session:
        [greeting] = (await session.execute(select(Outbox))).scalars().all()
    assert greeting.status == "sent" and json.loads(greeting.payload)["push"] is False


async def test_send_pending_sends_from_a_cli_process_when_no_server_runs(
        emu: LineEmulator, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", emu.access_token)
    config = make_config(api_base=emu.base_url)
    crm = Crm(config, engine, sessions, config.crm_settings())
    await queue(sessions, kind="relay", text="我們明天回覆你")
    summary = await send_pending(crm, "line", clock=lambda: T0)
    assert (summary.sent, summary.failed, summary.waiting) == (1, 0, 0)
    assert texts(emu) == [("push", "我們明天回覆你")]


@pytest.mark.parametrize(("locale", "says"), [("zh-TW", "[line] 沒有啟用：無法傳送 LINE 訊息"),
                                              ("en", "[line] is not enabled: LINE messages cannot be sent")])
async def test_send_pending_with_line_off_says_so_in_the_creators_language(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], locale: str, says: str) -> None:
    from dataclasses import replace

    from bot.config import ConfigError, CreatorConfig, LineConfig

    config = replace(make_config(), creator=CreatorConfig(locale=locale), line=LineConfig(enabled=False))
    crm = Crm(config, engine, sessions, config.crm_settings())
    with pytest.raises(ConfigError) as raised:
        await send_pending(crm, "line", clock=lambda: T0)
    assert raised.value.text().endswith(says)
