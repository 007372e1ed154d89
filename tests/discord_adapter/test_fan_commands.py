"""Commands every fan can use, end to end: interaction in → ephemeral answer out → the CRM changed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.sandbox.discord_emulator import DiscordEmulator
from crm.fan_actions import create_event, redeem_link_code
from crm.models import Fan, FanTopic, Identity, LinkCode
from tests.discord_adapter.conftest import (
    FAN,
    FAN2,
    FAN_TIER_ROLE,
    GENERAL,
    GUILD,
    STAFF,
    count_fans,
    embed_text,
    eventually,
    fan_of,
    interactions,
    reply_of,
    settle,
    slash,
)

EPHEMERAL = 64


async def test_checkin_once_per_day_in_the_users_language(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    first = await slash(emu, "checkin", FAN, locale="zh-TW")
    assert first["content"] == "打卡成功！✅ 已連續 1 天。" and first["flags"] & EPHEMERAL
    again = await slash(emu, "checkin", FAN)
    assert again["content"] == "You already checked in today! Streak: 1 day(s)."
    rows = await interactions(crm, FAN, "checkin")
    assert len(rows) == 1 and rows[0].points > 0


async def test_checkin_with_an_event_code(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    now = bot.now()
    async with crm.sessions.begin() as session:
        await create_event(session, code="TPE1122", name="台北見面會", starts_at=now - timedelta(hours=1),
                           ends_at=now + timedelta(hours=3))
    done = await slash(emu, "checkin", FAN, code="tpe1122")
    assert done["content"] == "Checked in to “台北見面會”! 🎉 Thanks for coming."
    assert "already" in (await slash(emu, "checkin", FAN, code="TPE1122"))["content"]
    assert "No running event has the code NOPE" in (await slash(emu, "checkin", FAN, code="NOPE"))["content"]
    assert len(await interactions(crm, FAN, "event_checkin")) == 1


async def test_link_code_joins_the_line_account(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    answer = await slash(emu, "link", FAN)
    assert answer["flags"] & EPHEMERAL and "10 minutes" in answer["content"]
    code = answer["content"].split("**")[1]
    async with crm.sessions.begin() as session:
        link = await session.get(LinkCode, code)
        assert link is not None and link.expires_at - link.created_at == timedelta(minutes=10)
        kept = await redeem_link_code(session, crm.settings, code, platform="line", external_id="U" + "a" * 32,
                                      display_name="小慧 LINE", now=bot.now())
    fan = await fan_of(crm, FAN)
    assert fan is not None and fan.id == kept
    async with crm.sessions() as session:
        platforms = set((await session.execute(select(Identity.platform).where(Identity.fan_id == kept))).scalars())
    assert platforms == {"discord", "line"}


async def test_prefs_add_list_remove(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    assert "`coffee`" in (await slash(emu, "prefs", FAN, subcommand="add", topic="Coffee"))["content"]
    await slash(emu, "prefs", FAN, subcommand="add", topic="直播")
    listed = (await slash(emu, "prefs", FAN, subcommand="list"))["content"]
    assert "`coffee`" in listed and "`直播`" in listed
    assert "Removed" in (await slash(emu, "prefs", FAN, subcommand="remove", topic="coffee"))["content"]
    assert "not on your list" in (await slash(emu, "prefs", FAN, subcommand="remove", topic="tea"))["content"]
    bad = "#" * 20
    zh = await slash(emu, "prefs", FAN, subcommand="add", topic=bad, locale="zh-TW")
    assert zh["content"] == f"主題「{bad}」無法使用（長度需為 1–64 個字）。" and zh["flags"] & EPHEMERAL
    en = await slash(emu, "prefs", FAN, subcommand="add", topic=bad, locale="en-US")
    assert en["content"] == f"The topic “{bad}” cannot be used (1–64 characters)."
    async with crm.sessions() as session:
        assert list((await session.execute(select(FanTopic.topic, FanTopic.source))).all()) == [("直播", "fan")]


async def test_ref_shows_my_code_and_a_new_member_credits_it_once(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    mine = (await slash(emu, "ref", FAN))["content"]
    code = mine.split("**")[1]
    assert f"/ref use:{code}" in mine and f"ref {code}" in mine
    assert (await slash(emu, "ref", FAN))["content"] == mine
    used = await slash(emu, "ref", FAN2, use=code.lower())
    assert "小慧 gets the credit" in used["content"]
    again = await slash(emu, "ref", FAN2, use=code)
    assert "already used a referral code" in again["content"]
    own = await slash(emu, "ref", FAN, use=code)
    assert "own referral code" in own["content"]
    assert (await slash(emu, "ref", FAN, use=code, locale="zh-TW"))["content"] == "不能使用自己的推薦碼喔。"
    typo = await slash(emu, "ref", FAN2, use="NOPE42", locale="zh-TW")
    assert typo["content"] == "找不到這個推薦碼，請確認有沒有打錯。" and typo["flags"] & EPHEMERAL
    assert len(await interactions(crm, FAN, "referral")) == 1


async def test_me_shows_what_is_stored_and_nothing_for_strangers(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    assert (await slash(emu, "me", FAN))["content"] == "We don't store anything about you."
    assert await count_fans(crm) == 0
    await emu.message_create(GENERAL, FAN, "hi all")
    await eventually(lambda: interactions(crm, FAN))
    await slash(emu, "prefs", FAN, subcommand="add", topic="merch")
    shown = await slash(emu, "me", FAN)
    assert shown["flags"] & EPHEMERAL
    text = embed_text(shown)
    for expected in ("What we remember about you: 小慧", "Passer-by", "merch", "message", "hi all", f"<@{FAN}>"):
        assert expected in text, expected


async def test_optout_stops_recording_until_resumed(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    assert "Tracking stopped" in (await slash(emu, "optout", FAN))["content"]
    await emu.message_create(GENERAL, FAN, "not recorded")
    await emu.message_create(GENERAL, FAN2, "sentinel")
    await eventually(lambda: interactions(crm, FAN2))
    await settle(bot)
    assert await interactions(crm, FAN) == []
    assert "opted out" in (await slash(emu, "checkin", FAN))["content"]
    assert "resumed" in (await slash(emu, "optout", FAN, resume=True))["content"]
    await emu.message_create(GENERAL, FAN, "recorded again")
    assert (await eventually(lambda: interactions(crm, FAN)))[0].summary == "recorded again"


async def test_forget_me_asks_first_then_erases_everything(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    await emu.message_create(GENERAL, FAN, "hello")
    await eventually(lambda: interactions(crm, FAN))
    await slash(emu, "prefs", FAN, subcommand="add", topic="coffee")
    await slash(emu, "tier", STAFF, subcommand="pin", query="小慧", tier="fan")
    await eventually(lambda: _has_role(emu, FAN, FAN_TIER_ROLE))

    ask = await emu.invoke_slash("forget-me", user_id=FAN, channel_id=GENERAL, locale="en-US")
    prompt = await reply_of(ask)
    assert prompt["flags"] & EPHEMERAL and "cannot be undone" in prompt["content"]
    buttons = [c["custom_id"] for row in prompt["components"] for c in row["components"]]
    assert buttons == ["superfan:forget-me:confirm", "superfan:forget-me:cancel"]

    cancel = await emu.click_button("superfan:forget-me:cancel", int(ask.original["id"]), FAN)
    assert "Nothing was erased" in (await cancel.response())["data"]["content"]
    assert await fan_of(crm, FAN) is not None

    ask = await emu.invoke_slash("forget-me", user_id=FAN, channel_id=GENERAL, locale="en-US")
    await reply_of(ask)
    confirm = await emu.click_button("superfan:forget-me:confirm", int(ask.original["id"]), FAN)
    done = await confirm.response()
    assert done["type"] == 7 and "Everything about you is erased" in done["data"]["content"]
    assert done["data"]["components"] == []
    assert await fan_of(crm, FAN) is None and await interactions(crm, FAN) == []
    async with crm.sessions() as session:
        assert (await session.execute(select(Fan))).first() is None
    await eventually(lambda: _has_role(emu, FAN, FAN_TIER_ROLE, False))


async def test_forget_me_after_optout_keeps_the_member_unrecorded(emu: DiscordEmulator, bot: SuperfanBot,
                                                                  crm: Crm) -> None:
    await emu.message_create(GENERAL, FAN, "hello")
    await eventually(lambda: interactions(crm, FAN))
    await slash(emu, "optout", FAN)
    ask = await emu.invoke_slash("forget-me", user_id=FAN, channel_id=GENERAL, locale="en-US")
    await reply_of(ask)
    done = await (await emu.click_button("superfan:forget-me:confirm", int(ask.original["id"]), FAN)).response()
    assert 'marked "do not record"' in done["data"]["content"]
    assert await interactions(crm, FAN) == []
    await emu.message_create(GENERAL, FAN, "still not recorded")
    await emu.message_create(GENERAL, FAN2, "sentinel")
    await eventually(lambda: interactions(crm, FAN2))
    await settle(bot)
    assert await interactions(crm, FAN) == []
    assert "resumed" in (await slash(emu, "optout", FAN, resume=True))["content"]


async def _has_role(emu: DiscordEmulator, user: int, role: int, present: bool = True) -> bool:
    return (role in emu.member_roles(GUILD, user)) == present
