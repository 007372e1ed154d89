"""``/drop create`` and ``/drop status`` as staff use them: the real bot and cog against the emulator."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.config import Config, DatabaseConfig, LineConfig
from bot.discord_adapter.client import SuperfanBot
from bot.i18n import t
from bot.outbox_transact import session_transact
from bot.sandbox.discord_emulator import DiscordEmulator, InteractionHandle
from bot.sandbox.line_emulator import LineEmulator
from crm.drops import note_dm_closed
from crm.fan_actions import ensure_fan
from crm.models import Delivery, Drop, Outbox
from crm.settings import CrmSettings
from crm.tiers_service import pin
from tests.discord_adapter.conftest import (
    FAN,
    FAN2,
    GENERAL,
    GUILD,
    MOD,
    NEWBIE,
    STAFF,
    STEP,
    discord_config,
    embed_text,
    reply_of,
    running,
)
from tests.discord_adapter.test_drop_senders import (
    DROPS_CHANNEL,
    LINK,
    RATE_LIMITED,
    TEXT,
    Clock,
    add_fans,
    drainer,
    new_drop,
    with_tier_channel,
)

TEXT_INPUT = "superfan:drop:text"


@pytest.fixture
def settings() -> CrmSettings:
    return with_tier_channel()


@pytest.fixture(autouse=True)
def drops_channel(emu: DiscordEmulator) -> None:
    emu.add_channel(GUILD, DROPS_CHANNEL, "鐵粉限定")


async def open_drop(emu: DiscordEmulator, user: int, locale: str = "en-US", **options: Any) -> InteractionHandle:
    return await emu.invoke_slash("drop", subcommand="create", user_id=user, channel_id=GENERAL,
                                  options=options, locale=locale)


def buttons_of(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's buttons by what they do (``send``, ``discord-only``, ``cancel``); each
    preview's custom ids end in a tag of its own."""
    found = {}
    for row in message["components"]:
        for button in row["components"]:
            prefix, _, tag = button["custom_id"].rpartition(":")
            assert prefix.startswith("superfan:drop:") and len(tag) == 16
            found[prefix.removeprefix("superfan:drop:")] = button
    return found


def shown_in(handle: InteractionHandle) -> int:
    """The id of the message the user sees: the response, or the follow-up after a deferral."""
    assert handle.callback is not None
    if handle.callback["type"] == 5:
        return int(handle.followup_messages[0]["id"])
    assert handle.original is not None
    return int(handle.original["id"])


