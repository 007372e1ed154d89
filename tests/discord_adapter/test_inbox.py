"""The staff inbox end to end: the real bot against the Discord emulator, the real outbox drainer.

A fan's DM (recorded through the group writer, as the LINE webhook does) becomes a thread in the
inbox channel with a context card; staff answer in the thread (relayed to the fan's platform),
keep notes internal, resolve "answered elsewhere"; ``/reply`` answers from anywhere. The clock is
injected: due times and claim expiry never depend on the wall clock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

import bot.discord_adapter.inbox as inbox_module
from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot, start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.discord_adapter.inbox import ELSEWHERE_ID
from bot.discord_adapter.outbox_sender import DiscordOutboxSender
from bot.outbox_drain import OutboxDrainer
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.writer import GroupWriter
from crm import outbox
from crm.inbox_threads import report_failed_relays
from crm.interaction import InteractionIn
from crm.models import Conversation, Interaction, Note, Outbox
from crm.settings import CrmSettings, SlaRules
from crm.sla import claim_breaches
from tests.discord_adapter.conftest import FAN, GUILD, STAFF, STEP, embed_text, eventually, reply_of

INBOX = 800_000_000_000_000_111
STAFF_CHANNEL = 800_000_000_000_000_112
FORUM_INBOX = 800_000_000_000_000_113
LINE_USER = "U" + "4af4980629f1e0b7c1a2b3c4d5e6f7aa"
T0 = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)  # Saturday 22:00 in Taipei


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings() -> CrmSettings:
    return CrmSettings(sla=SlaRules(inbox=True))


@pytest.fixture
def discord_overrides() -> dict[str, Any]:
    return {"inbox_channel_id": INBOX, "staff_channel_id": STAFF_CHANNEL}


@pytest.fixture(autouse=True)
def inbox_channels(emu: DiscordEmulator) -> None:
    emu.add_channel(GUILD, INBOX, "inbox")
    emu.add_channel(GUILD, STAFF_CHANNEL, "staff")
    emu.add_channel(GUILD, FORUM_INBOX, "inbox-forum", type=15)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def writer(crm: Crm, clock: Clock) -> AsyncIterator[GroupWriter]:
    w = GroupWriter(crm.sessions, crm.settings, clock=clock)
    await w.start()
    yield w
    await w.close()


@pytest.fixture
async def bot(emu: DiscordEmulator, crm: Crm, clock: Clock, writer: GroupWriter) -> AsyncIterator[SuperfanBot]:
    try:
        handle = await start_discord(crm, token="test-token", clock=clock, guild_ready_timeout=0.05, writer=writer)
        try:
            yield handle.client
        finally:
            await handle.close(STEP)
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


async def drain(bot: SuperfanBot, clock: Clock) -> int:
    """One pass of the Discord outbox, as ``superfan run``'s drainer makes it."""
    drainer = OutboxDrainer("discord", bot.transact, DiscordOutboxSender(lambda: bot), clock=clock)
    return await drainer.drain_once()


async def line_dm(writer: GroupWriter, text: str, *, at: datetime = T0, event: str = "ev-1") -> None:
    """A 1:1 LINE message that is not a command, handed to the writer as the webhook does."""
    await writer.submit([InteractionIn(platform="line", external_id=LINE_USER, kind="dm_in", occurred_at=at,
                                       source_event_id=event, display_name="小慧", text=text)])


async def conversation(crm: Crm) -> Conversation:
    async with crm.sessions() as session:
        return (await session.execute(select(Conversation))).scalar_one()


async def outbox_rows(crm: Crm, kind: str) -> list[Outbox]:
    async with crm.sessions() as session:
        return list((await session.execute(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id))).scalars())


def inbox_threads(emu: DiscordEmulator) -> list[Any]:
    return [c for c in emu.world.guilds[GUILD].channels.values() if c.parent_id == INBOX]


async def open_thread(bot: SuperfanBot, crm: Crm, writer: GroupWriter, clock: Clock, emu: DiscordEmulator) -> int:
    await line_dm(writer, "請問週末有直播嗎？")
    await drain(bot, clock)
    (thread,) = inbox_threads(emu)
    await eventually(lambda: _cached(bot, thread.id))
    return int(thread.id)


async def _cached(bot: SuperfanBot, thread_id: int) -> bool:
    return bot.get_channel(thread_id) is not None


