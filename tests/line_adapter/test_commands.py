"""What fans can ask the LINE account, end to end: check-ins, link codes, referrals, privacy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.line_adapter.commands import Command, parse_postback, parse_text
from crm.fan_actions import create_event, ensure_fan, issue_link_code, referral_code
from crm.identity import fan_by_identity
from crm.models import Fan, Identity, Interaction, JobRun, ProcessedEvent
from tests.line_adapter.conftest import T0, LineRig, event_id, postback_event, text_event, user

FAN = user(7)
KEYWORDS = ["打卡", "checkin"]


@pytest.mark.parametrize(("text", "expected"), [
    ("打卡", Command("checkin")),
    ("  打卡\u200b ", Command("checkin")),
    ("ＣＨＥＣＫＩＮ", Command("checkin")),
    ("打卡　MEET01", Command("checkin", "MEET01")),
    ("打卡MEET01", Command("checkin", "MEET01")),
    ("checkin meet01", Command("checkin", "meet01")),
    ("checkinmeet01", None),
    ("今天打卡了嗎", None),
    ("綁定 K7P2QX", Command("link", "K7P2QX")),
    ("link ｋ７ｐ２ｑｘ", Command("link", "k7p2qx")),
    ("linked", None),
    ("推薦 AB12CD", Command("refer", "AB12CD")),
    ("ref AB12CD", Command("refer", "AB12CD")),
    ("推薦碼", Command("my_code")),
    ("我的資料", Command("me")),
    ("ME", Command("me")),
    ("停止追蹤", Command("optout")),
    ("Forget  Me", Command("forget")),
    ("刪除我的資料", Command("forget")),
    ("I love your videos, me too", None),
])
def test_parse_text(text: str, expected: Command | None) -> None:
    assert parse_text(text, KEYWORDS) == expected


def test_groups_only_check_in() -> None:
    assert parse_text("打卡", KEYWORDS, private=False) == Command("checkin")
    assert parse_text("我的資料", KEYWORDS, private=False) is None
    assert parse_text("綁定 K7P2QX", KEYWORDS, private=False) is None


def test_parse_postback() -> None:
    assert parse_postback("action=checkin") == Command("checkin")
    assert parse_postback("action=checkin&code=MEET01") == Command("checkin", "MEET01")
    assert parse_postback("action=optout&confirm=yes") == Command("optout_confirm")
    assert parse_postback("action=forget&confirm=no") == Command("cancel")
    assert parse_postback("action=buy&item=3") is None
    assert parse_postback("") is None


async def checkins(rig: LineRig, kind: str = "checkin") -> int:
    return await rig.count(kind=kind)


async def test_checkin_once_per_local_day_with_streak(rig: LineRig) -> None:
    token = rig.emu.issue_reply_token(FAN)
    await rig.post(text_event(FAN, "打卡", reply_token=token))
    await rig.post(text_event(FAN, "打卡", reply_token=rig.emu.issue_reply_token(FAN), at=T0 + timedelta(hours=2)))
    # 23:30 on the same Taipei day, then 00:30 the next day
    await rig.post(text_event(FAN, "checkin", reply_token=rig.emu.issue_reply_token(FAN),
                              at=T0 + timedelta(hours=11, minutes=30)))
    await rig.post(postback_event(FAN, "action=checkin", reply_token=rig.emu.issue_reply_token(FAN),
                                  at=T0 + timedelta(hours=12, minutes=30)))

    assert await checkins(rig) == 2
    assert rig.replies_to(FAN) == ["打卡成功！✅ 已連續 1 天。", "今天已經打過卡囉！目前連續 1 天。",
                                   "今天已經打過卡囉！目前連續 1 天。", "打卡成功！✅ 已連續 2 天。"]
    assert {d.via for d in rig.emu.delivered} == {"reply"}
    assert await rig.count(kind="dm_in") == 0  # commands are not inbox messages


async def test_event_code_checks_in_once_per_event(rig: LineRig) -> None:
    async with rig.sessions.begin() as session:
        await create_event(session, code="MEET01", name="台北見面會", starts_at=T0, ends_at=T0 + timedelta(hours=3))
    for text in ("打卡 MEET01", "打卡 meet01", "打卡 NOPE99"):
        await rig.post(text_event(FAN, text, reply_token=rig.emu.issue_reply_token(FAN)))

    assert await checkins(rig, "event_checkin") == 1
    assert rig.replies_to(FAN) == ["「台北見面會」打卡成功！🎉 謝謝你來。", "你已經在「台北見面會」打過卡了。",
                                   "找不到活動代碼 NOPE99，請跟現場工作人員確認。"]


async def test_a_redelivered_command_runs_and_answers_once(rig: LineRig) -> None:
    eid = event_id()
    await rig.post(text_event(FAN, "推薦碼", eid=eid, reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, "推薦碼", eid=eid, redelivery=True, reply_token=rig.emu.issue_reply_token(FAN)))
    assert len(rig.replies_to(FAN)) == 1
    assert rig.replies_to(FAN)[0].startswith("你的推薦碼：")
    async with rig.sessions() as session:
        handled = (await session.execute(select(ProcessedEvent.platform, ProcessedEvent.event_id,
                                                ProcessedEvent.result))).all()
        assert (await session.execute(select(JobRun))).first() is None  # scheduler markers stay the scheduler's
    assert handled == [("line", eid, "done:my_code")]


async def test_a_redelivered_refusal_is_not_refused_twice(rig: LineRig) -> None:
    eid = event_id()
    for redelivery in (False, True):
        await rig.post(text_event(FAN, "綁定 NOSUCH", eid=eid, redelivery=redelivery,
                                  reply_token=rig.emu.issue_reply_token(FAN)))
    assert rig.replies_to(FAN) == ["找不到這組綁定碼，請確認有沒有打錯。\n在 Discord 輸入 /link 可以取得新的綁定碼。"]
    async with rig.sessions() as session:
        result = (await session.execute(select(ProcessedEvent.result))).scalar_one()
    assert result == "refused:link: unknown link code"


async def test_link_code_from_discord_merges_the_line_fan(rig: LineRig) -> None:
    async with rig.sessions.begin() as session:
        discord_fan = await ensure_fan(session, rig.crm.settings, platform="discord", external_id="4242",
                                       display_name="Mika", now=T0)
        code = await issue_link_code(session, discord_fan, platform="discord", now=T0)
    await rig.post(text_event(FAN, "我先打個招呼"))
    await rig.post(text_event(FAN, f"綁定 {code.lower()}", reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, f"link {code}", reply_token=rig.emu.issue_reply_token(FAN)))

    async with rig.sessions() as session:
        merged = await fan_by_identity(session, "line", FAN)
        assert merged is not None and merged.id == discord_fan
        moved = (await session.execute(select(Interaction.fan_id).where(Interaction.kind == "dm_in"))).scalar_one()
    assert moved == discord_fan
    ok, used = rig.replies_to(FAN)
    assert ok.startswith("綁定完成")
    assert used.startswith("這組綁定碼已經用過了")


async def test_referral_credits_the_owner_once_and_never_self(rig: LineRig) -> None:
    async with rig.sessions.begin() as session:
        owner = await ensure_fan(session, rig.crm.settings, platform="discord", external_id="77", display_name="Ann",
                                 now=T0)
        code = await referral_code(session, owner)
    newcomer, other = user(20), user(21)
    await rig.post(text_event(newcomer, f"推薦 {code}", reply_token=rig.emu.issue_reply_token(newcomer)))
    await rig.post(text_event(newcomer, f"ref {code}", reply_token=rig.emu.issue_reply_token(newcomer)))
    await rig.post(text_event(other, "推薦 ZZZZZZ", reply_token=rig.emu.issue_reply_token(other)))

    async with rig.sessions() as session:
        credited = list((await session.execute(
            select(Interaction.fan_id).where(Interaction.kind == "referral"))).scalars())
    assert credited == [owner]
    assert rig.replies_to(newcomer)[0].startswith("推薦碼登記成功")
    assert rig.replies_to(newcomer)[1] == "你已經登記過推薦碼了。"
    assert rig.replies_to(other)[0] == "找不到這個推薦碼，請確認有沒有打錯。"

    await rig.post(text_event(newcomer, "推薦碼", reply_token=rig.emu.issue_reply_token(newcomer)))
    own = rig.replies_to(newcomer)[-1].split("：")[1].split("\n")[0]
    await rig.post(text_event(newcomer, f"推薦 {own}", reply_token=rig.emu.issue_reply_token(newcomer)))
    assert rig.replies_to(newcomer)[-1] == "不能使用自己的推薦碼喔。"


async def test_me_shows_what_is_stored(rig: LineRig) -> None:
    rig.emu.add_profile(FAN, "小慧")
    await rig.post(text_event(FAN, "我的資料", reply_token=rig.emu.issue_reply_token(FAN)))
    assert rig.replies_to(FAN) == ["我們目前沒有存任何關於你的資料。"]
    await rig.post(text_event(FAN, "哈囉"))
    await rig.post(text_event(FAN, "打卡", reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, "我的資料", reply_token=rig.emu.issue_reply_token(FAN)))
    summary = rig.replies_to(FAN)[-1]
    assert "我們記得的你：小慧" in summary
    assert "帳號：LINE" in summary
    assert "私訊 ×1" in summary and "打卡 ×1" in summary


async def test_optout_asks_first_then_stops_recording(rig: LineRig) -> None:
    await rig.post(text_event(FAN, "嗨"))
    await rig.post(text_event(FAN, "停止追蹤", reply_token=rig.emu.issue_reply_token(FAN)))
    [ask] = rig.emu.delivered_to(FAN)[-1].messages
    assert ask["type"] == "template" and ask["template"]["type"] == "confirm"
    yes = ask["template"]["actions"][0]["data"]
    async with rig.sessions() as session:
        fan = await fan_by_identity(session, "line", FAN)
        assert fan is not None and not fan.opted_out

    await rig.post(postback_event(FAN, yes, reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, "還在嗎"))
    await rig.post(text_event(FAN, "打卡", reply_token=rig.emu.issue_reply_token(FAN)))

    assert await rig.count(kind="dm_in") == 1
    assert await checkins(rig) == 0
    assert rig.replies_to(FAN)[-2:] == ["已停止追蹤。之後的互動不會再被記錄；想恢復時傳「恢復追蹤」。",
                                        "你已停止追蹤，所以這次打卡沒有記錄。傳「恢復追蹤」可以恢復。"]

    await rig.post(text_event(FAN, "恢復追蹤", reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, "我回來了"))
    assert rig.replies_to(FAN)[-1] == "已恢復追蹤，之後的互動會再記錄下來。謝謝你回來！"
    assert await rig.count(kind="dm_in") == 2  # recorded again after opting back in
    await rig.post(text_event(FAN, "optin", reply_token=rig.emu.issue_reply_token(FAN)))
    assert rig.replies_to(FAN)[-1] == "你的互動本來就有在記錄，不需要恢復。"


async def test_forget_me_erases_after_confirmation(rig: LineRig) -> None:
    await rig.post(text_event(FAN, "嗨"))
    await rig.post(text_event(FAN, "forget me", reply_token=rig.emu.issue_reply_token(FAN)))
    [ask] = rig.emu.delivered_to(FAN)[-1].messages
    actions = {a["label"]: a["data"] for a in ask["template"]["actions"]}
    await rig.post(postback_event(FAN, actions["取消"], reply_token=rig.emu.issue_reply_token(FAN)))
    assert await rig.count() == 1

    await rig.post(postback_event(FAN, actions["確定"], reply_token=rig.emu.issue_reply_token(FAN)))
    assert await rig.count() == 0
    async with rig.sessions() as session:
        assert (await session.execute(select(Fan))).first() is None
    assert rig.replies_to(FAN)[-2:] == ["好的，已取消。",
                                        "已刪除你的所有資料。之後若再傳訊息會重新開始記錄；不希望被記錄的話，請傳「停止追蹤」。"]


async def test_a_fan_who_stopped_tracking_and_is_erased_stays_unrecorded(rig: LineRig) -> None:
    """停止追蹤 then 刪除我的資料: the history goes, and so does any new recording, until 恢復追蹤."""
    await rig.post(text_event(FAN, "嗨"))
    for words in ("停止追蹤", "刪除我的資料"):
        await rig.post(text_event(FAN, words, reply_token=rig.emu.issue_reply_token(FAN)))
        [ask] = rig.emu.delivered_to(FAN)[-1].messages
        yes = ask["template"]["actions"][0]["data"]
        await rig.post(postback_event(FAN, yes, reply_token=rig.emu.issue_reply_token(FAN)))
    assert "只保留你的 LINE 帳號並標記為「不記錄」" in rig.replies_to(FAN)[-1]
    assert await rig.count() == 0
    async with rig.sessions() as session:
        [(fan_id, name, opted_out)] = (await session.execute(select(Fan.id, Fan.display_name, Fan.opted_out))).all()
        assert opted_out and name == f"line:{FAN[-6:]}"  # nameless: only the account is left
        assert (await session.execute(select(Identity.external_id).where(Identity.fan_id == fan_id))).scalars().all() \
            == [FAN]

    await rig.post(text_event(FAN, "還在嗎"))
    assert await rig.count() == 0  # still not recorded
    await rig.post(text_event(FAN, "恢復追蹤", reply_token=rig.emu.issue_reply_token(FAN)))
    await rig.post(text_event(FAN, "我回來了"))
    assert await rig.count(kind="dm_in") == 1


async def test_an_answer_whose_reply_token_line_refuses_is_pushed_once(rig: LineRig) -> None:
    await rig.post(text_event(FAN, "打卡", reply_token="expired-or-already-used", redelivery=True))
    [delivered] = rig.emu.delivered_to(FAN)
    assert delivered.via == "push" and delivered.retry_key
    assert rig.emu.total_usage == 1