async def count(sessions: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_drop_is_refused_to_a_member_who_is_not_staff(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    handle = await open_drop(emu, FAN, min_tier="superfan")
    response = await handle.response(STEP)
    assert response["type"] == 4, "no modal for a fan"
    assert response["data"]["content"] == t("discord.errors.not_staff", "en")
    assert response["data"]["flags"] & 64, "the refusal is ephemeral"
    assert await count(sessions, Drop) == 0


async def test_preview_then_send_creates_exactly_one_drop(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    fans = await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "close_friend", MOD: "superfan",
                                                   NEWBIE: "fan"})
    emu.set_dms_closed(MOD)
    async with sessions.begin() as s:  # an earlier drop found MOD's DMs closed
        await note_dm_closed(s, str(MOD), now)

    opened = await open_drop(emu, STAFF, min_tier="superfan", link=LINK, sponsored=True, evergreen=True)
    modal = await opened.response(STEP)
    assert modal["type"] == 9 and modal["data"]["title"] == "A drop for True fan and above"
    preview_handle = await emu.submit_modal(opened, {TEXT_INPUT: TEXT})
    preview = await reply_of(preview_handle)
    shown = embed_text(preview)
    assert f"#廣告\n{TEXT}\n{LINK}" in shown, "the text as fans will read it"
    assert "Fans who will receive it: 2 (LINE 0, Discord 2)" in shown
    assert "Discord DMs closed: 1" in shown
    assert "Evergreen: fans who reach True fan later receive it then (once each)" in shown
    assert f"<#{DROPS_CHANNEL}>" in shown, "also posted in the tier's channel"
    buttons = buttons_of(preview)
    assert set(buttons) == {"send", "cancel"}
    send = buttons["send"]["custom_id"]
    assert await count(sessions, Drop) == 0, "a preview writes nothing"

    message_id = shown_in(preview_handle)
    others = await emu.click_button(send, message_id, FAN, locale="en-US")
    assert "Only the staff member" in (await reply_of(others))["content"]
    first = await emu.click_button(send, message_id, STAFF, locale="en-US")
    second = await emu.click_button(send, message_id, STAFF, locale="en-US")
    assert "already answered" in (await reply_of(second))["content"]
    await first.response(STEP)
    edited = await _edited(first)
    assert await count(sessions, Drop) == 1
    async with sessions() as s:
        (drop,) = (await s.execute(select(Drop))).scalars().all()
        recipients = set((await s.execute(select(Delivery.fan_id))).scalars())
        rows = (await s.execute(select(Outbox.kind, func.count()).group_by(Outbox.kind))).all()
    assert f"#{drop.id}" in edited["content"] and "2 fans" in edited["content"]
    assert (drop.min_tier, drop.sponsored, drop.evergreen, drop.link, drop.text) == ("superfan", True, True, LINK,
                                                                                     TEXT)
    assert drop.created_by is not None and str(STAFF) in drop.created_by
    assert recipients == {fans[FAN], fans[FAN2]}
    assert dict(rows) == {"drop_dm": 2, "drop_post": 1}


async def _edited(handle: InteractionHandle) -> dict[str, Any]:
    for _ in range(int(STEP / 0.02)):
        if handle.edits:
            return handle.edits[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("the preview was not edited")


async def test_cancel_creates_nothing_in_the_staff_members_language(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    opened = await open_drop(emu, STAFF, locale="zh-TW", min_tier="鐵粉")
    assert (await opened.response(STEP))["data"]["title"] == "給鐵粉以上的獨家內容"
    with pytest.raises(ValueError, match="required"):  # Discord's form will not send an empty text
        await emu.submit_modal(opened, {TEXT_INPUT: ""})
    with pytest.raises(ValueError, match="longer"):
        await emu.submit_modal(opened, {TEXT_INPUT: "好" * 4001})
    preview_handle = await emu.submit_modal(opened, {TEXT_INPUT: TEXT})
    preview = await reply_of(preview_handle)
    shown = embed_text(preview)
    assert "會收到的粉絲：1 位（LINE 0、Discord 1）" in shown and "按下「送出」之前不會送出任何東西" in shown
    cancelled = await emu.click_button(buttons_of(preview)["cancel"]["custom_id"], shown_in(preview_handle), STAFF,
                                       locale="zh-TW")
    assert (await cancelled.response(STEP))["data"]["content"] == "已取消，沒有送出任何東西。"
    assert await count(sessions, Drop) == 0


async def test_status_shows_sent_failed_and_pending(
        emu: DiscordEmulator, crm: Crm, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession],
        settings: CrmSettings, now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "superfan", MOD: "superfan"})
    drop_id = await new_drop(sessions, settings, now)
    emu.set_dms_closed(FAN2)
    emu.fail_next("POST", f"/channels/{emu.dm_channel_id(MOD)}/messages", 429, times=5, json=RATE_LIMITED)
    await drainer(bot, session_transact(sessions), Clock(now)).drain_once()

    shown = embed_text(await reply_of(await emu.invoke_slash(
        "drop", subcommand="status", user_id=STAFF, channel_id=GENERAL, options={"id": drop_id}, locale="en-US")))
    assert f"Drop #{drop_id} (sending)" in shown
    assert "Discord: sent 1, failed 1, pending 1" in shown
    assert "discord: Discord DMs closed: 1" in shown
    assert "Reactions on the channel post: 0 from 0 fans" in shown

    in_chinese = embed_text(await reply_of(await emu.invoke_slash(
        "drop", subcommand="status", user_id=STAFF, channel_id=GENERAL, options={"id": drop_id}, locale="zh-TW")))
    assert "Discord：已送 1、失敗 1、待送 1" in in_chinese and "Discord 不接受私訊：1 位" in in_chinese

    recent = embed_text(await reply_of(await emu.invoke_slash(
        "drop", subcommand="status", user_id=STAFF, channel_id=GENERAL, locale="en-US")))
    assert f"#{drop_id} sending" in recent and "sent 1 / failed 1 / pending 1" in recent


async def test_over_the_line_quota_send_is_off_and_discord_only_sends_without_line(
        emu: DiscordEmulator, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], db_url: str,
        now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = with_tier_channel()
    fans = await add_fans(sessions, settings, now, {FAN: "superfan"})
    async with sessions.begin() as s:
        for n in range(2):
            line_fan = await ensure_fan(s, settings, platform="line", external_id=f"U{n:032x}", display_name=f"ln{n}",
                                        now=now)
            await pin(s, settings, line_fan, "superfan", by="test", now=now)
    monkeypatch.setenv("TEST_LINE_TOKEN", "line-token")
    async with LineEmulator(access_token="line-token", monthly_quota=200) as line:
        line.total_usage = 199  # one LINE message left this month; the drop needs two
        config = Config(database=DatabaseConfig(url=db_url), discord=discord_config(emu),
                        line=LineConfig(enabled=True, api_base=line.base_url, monthly_quota=200,
                                        channel_access_token_env="TEST_LINE_TOKEN"))
        async with running(Crm(config, engine, sessions, settings)):
            opened = await open_drop(emu, STAFF, min_tier="superfan")
            preview_handle = await emu.submit_modal(opened, {TEXT_INPUT: TEXT})
            preview = await reply_of(preview_handle)
            shown = embed_text(preview)
            assert "Fans who will receive it: 3 (LINE 2, Discord 1)" in shown
            assert "this uses 2 messages; 1 left this month (limit 200)" in shown
            buttons = buttons_of(preview)
            assert buttons["send"].get("disabled") is True
            assert set(buttons) == {"send", "discord-only", "cancel"}
            chosen = await emu.click_button(buttons["discord-only"]["custom_id"], shown_in(preview_handle), STAFF,
                                            locale="en-US")
            await chosen.response(STEP)
            edited = await _edited(chosen)
    assert "1 fans (LINE 0 in 0 batches, Discord 1)" in edited["content"]
    async with sessions() as s:
        (drop,) = (await s.execute(select(Drop))).scalars().all()
        recipients = (await s.execute(select(Delivery.fan_id, Delivery.platform))).all()
    assert drop.platforms == "discord" and recipients == [(fans[FAN], "discord")]
    assert [c for c in line.calls if c.path.endswith("multicast")] == []


async def test_two_previews_at_once_each_send_their_own_drop(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    fans = await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "close_friend"})
    previews = {}
    for staff, text, tier in ((STAFF, "給鐵粉的", "superfan"), (MOD, "給摯友的", "close_friend")):
        opened = await open_drop(emu, staff, min_tier=tier)
        handle = await emu.submit_modal(opened, {TEXT_INPUT: text})
        previews[staff] = (handle, buttons_of(await reply_of(handle))["send"]["custom_id"])
    assert previews[STAFF][1] != previews[MOD][1]
    for staff in (MOD, STAFF):
        handle, send = previews[staff]
        await _edited(await emu.click_button(send, shown_in(handle), staff, locale="en-US"))
    async with sessions() as s:
        made = (await s.execute(select(Drop.text, Drop.min_tier, Drop.created_by).order_by(Drop.id))).all()
        who = (await s.execute(select(Drop.text, Delivery.fan_id).join(Delivery, Delivery.drop_id == Drop.id))).all()
    assert [(text, tier) for text, tier, _ in made] == [("給摯友的", "close_friend"), ("給鐵粉的", "superfan")]
    assert str(MOD) in made[0][2] and str(STAFF) in made[1][2]
    assert sorted(who) == sorted([("給摯友的", fans[FAN2]), ("給鐵粉的", fans[FAN]), ("給鐵粉的", fans[FAN2])])