async def test_line_dm_appears_in_an_inbox_thread_with_the_context_card(bot, crm, writer, clock, emu):
    async with crm.sessions.begin() as session:  # a purchase and a note the card should show
        from crm.ingest import record_many
        from crm.topics import add_note, add_topic
        await record_many(session, [InteractionIn(platform="line", external_id=LINE_USER, kind="purchase",
                                                  occurred_at=T0 - timedelta(days=3), source_event_id="order-9",
                                                  display_name="小慧", amount=Decimal("1280"), currency="TWD")],
                          crm.settings, T0)
        fan_id = (await session.execute(select(Interaction.fan_id))).scalar_one()
        await add_note(session, fan_id, "喜歡手沖咖啡", author="staff", now=T0)
        await add_topic(session, fan_id, "直播", source="fan", now=T0)

    await line_dm(writer, "請問週末有直播嗎？")
    assert await drain(bot, clock) == 1
    conv = await conversation(crm)
    (thread,) = inbox_threads(emu)
    assert thread.name == f"#{conv.id} 小慧"
    assert conv.thread_ref == str(thread.id)
    card, message = emu.sent_messages(thread.id)
    shown = embed_text(card)
    assert f"#{conv.id}" in shown and "小慧" in shown and "LINE" in shown
    assert "2026-12-06 22:00（Asia/Taipei）" in shown  # due 24 h later, in the creator's timezone
    assert "1280 TWD" in shown and "2026-12-02" in shown  # last purchase, local date
    assert "喜歡手沖咖啡" in shown and "直播" in shown
    assert card["components"][0]["components"][0]["custom_id"] == ELSEWHERE_ID
    assert "請問週末有直播嗎？" in message["content"] and "小慧" in message["content"]

    await line_dm(writer, "還有，會賣周邊嗎？", at=T0 + timedelta(minutes=5), event="ev-2")
    assert await drain(bot, clock) == 1
    assert len(inbox_threads(emu)) == 1  # the same conversation, the same thread
    assert "會賣周邊嗎" in emu.sent_messages(thread.id)[-1]["content"]


