"""Discord outbox: a staff relay reaches the fan's DMs exactly once, failures are recorded with a reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.discord_adapter import outbox_sender
from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.discord_adapter.outbox_sender import DiscordOutboxSender, nonce_of, register
from bot.outbox_cli_send import send_pending
from bot.outbox_drain import OutboxDrainer, RetryLater
from bot.sandbox.discord_emulator import DiscordEmulator
from crm import outbox
from crm.models import Outbox
from crm.outbox import OutboxMessage
from tests.discord_adapter.conftest import FAN, NEWBIE


def transactor(sessions: async_sessionmaker[AsyncSession]) -> Callable[[Callable[[AsyncSession], Awaitable[Any]]], Awaitable[Any]]:
    async def transact(work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions.begin() as session:
            return await work(session)
    return transact


async def queue(sessions: async_sessionmaker[AsyncSession], now: datetime, *, kind: str = "relay",
                recipient: int | str = FAN, text: str = "謝謝你的來信！") -> int:
    async with sessions.begin() as session:
        row_id = await outbox.enqueue(session, platform="discord", kind=kind, recipient=str(recipient),
                                      payload={"text": text}, now=now)
    assert row_id is not None
    return row_id


async def row(sessions: async_sessionmaker[AsyncSession], row_id: int) -> Outbox:
    async with sessions() as session:
        return (await session.execute(select(Outbox).where(Outbox.id == row_id))).scalar_one()


def dms_to(emu: DiscordEmulator, user_id: int) -> list[dict[str, Any]]:
    channel = emu.world.dm_channel_for(user_id)
    return [m for m in emu.world.sent if m["channel_id"] == str(channel.id)]


def drainer(bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]) -> OutboxDrainer:
    return OutboxDrainer("discord", transactor(sessions), DiscordOutboxSender(lambda: bot), clock=clock)


async def test_relay_is_one_dm_with_a_nonce_and_a_resend_after_a_crash_is_deduplicated(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    row_id = await queue(sessions, now)
    assert await drainer(bot, sessions, lambda: now).drain_once() == 1
    sent = dms_to(emu, FAN)
    assert [m["content"] for m in sent] == ["謝謝你的來信！"]
    stored = await row(sessions, row_id)
    assert stored.status == "sent"
    assert sent[0]["nonce"] == str(nonce_of(stored.idempotency_key))

    # A crash after Discord took the message but before "sent" was recorded: the row is handed
    # back and sent again under the same nonce; Discord answers with the first message.
    async with sessions.begin() as session:
        await session.execute(Outbox.__table__.update().where(Outbox.id == row_id)
                              .values(status="sending", next_attempt_at=now))
        later = now + timedelta(minutes=5)
        assert await outbox.recover_interrupted(session, "discord", later) == [row_id]
    assert await drainer(bot, sessions, lambda: later).drain_once() == 1
    assert len(dms_to(emu, FAN)) == 1
    assert (await row(sessions, row_id)).status == "sent"


async def test_closed_dms_fail_the_row_with_the_reason(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    emu.set_dms_closed(NEWBIE)
    row_id = await queue(sessions, now, recipient=NEWBIE)
    await drainer(bot, sessions, lambda: now).drain_once()
    stored = await row(sessions, row_id)
    assert (stored.status, stored.last_error) == ("failed", "dms_closed")
    assert dms_to(emu, NEWBIE) == []


async def test_rate_limited_then_accepted_is_sent_once(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    emu.rest.fail_next("POST", "/messages", 429, 2, None)
    row_id = await queue(sessions, now)
    await drainer(bot, sessions, lambda: now).drain_once()
    assert (await row(sessions, row_id)).status == "sent"
    assert len(dms_to(emu, FAN)) == 1


async def test_discord_outage_is_retried_later_with_the_reason_kept(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    emu.rest.fail_next("POST", "/messages", 503, 10, None)
    row_id = await queue(sessions, now)
    await drainer(bot, sessions, lambda: now).drain_once()
    stored = await row(sessions, row_id)
    assert (stored.status, stored.last_error) == ("pending", "discord 503")
    assert stored.next_attempt_at > now
    assert dms_to(emu, FAN) == []


async def test_registered_kind_gets_its_rows_and_unknown_kind_fails(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], now: datetime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_sender, "_HANDLERS", dict(outbox_sender._HANDLERS))
    seen: list[OutboxMessage] = []

    async def custom(client: SuperfanBot, message: OutboxMessage) -> None:
        assert client is bot
        seen.append(message)

    register("test_kind", custom)
    known = await queue(sessions, now, kind="test_kind", recipient="inbox")
    unknown = await queue(sessions, now, kind="no_such_kind", recipient="inbox")
    await drainer(bot, sessions, lambda: now).drain_once()
    assert [m.id for m in seen] == [known]
    assert (await row(sessions, known)).status == "sent"
    failed = await row(sessions, unknown)
    assert (failed.status, failed.last_error) == ("failed", "no Discord sender for kind 'no_such_kind'")


async def test_not_connected_waits_instead_of_failing(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    message = OutboxMessage(1, "discord", "relay", str(FAN), {"text": "hi"}, "k", 1, None, None, None, None)
    with pytest.raises(RetryLater):
        await DiscordOutboxSender(lambda: None)(message)


def test_long_text_is_cut_into_messages_discord_accepts() -> None:
    text = "\n".join(["一" * 1500] * 3)
    pieces = list(outbox_sender.chunks(text))
    assert all(len(p) <= outbox_sender.MAX_CONTENT for p in pieces)
    assert "".join(pieces) == "一" * 4500


async def test_send_pending_relays_over_rest_only_when_no_server_runs(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], now: datetime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crm.config.discord.token_env, "test-token")
    await queue(sessions, now, text="收到，謝謝！")
    try:
        summary = await send_pending(crm, "discord", clock=lambda: now)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert (summary.sent, summary.failed, summary.waiting) == (1, 0, 0)
    assert [m["content"] for m in dms_to(emu, FAN)] == ["收到，謝謝！"]
    assert not any(r.path.endswith("/gateway/bot") for r in emu.rest.requests)  # no gateway session
