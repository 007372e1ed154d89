"""A fan's messages, reactions and DMs land in the CRM once each; bots and edits never count."""

from __future__ import annotations

import pytest

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_adapter.conftest import (
    FAN,
    FAN2,
    FORUM,
    GENERAL,
    OTHER_BOT,
    THREAD,
    count_fans,
    eventually,
    fan_of,
    interactions,
    settle,
)


async def test_messages_in_channels_threads_and_forum_posts_are_recorded(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    sent = await emu.message_create(GENERAL, FAN, "今天的直播好好看！")
    await emu.message_create(THREAD, FAN, "請問周邊什麼時候到？")
    await emu.message_create(FORUM, FAN, "我畫的圖 🎨")
    rows = await eventually(lambda: _three(crm))
    assert {r.kind for r in rows} == {"message"} and {r.platform for r in rows} == {"discord"}
    assert sent["id"] in {r.source_event_id for r in rows}
    assert {r.summary for r in rows} == {"今天的直播好好看！", "請問周邊什麼時候到？", "我畫的圖 🎨"}
    fan = await fan_of(crm, FAN)
    assert fan is not None and fan.display_name == "小慧"


async def _three(crm: Crm) -> list:
    rows = await interactions(crm, FAN)
    return rows if len(rows) == 3 else []


async def test_bots_webhooks_and_the_bot_itself_never_count(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    await emu.message_create(GENERAL, OTHER_BOT, "beep", bot_author=True)
    await emu.message_create(GENERAL, FAN2, "via webhook", webhook_id="123")
    await bot.get_channel(GENERAL).send("hello from the bot")  # echoed back as MESSAGE_CREATE
    sent = await emu.message_create(GENERAL, FAN, "sentinel")
    await emu.reaction_add(GENERAL, int(sent["id"]), OTHER_BOT, "🤖")
    await emu.reaction_add(GENERAL, int(sent["id"]), emu.bot_user_id, "✅")
    await eventually(lambda: interactions(crm, FAN))
    await emu.message_create(GENERAL, FAN, "second sentinel")
    await eventually(lambda: _count(crm, 2))
    await settle(bot)
    assert [r.kind for r in await interactions(crm)] == ["message", "message"]
    assert await count_fans(crm) == 1


async def _count(crm: Crm, n: int) -> bool:
    return len(await interactions(crm)) == n


async def test_the_same_message_delivered_twice_across_a_reconnect_is_stored_once(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    first = await emu.message_create(GENERAL, FAN, "hello")
    await eventually(lambda: interactions(crm, FAN))
    await emu.force_reconnect()
    await emu.wait_until_ready_sockets(1)
    await emu.dispatch("MESSAGE_CREATE", first)
    await emu.dispatch("MESSAGE_CREATE", first)
    await emu.message_create(GENERAL, FAN2, "sentinel")
    await eventually(lambda: interactions(crm, FAN2))
    await settle(bot)
    assert [r.source_event_id for r in await interactions(crm, FAN)] == [first["id"]]
    assert len(emu.resume_payloads) == 1


async def test_edits_do_not_double_count_and_deletes_keep_history(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    sent = await emu.message_create(GENERAL, FAN, "frist")
    await eventually(lambda: interactions(crm, FAN))
    await emu.message_update(GENERAL, int(sent["id"]), "first")
    await emu.message_delete(GENERAL, int(sent["id"]))
    await emu.message_create(GENERAL, FAN2, "sentinel")
    await eventually(lambda: interactions(crm, FAN2))
    await settle(bot)
    rows = await interactions(crm, FAN)
    # one row (the edit added nothing), kept after the delete with its points, its text redacted
    assert [(r.kind, r.source_event_id, r.summary) for r in rows] == [("message", sent["id"], None)]
    assert rows[0].points > 0


@pytest.mark.parametrize("discord_overrides", [{"redact_deleted_messages": False}])
async def test_deleted_message_text_can_be_kept_by_config(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    sent = await emu.message_create(GENERAL, FAN, "留著這段話")
    await eventually(lambda: interactions(crm, FAN))
    await emu.message_delete(GENERAL, int(sent["id"]))
    await emu.message_create(GENERAL, FAN2, "sentinel")
    await eventually(lambda: interactions(crm, FAN2))
    await settle(bot)
    assert [r.summary for r in await interactions(crm, FAN)] == ["留著這段話"]


async def test_reactions_count_once_even_when_removed_and_added_again(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    post = await emu.message_create(GENERAL, FAN2, "new single out now")
    await emu.reaction_add(GENERAL, int(post["id"]), FAN, "🔥")
    await eventually(lambda: interactions(crm, FAN, "reaction"))
    await emu.reaction_remove(GENERAL, int(post["id"]), FAN, "🔥")
    await emu.reaction_add(GENERAL, int(post["id"]), FAN, "🔥")
    await emu.reaction_add(GENERAL, int(post["id"]), FAN, "💛")
    await eventually(lambda: _count_kind(crm, FAN, "reaction", 2))
    await settle(bot)
    rows = await interactions(crm, FAN, "reaction")
    assert sorted(r.summary for r in rows) == sorted(["🔥", "💛"])


async def _count_kind(crm: Crm, user: int, kind: str, n: int) -> bool:
    return len(await interactions(crm, user, kind)) == n


async def test_dms_to_the_bot_are_dm_in(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    await emu.dm_message(FAN, "請問見面會還有位子嗎？")
    rows = await eventually(lambda: interactions(crm, FAN, "dm_in"))
    assert rows[0].platform == "discord" and rows[0].summary == "請問見面會還有位子嗎？"
    assert await interactions(crm, FAN, "message") == []