async def test_staff_reply_in_the_thread_is_relayed_to_the_line_fan_and_answers(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    clock.now = T0 + timedelta(hours=2)
    sent = await emu.message_create(thread_id, STAFF, "週六晚上八點見！", guild_id=GUILD)

    (relay,) = await eventually(lambda: outbox_rows(crm, "relay"))
    assert (relay.platform, relay.recipient, json.loads(relay.payload)) == ("line", LINE_USER,
                                                                           {"text": "週六晚上八點見！"})
    conv = await conversation(crm)
    assert conv.status == "answered" and conv.first_response_seconds == 7200
    await emu.wait_for_request("PUT", f"/messages/{sent['id']}/reactions/")
    # the gateway delivering the same message again relays nothing more
    await emu.dispatch("MESSAGE_CREATE", sent)
    await emu.message_create(thread_id, STAFF, "// sentinel", guild_id=GUILD)
    await eventually(lambda: _notes(crm))
    assert len(await outbox_rows(crm, "relay")) == 1
    # staff messages in inbox threads are not fan interactions
    assert [i.kind for i in await _interactions(crm)] == ["dm_in", "dm_out"]


async def _notes(crm: Crm) -> list[Note]:
    async with crm.sessions() as session:
        return list((await session.execute(select(Note))).scalars())


async def _interactions(crm: Crm) -> list[Interaction]:
    async with crm.sessions() as session:
        return list((await session.execute(select(Interaction).order_by(Interaction.id))).scalars())


async def test_a_note_in_the_thread_stays_internal(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    await emu.message_create(thread_id, STAFF, "// 她是第一次來信", guild_id=GUILD)
    (note,) = await eventually(lambda: _notes(crm))
    assert note.text == "她是第一次來信" and "staffer" in note.author
    assert await outbox_rows(crm, "relay") == []
    assert (await conversation(crm)).status == "waiting"


async def test_a_non_staff_message_in_the_thread_is_not_relayed(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    await emu.message_create(thread_id, FAN, "我也想問", guild_id=GUILD)
    await emu.message_create(thread_id, STAFF, "// sentinel", guild_id=GUILD)
    await eventually(lambda: _notes(crm))
    assert await outbox_rows(crm, "relay") == []


@contextlib.contextmanager
def crash_before_storing_the_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """While ``state["crash"]``, an attempt dies right after creating the thread, before storing its id."""
    state: dict[str, Any] = {"crash": True, "calls": 0}
    real = inbox_module.store_thread_ref

    async def crashing(session: Any, conversation_id: int, thread_ref: str) -> None:
        state["calls"] += 1
        if state["crash"]:
            raise RuntimeError("crash")
        await real(session, conversation_id, thread_ref)

    monkeypatch.setattr(inbox_module, "store_thread_ref", crashing)
    yield state


async def test_a_crash_between_creating_the_thread_and_storing_it_makes_no_second_thread(
        bot, crm, writer, clock, emu, monkeypatch):
    with crash_before_storing_the_thread(monkeypatch) as state:
        await line_dm(writer, "請問週末有直播嗎？")
        await drain(bot, clock)
        assert len(inbox_threads(emu)) == 1 and (await conversation(crm)).thread_ref is None
        (row,) = await outbox_rows(crm, "inbox_message")
        assert row.status == "pending"  # to be retried
        state["crash"] = False
        clock.now = T0 + timedelta(seconds=30)  # the retry is due, but the crashed attempt's claim holds
        assert await drain(bot, clock) == 1
        assert (await conversation(crm)).thread_ref is None
        clock.now = T0 + timedelta(minutes=5)  # the claim has expired
        assert await drain(bot, clock) == 1
    (thread,) = inbox_threads(emu)
    assert (await conversation(crm)).thread_ref == str(thread.id)
    messages = emu.sent_messages(thread.id)
    assert [bool(m["embeds"]) for m in messages] == [True, False]  # one card (same nonce), one message
    assert (await outbox_rows(crm, "inbox_message"))[0].status == "sent"


async def test_answered_elsewhere_button_resolves_the_conversation(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    card = emu.sent_messages(thread_id)[0]
    refused = await reply_of(await emu.click_button(ELSEWHERE_ID, int(card["id"]), FAN, locale="en-US"))
    assert (await conversation(crm)).status == "waiting" and refused["content"]
    done = await reply_of(await emu.click_button(ELSEWHERE_ID, int(card["id"]), STAFF, locale="en-US"))
    assert done["content"] == "Marked as answered elsewhere."
    conv = await conversation(crm)
    assert (conv.status, conv.resolution) == ("resolved", "elsewhere")
    await emu.wait_for_messages(thread_id, 3)
    assert "staffer" in emu.sent_messages(thread_id)[-1]["content"]


async def test_slash_reply_answers_from_anywhere(bot, crm, writer, clock, emu):
    await open_thread(bot, crm, writer, clock, emu)
    handle = await emu.invoke_slash("reply", user_id=STAFF, channel_id=INBOX,
                                    options={"fan": "小慧", "text": "收到，週末見"}, locale="en-US")
    answer = await reply_of(handle)
    assert answer["content"].startswith("Queued for 小慧 (LINE)")
    (relay,) = await outbox_rows(crm, "relay")
    assert relay.recipient == LINE_USER and json.loads(relay.payload) == {"text": "收到，週末見"}
    assert (await conversation(crm)).status == "answered"
    nobody = await reply_of(await emu.invoke_slash("reply", user_id=STAFF, channel_id=INBOX,
                                                   options={"fan": "小慧", "text": "again"}, locale="en-US"))
    assert len(await outbox_rows(crm, "relay")) == 2 and nobody["content"].startswith("Queued")
    refused = await reply_of(await emu.invoke_slash("reply", user_id=FAN, channel_id=INBOX,
                                                    options={"fan": "小慧", "text": "hi"}, locale="en-US"))
    assert len(await outbox_rows(crm, "relay")) == 2 and refused["content"]


async def test_a_breach_is_posted_in_the_thread_and_the_staff_channel(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    clock.now = T0 + timedelta(hours=25)
    async with crm.sessions.begin() as session:
        assert await claim_breaches(session, crm.settings, clock.now)
    await drain(bot, clock)
    assert "2026-12-06 22:00" in emu.sent_messages(thread_id)[-1]["content"]
    (staff_line,) = emu.sent_messages(STAFF_CHANNEL)
    assert f"<#{thread_id}>" in staff_line["content"] and "小慧" in staff_line["content"]


async def test_a_failed_relay_is_reported_in_its_thread_once(bot, crm, writer, clock, emu):
    thread_id = await open_thread(bot, crm, writer, clock, emu)
    await emu.message_create(thread_id, STAFF, "週六見", guild_id=GUILD)
    (relay,) = await eventually(lambda: outbox_rows(crm, "relay"))
    async with crm.sessions.begin() as session:
        await outbox.mark_failed(session, relay.id, clock.now, "blocked")
        assert await report_failed_relays(session, clock.now) == 1
        assert await report_failed_relays(session, clock.now) == 0
    await drain(bot, clock)
    assert "blocked" in emu.sent_messages(thread_id)[-1]["content"]


@pytest.mark.parametrize("discord_overrides", [{"inbox_channel_id": FORUM_INBOX}])
async def test_a_forum_inbox_gets_one_post_per_conversation_with_the_card_first(bot, crm, writer, clock, emu):
    await line_dm(writer, "請問週末有直播嗎？")
    assert await drain(bot, clock) == 1
    (post,) = [c for c in emu.world.guilds[GUILD].channels.values() if c.parent_id == FORUM_INBOX]
    conv = await conversation(crm)
    assert post.name == f"#{conv.id} 小慧" and conv.thread_ref == str(post.id)
    card, message = emu.sent_messages(post.id)
    assert card["embeds"] and "請問週末有直播嗎？" in message["content"]