async def test_a_bad_link_or_image_is_refused_before_the_text_is_asked_for(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession]) -> None:
    for options, said in (({"link": "example.com/x"}, "The link must start with http:// or https://."),
                          ({"image": "http://example.com/a.png"}, "The image must be an https:// URL.")):
        response = await (await open_drop(emu, STAFF, min_tier="superfan", **options)).response(STEP)
        assert (response["type"], response["data"]["content"]) == (4, said), "no text form opened"
    assert await count(sessions, Drop) == 0


async def test_drop_is_registered_with_zh_tw_descriptions(emu: DiscordEmulator, bot: SuperfanBot) -> None:
    (drop,) = [c for c in emu.registered_commands(GUILD) if c["name"] == "drop"]
    assert drop["description_localizations"]["zh-TW"] == "給支持你的粉絲的獨家內容"
    subs = {o["name"]: o for o in drop["options"]}
    assert set(subs) == {"create", "status"}
    create = {o["name"]: o for o in subs["create"]["options"]}
    assert create["min_tier"]["required"] and create["min_tier"]["autocomplete"]
    assert create["min_tier"]["description_localizations"]["zh-TW"] == "最低要哪個等級才會收到"
    platforms = {c["value"]: c["name_localizations"]["zh-TW"] for c in create["platforms"]["choices"]}
    assert platforms == {"both": "LINE 和 Discord", "line": "只送 LINE", "discord": "只送 Discord"}
    assert {o["name"] for o in subs["status"]["options"]} == {"id"}


async def test_status_says_why_the_channel_post_failed(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    drop_id = await new_drop(sessions, settings, now)
    del emu.world.guilds[GUILD].channels[DROPS_CHANNEL]  # staff deleted the tier's channel
    await drainer(bot, session_transact(sessions), Clock(now)).drain_once()
    shown = embed_text(await reply_of(await emu.invoke_slash(
        "drop", subcommand="status", user_id=STAFF, channel_id=GENERAL, options={"id": drop_id}, locale="en-US")))
    assert "Discord: sent 1, failed 0, pending 0" in shown
    assert "The channel post failed: the channel no longer exists (check [drops] tier_channel_ids)" in shown


async def test_the_tier_is_picked_by_its_name_in_the_staff_members_language(
        emu: DiscordEmulator, bot: SuperfanBot) -> None:
    async def choices(typed: str, locale: str) -> list[tuple[str, str]]:
        handle = await emu.autocomplete("drop", "min_tier", typed, subcommand="create", user_id=STAFF,
                                        channel_id=GENERAL, locale=locale)
        response = await handle.response(STEP)
        assert response["type"] == 8
        return [(c["name"], c["value"]) for c in response["data"]["choices"]]

    assert await choices("鐵", "zh-TW") == [("鐵粉", "superfan")]
    assert await choices("", "zh-TW") == [("路人", "passerby"), ("粉絲", "fan"), ("鐵粉", "superfan"),
                                         ("摯友", "close_friend")]
    assert await choices("close", "en-US") == [("Close friend", "close_friend")]
