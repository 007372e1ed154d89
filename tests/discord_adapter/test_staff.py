"""Staff commands: the permission matrix, the fan card within 3 s, notes, tags, pins, stats, /log."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.sandbox.discord_emulator import DiscordEmulator
from crm.clock import utcnow
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Conversation, Note
from tests.discord_adapter.conftest import (
    FAN,
    FAN2,
    GENERAL,
    GUILD,
    MOD,
    OWNER,
    STAFF,
    SUPERFAN_ROLE,
    count_fans,
    embed_text,
    eventually,
    fan_of,
    interactions,
    reply_of,
    slash,
)

REFUSAL = "Sorry, this command is for the creator's team only 🙏"
STAFF_CALLS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("fan", None, {"member": FAN}),
    ("fan", None, {"query": "小慧"}),
    ("note", None, {"member": FAN, "text": "likes coffee"}),
    ("tag", "add", {"member": FAN, "topic": "vip"}),
    ("tag", "remove", {"member": FAN, "topic": "vip"}),
    ("tier", "pin", {"member": FAN, "tier": "superfan"}),
    ("tier", "unpin", {"member": FAN}),
    ("stats", None, {}),
    ("log", None, {"member": FAN, "kind": "purchase", "amount": 500.0}),
]


async def _call_all(emu: DiscordEmulator, user: int) -> list[str]:
    texts = []
    for name, sub, options in STAFF_CALLS:
        texts.append(embed_text(await slash(emu, name, user, subcommand=sub, **options)))
    menu = await emu.invoke_user_context("View fan", FAN, user_id=user, channel_id=GENERAL, locale="en-US")
    texts.append(embed_text(await reply_of(menu)))
    return texts


async def test_every_staff_command_is_refused_to_fans_and_nothing_runs(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    for user in (FAN, FAN2):
        assert await _call_all(emu, user) == [REFUSAL] * (len(STAFF_CALLS) + 1)
    zh = await slash(emu, "stats", FAN, locale="zh-TW")
    assert zh["content"] == "抱歉，這個指令只有工作人員可以使用 🙏" and zh["flags"] & 64
    assert await count_fans(crm) == 0
    assert SUPERFAN_ROLE not in emu.member_roles(GUILD, FAN)


@pytest.mark.parametrize("user", [STAFF, MOD, OWNER], ids=["staff-role", "manage-server", "owner"])
async def test_every_staff_command_runs_for_staff(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm, user: int) -> None:
    texts = await _call_all(emu, user)
    assert all(REFUSAL not in text and "went wrong" not in text for text in texts), texts
    async with crm.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Note))).scalar_one() == 1
    assert len(await interactions(crm, FAN, "purchase")) == 1


async def _line_fan(crm: Crm, name: str, uid: str) -> None:
    async with crm.sessions.begin() as session:
        await record_many(session, [InteractionIn("line", uid, "message", utcnow(), f"line-{uid}", name, text="hi")],
                          crm.settings, utcnow())


async def test_looking_a_fan_up_never_waits_for_the_write_lock(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    """Cards, stats and a fan's own data are read from a snapshot: with SQLite's write lock held
    elsewhere (the group writer committing a burst, a CLI import) they still answer at once."""
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    await emu.message_create(GENERAL, FAN, "新歌超好聽")
    await eventually(lambda: _n(crm, FAN, 1))
    holder = sqlite3.connect(crm.engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        card = await emu.invoke_slash("fan", user_id=STAFF, channel_id=GENERAL, options={"member": FAN},
                                      locale="en-US")
        stats = await emu.invoke_slash("stats", user_id=STAFF, channel_id=GENERAL, locale="en-US")
        mine = await emu.invoke_slash("me", user_id=FAN, channel_id=GENERAL, locale="en-US")
        replies = [await reply_of(i) for i in (card, stats, mine)]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(i.responded_after < 1.0 for i in (card, stats, mine))
    assert "新歌超好聽" in embed_text(replies[0]) and "Passer-by" in embed_text(replies[0])
    assert "Community figures" in embed_text(replies[1]) and "1 fans in all" in embed_text(replies[1])
    assert "新歌超好聽" in embed_text(replies[2])


async def test_fan_card_has_everything_staff_need_within_three_seconds(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    post = await emu.message_create(GENERAL, FAN, "新歌超好聽")
    await emu.reaction_add(GENERAL, int(post["id"]), FAN, "🔥")
    await eventually(lambda: _n(crm, FAN, 2))
    await slash(emu, "prefs", FAN, subcommand="add", topic="coffee")
    await slash(emu, "tag", STAFF, subcommand="add", member=FAN, topic="vip")
    await slash(emu, "note", STAFF, member=FAN, text="came to the Taipei meetup")
    fan = await fan_of(crm, FAN)
    async with crm.sessions.begin() as session:
        since = bot.now() - timedelta(hours=30)
        session.add(Conversation(fan_id=fan.id, platform="discord", status="waiting", opened_at=since,
                                 waiting_since=since, due_at=since + timedelta(hours=24)))

    card = await emu.invoke_slash("fan", user_id=STAFF, channel_id=GENERAL, options={"member": FAN}, locale="en-US")
    menu = await emu.invoke_user_context("View fan", FAN, user_id=MOD, channel_id=GENERAL, locale="zh-TW")
    shown, menu_shown = await reply_of(card), await reply_of(menu)
    assert card.callback["type"] == 4 and card.responded_after < 3.0
    assert menu.callback["type"] == 4 and menu.responded_after < 3.0
    assert shown["flags"] & 64 and menu_shown["flags"] & 64
    text = embed_text(shown)
    for expected in (f"Fan #{fan.id}: 小慧", "Passer-by", "Score", "message ×1", "reaction ×1", f"<@{FAN}>",
                     "coffee", "vip", "came to the Taipei meetup", "Overdue", "Last 2 interactions", "新歌超好聽"):
        assert expected in text, expected
    assert f"粉絲 #{fan.id}：小慧" in embed_text(menu_shown) and "路人" in embed_text(menu_shown)


async def _n(crm: Crm, user: int, n: int) -> bool:
    return len(await interactions(crm, user)) == n


async def test_fan_query_finds_line_only_fans_and_explains_misses(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    await _line_fan(crm, "Amy Chen", "U" + "1" * 32)
    await _line_fan(crm, "Amy Lin", "U" + "2" * 32)
    found = embed_text(await slash(emu, "fan", STAFF, query="amy chen"))
    assert "Amy Chen" in found and "LINE · Amy Chen" in found
    both = (await slash(emu, "fan", STAFF, query="Amy"))["content"]
    assert "matches several fans" in both and "Amy Chen" in both and "Amy Lin" in both
    assert "No fan matches “Zed”" in (await slash(emu, "fan", STAFF, query="Zed"))["content"]
    assert (await slash(emu, "fan", STAFF, query="Zed", locale="zh-TW"))["content"] == "找不到符合「Zed」的粉絲。"
    assert "has no fan record yet" in (await slash(emu, "fan", STAFF, member=FAN2))["content"]
    assert "Give either member" in (await slash(emu, "fan", STAFF))["content"]
    assert await fan_of(crm, FAN2) is None


async def test_tier_pin_moves_roles_and_unpin_moves_them_back(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    pinned = await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="鐵粉")
    assert "pinned to **True fan**" in pinned["content"]
    await eventually(lambda: _roles(emu, FAN, [SUPERFAN_ROLE]))
    fan = await fan_of(crm, FAN)
    assert fan.tier == "superfan" and fan.tier_pinned == "superfan" and str(STAFF) in fan.tier_pinned_by
    unpinned = await slash(emu, "tier", STAFF, subcommand="unpin", member=FAN)
    assert "now **Passer-by**" in unpinned["content"]
    await eventually(lambda: _roles(emu, FAN, []))
    bad = await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="king")
    assert bad["content"] == "Unknown tier “king”; the tiers are: Passer-by, Fan, True fan, Close friend."
    bad_zh = await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="king", locale="zh-TW")
    assert bad_zh["content"] == "沒有「king」這個等級；可用的等級：路人、粉絲、鐵粉、摯友。"


async def _roles(emu: DiscordEmulator, user: int, expected: list[int]) -> bool:
    return emu.member_roles(GUILD, user) == expected


async def test_log_records_off_platform_actions_and_big_purchases_promote(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    done = await slash(emu, "log", STAFF, member=FAN, kind="purchase", amount=12000.0)
    assert done["content"] == f"Recorded: purchase 12000 TWD for <@{FAN}> ✅"
    purchase = (await interactions(crm, FAN, "purchase"))[0]
    assert purchase.amount_cents == 1_200_000 and purchase.currency == "TWD"
    await eventually(lambda: _roles(emu, FAN, [SUPERFAN_ROLE]))
    assert "Recorded: share" in (await slash(emu, "log", STAFF, member=FAN, kind="share", note="IG story"))["content"]
    assert "Recorded: check-in" in (await slash(emu, "log", STAFF, member=FAN, kind="checkin"))["content"]
    assert "already checked in today" in (await slash(emu, "log", STAFF, member=FAN, kind="checkin"))["content"]
    assert (await interactions(crm, FAN, "share"))[0].summary == "IG story"
    fan = await fan_of(crm, FAN)
    assert fan.tier == "superfan"


async def test_note_and_tags(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    await _line_fan(crm, "Amy Chen", "U" + "1" * 32)
    assert "Note added for Amy Chen" in (await slash(emu, "note", STAFF, query="Amy", text="VIP at shows"))["content"]
    assert "Tagged 小慧 with `vip`" in (await slash(emu, "tag", MOD, subcommand="add", member=FAN, topic="VIP"))["content"]
    removed = await slash(emu, "tag", MOD, subcommand="remove", member=FAN, topic="vip")
    assert "Removed the tag `vip`" in removed["content"]
    assert "has no tag" in (await slash(emu, "tag", MOD, subcommand="remove", member=FAN, topic="vip"))["content"]
    async with crm.sessions() as session:
        note = (await session.execute(select(Note))).scalar_one()
    assert note.text == "VIP at shows" and f"discord:{STAFF}" in note.author


async def test_stats_shows_tiers_goal_and_top_fans(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    await slash(emu, "log", STAFF, member=FAN, kind="purchase", amount=12000.0)
    await _line_fan(crm, "Amy Chen", "U" + "1" * 32)
    shown = await slash(emu, "stats", STAFF)
    text = embed_text(shown)
    for expected in ("2 fans in all", "True fan: **1**", "Passer-by: **1**", "**1** / 1000", "1. 小慧 · True fan"):
        assert expected in text, expected


@pytest.mark.parametrize("discord_overrides", [{"defer_after_seconds": 0.0}])
async def test_slow_answers_are_deferred_then_followed_up(emu: DiscordEmulator, bot: SuperfanBot, crm: Crm) -> None:
    handle = await emu.invoke_slash("fan", user_id=STAFF, channel_id=GENERAL, options={"member": FAN},
                                    locale="en-US")
    response = await handle.response()
    assert response["type"] == 5 and response["data"]["flags"] & 64 and handle.responded_after < 3.0
    followup = (await handle.wait_followups(1))[0]
    assert "has no fan record yet" in followup["content"] and followup["flags"] & 64


async def test_unexpected_errors_get_an_apology_and_a_logged_traceback(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.discord_adapter.cogs.stats as stats_cog

    async def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(stats_cog, "community_stats", broken)
    answer = await slash(emu, "stats", STAFF, locale="zh-TW")
    assert answer["content"].startswith("抱歉，剛剛出了點問題") and answer["flags"] & 64
    logged = [r for r in caplog.records if r.name == "bot.discord_adapter.errors"]
    assert logged and "stats" in logged[0].getMessage() and str(STAFF) in logged[0].getMessage()
    assert logged[0].exc_info and "database on fire" in str(logged[0].exc_info[1])
