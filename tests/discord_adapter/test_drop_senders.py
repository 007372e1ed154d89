"""A drop on Discord through the real bot, outbox drainer and senders against the emulator: each
eligible fan's DM exactly once (across a 429 and a restart), DMs closed recorded and remembered,
the tier-channel post once, and the reactions it gathers counted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.outbox_sender import DiscordOutboxSender, nonce_of
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import session_transact
from bot.sandbox.discord_emulator import DiscordEmulator
from crm import drops
from crm.drop_posts import post_reactions
from crm.drops import DropDraft, create_drop, note_dm_closed, preview_drop
from crm.fan_actions import ensure_fan
from crm.models import Delivery, Drop, Identity, Outbox
from crm.privacy import set_opt_out
from crm.settings import CrmSettings, DropRules
from crm.tiers_service import pin
from tests.discord_adapter.conftest import FAN, FAN2, GUILD, MOD, NEWBIE, STAFF, eventually, running

DROPS_CHANNEL = 800_000_000_000_000_111
TEXT = "聖誕節限定：幕後花絮搶先看"
LINK = "https://example.com/xmas"
RATE_LIMITED = {"message": "You are being rate limited.", "retry_after": 0.01, "global": False, "code": 0}
Transact = Callable[[Callable[[AsyncSession], Awaitable[Any]]], Awaitable[Any]]


def with_tier_channel() -> CrmSettings:
    """Drops for 鐵粉 and above are also posted in their channel."""
    return replace(CrmSettings(), drops=DropRules(tier_channel_ids={"superfan": DROPS_CHANNEL}))


@pytest.fixture
def settings() -> CrmSettings:
    return with_tier_channel()


@pytest.fixture(autouse=True)
def drops_channel(emu: DiscordEmulator) -> None:
    emu.add_channel(GUILD, DROPS_CHANNEL, "鐵粉限定")


class Clock:
    """The drainer's clock: moved by the test (a retry comes due without sleeping on it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def add_fans(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, now: datetime,
                   tiers: dict[int, str | None], *, opted_out: tuple[int, ...] = ()) -> dict[int, int]:
    """Server members as the bot records them, pinned to a tier (None: the score's tier, 路人)."""
    ids = {}
    async with sessions.begin() as s:
        for user, tier in tiers.items():
            ids[user] = await ensure_fan(s, settings, platform="discord", external_id=str(user),
                                         display_name=f"member{user % 1000}", now=now)
            if tier is not None:
                await pin(s, settings, ids[user], tier, by="test", now=now)
            if user in opted_out:
                await set_opt_out(s, ids[user], True)
    return ids


async def new_drop(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, now: datetime,
                   **draft: Any) -> int:
    async with sessions.begin() as s:
        made = await create_drop(s, settings, DropDraft(**{"text": TEXT, "link": LINK, "min_tier": "鐵粉",
                                                           "platforms": ("discord",), **draft}), now)
    return made.id


def dms_to(emu: DiscordEmulator, user_id: int) -> list[dict[str, Any]]:
    return emu.sent_messages(emu.dm_channel_id(user_id))


def posts_to(emu: DiscordEmulator, channel_id: int) -> list[dict[str, Any]]:
    return [r for r in emu.requests if r.method == "POST" and r.path == f"/channels/{channel_id}/messages"]


def drainer(bot: SuperfanBot, transact: Transact, clock: Clock) -> OutboxDrainer:
    return OutboxDrainer("discord", transact, DiscordOutboxSender(lambda: bot), clock=clock)


def dies_before_committing(sessions: async_sessionmaker[AsyncSession], row_id: int) -> Transact:
    """A process that dies after Discord took row ``row_id``'s message but before "sent" was
    committed: that transaction never commits (everything else does)."""

    async def transact(work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions.begin() as s:
            result = await work(s)
            if (await s.execute(select(Outbox.status).where(Outbox.id == row_id))).scalar_one() == "sent":
                raise ConnectionError("the process died before its commit")
            return result

    return transact


async def row_of(sessions: async_sessionmaker[AsyncSession], key: str) -> Outbox:
    async with sessions() as s:
        return (await s.execute(select(Outbox).where(Outbox.idempotency_key == key))).scalar_one()


async def deliveries(sessions: async_sessionmaker[AsyncSession], drop_id: int) -> dict[str, tuple[str, str | None]]:
    """Discord user id → (status, error)."""
    async with sessions() as s:
        rows = await s.execute(select(Delivery.external_id, Delivery.status, Delivery.error)
                               .where(Delivery.drop_id == drop_id))
        return {ext: (status, error) for ext, status, error in rows}


async def test_each_eligible_fan_gets_the_dm_once_across_a_429_and_a_restart(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    fans = await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "close_friend", MOD: "superfan",
                                                   NEWBIE: "fan", STAFF: "superfan"}, opted_out=(STAFF,))
    drop_id = await new_drop(sessions, settings, now, image_url="https://example.com/tree.png")
    # Discord keeps answering FAN's DM channel 429: discord.py waits retry_after and tries again,
    # five times, then gives up; the row waits for Discord's retry_after.
    emu.fail_next("POST", f"/channels/{emu.dm_channel_id(FAN)}/messages", 429, times=5, json=RATE_LIMITED)
    mod_row = await row_of(sessions, f"drop:{drop_id}:discord:{fans[MOD]}")
    clock = Clock(now)
    async with running(crm) as first:
        await drainer(first.client, dies_before_committing(sessions, mod_row.id), clock).drain_once()
    assert len(dms_to(emu, MOD)) == 1, "Discord took MOD's DM; the process died before recording it"
    assert (await row_of(sessions, mod_row.idempotency_key)).status == "sending"
    assert dms_to(emu, FAN) == [] and len(posts_to(emu, emu.dm_channel_id(FAN))) == 5
    assert (await deliveries(sessions, drop_id))[str(FAN)] == ("pending", "discord 429")

    # A restarted process: a new bot and drainer, minutes later, on the same rows.
    clock.now = now + timedelta(minutes=5)
    async with running(crm) as second:
        again = drainer(second.client, session_transact(sessions), clock)
        await again.start()
        try:
            await eventually(lambda: _drop_rows_settled(sessions))
        finally:
            await again.close()

    for user in (FAN, FAN2, MOD):
        (dm,) = dms_to(emu, user)
        assert dm["content"] == f"{TEXT}\n{LINK}"
        assert dm["embeds"][0]["image"]["url"] == "https://example.com/tree.png"
        assert dm["nonce"] == str(nonce_of(f"drop:{drop_id}:discord:{fans[user]}"))
    assert len(posts_to(emu, emu.dm_channel_id(MOD))) == 2, "resent under the same nonce: Discord kept one"
    assert dms_to(emu, NEWBIE) == [] and dms_to(emu, STAFF) == [], "below the tier, opted out: never"
    assert await deliveries(sessions, drop_id) == {str(u): ("sent", None) for u in (FAN, FAN2, MOD)}
    async with sessions() as s:
        drop = await s.get(Drop, drop_id)
        assert drop is not None and drop.status == "finished"


async def _drop_rows_settled(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as s:
        pending = await s.execute(select(func.count()).select_from(Outbox).where(
            Outbox.kind.in_(("drop_dm", "drop_post")), Outbox.status.in_(("pending", "sending"))))
        return pending.scalar_one() == 0


async def test_closed_dms_fail_with_the_reason_and_leave_the_fan_out_of_the_next_drop(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    fans = await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "superfan"})
    emu.set_dms_closed(FAN)
    drop_id = await new_drop(sessions, settings, now)
    async with running(crm) as handle:
        await drainer(handle.client, session_transact(sessions), Clock(now)).drain_once()

    assert dms_to(emu, FAN) == [] and len(dms_to(emu, FAN2)) == 1
    assert await deliveries(sessions, drop_id) == {str(FAN): ("failed", "dms_closed"), str(FAN2): ("sent", None)}
    assert (await row_of(sessions, f"drop:{drop_id}:discord:{fans[FAN]}")).status == "failed"
    async with sessions() as s:
        closed = (await s.execute(select(Identity.external_id).where(Identity.dm_closed_at.is_not(None)))).scalars()
        assert list(closed) == [str(FAN)]
        nxt = await preview_drop(s, settings, DropDraft(text="下一則", min_tier="鐵粉", platforms=("discord",)))
    assert [r.fan_id for r in nxt.audience.recipients] == [fans[FAN2]]
    assert nxt.audience.left_out == {"dms_closed": [fans[FAN]]}


async def test_the_post_goes_to_the_tier_channel_once_and_its_reactions_are_counted(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "superfan"})
    drop_id = await new_drop(sessions, settings, now, sponsored=True)
    post_row = await row_of(sessions, f"drop:{drop_id}:post")
    assert post_row.recipient == str(DROPS_CHANNEL)
    clock = Clock(now)
    async with running(crm) as first:
        await drainer(first.client, dies_before_committing(sessions, post_row.id), clock).drain_once()
    clock.now = now + timedelta(minutes=5)
    async with running(crm) as second:
        again = drainer(second.client, session_transact(sessions), clock)
        await again.start()
        try:
            await eventually(lambda: _drop_rows_settled(sessions))
        finally:
            await again.close()
        (post,) = emu.sent_messages(DROPS_CHANNEL)
        assert post["content"] == f"#廣告\n{TEXT}\n{LINK}"
        assert len(posts_to(emu, DROPS_CHANNEL)) == 2, "sent again after the restart; Discord kept one"
        async with sessions() as s:
            drop = await s.get(Drop, drop_id)
            assert drop is not None and (drop.post_channel_id, drop.post_message_id) == (str(DROPS_CHANNEL),
                                                                                         post["id"])

        for user, emoji in ((FAN, "🎄"), (FAN, "❤️"), (FAN2, "🎄"), (second.client.user.id, "👍")):
            await emu.reaction_add(DROPS_CHANNEL, int(post["id"]), user, emoji)

        async def counted() -> Any:
            async with sessions() as s:
                found = await post_reactions(s, drop_id)
            return found if found is not None and found.reactions == 3 else None

        found = await eventually(counted)
    assert (found.reactions, found.fans) == (3, 2), "the bot's own reaction does not count"


async def test_a_dm_that_goes_through_clears_the_closed_mark(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    """The drop was created while FAN was reachable; an earlier drop then found their DMs closed, and
    they opened them again: this DM goes through, so later drops reach them again."""
    fans = await add_fans(sessions, settings, now, {FAN: "superfan"})
    drop_id = await new_drop(sessions, settings, now, platforms=("discord",))
    async with sessions.begin() as s:
        await note_dm_closed(s, str(FAN), now)
    async with running(crm) as handle:
        await drainer(handle.client, session_transact(sessions), Clock(now)).drain_once()
    assert len(dms_to(emu, FAN)) == 1
    assert await deliveries(sessions, drop_id) == {str(FAN): ("sent", None)}
    async with sessions() as s:
        nxt = await preview_drop(s, settings, DropDraft(text="下一則", min_tier="鐵粉", platforms=("discord",)))
    assert [r.fan_id for r in nxt.audience.recipients] == [fans[FAN]]


async def test_a_long_drop_is_sent_in_pieces_each_once(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    long_text = "\n".join(f"第 {n} 段：" + "好" * 60 for n in range(50))  # ~3,400 characters
    await new_drop(sessions, settings, now, text=long_text, image_url="https://example.com/a.png")
    clock = Clock(now)
    async with running(crm) as handle:
        await drainer(handle.client, session_transact(sessions), clock).drain_once()
        async with sessions.begin() as s:  # a crash after Discord took both pieces, before the commit: sent again
            await s.execute(Outbox.__table__.update().where(Outbox.kind == "drop_dm").values(status="sending"))
            await s.execute(Delivery.__table__.update().values(status="pending", sent_at=None))
        clock.now = now + timedelta(minutes=5)
        again = drainer(handle.client, session_transact(sessions), clock)
        await again.start()
        try:
            await eventually(lambda: _drop_rows_settled(sessions))
        finally:
            await again.close()
    pieces = dms_to(emu, FAN)
    assert len(pieces) == 2 and all(len(p["content"]) <= 2000 for p in pieces)
    assert "\n".join(p["content"] for p in pieces) == f"{long_text}\n{LINK}"
    assert [bool(p["embeds"]) for p in pieces] == [False, True], "the image comes with the last piece"
    assert len(posts_to(emu, emu.dm_channel_id(FAN))) == 4, "both pieces sent twice; Discord kept each once"


async def test_a_dm_that_went_out_is_not_retried_when_its_reach_mark_is_not_stored(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    drop_id = await new_drop(sessions, settings, now)

    async def storage_gone(*args: Any) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(drops, "note_dm_open", storage_gone)
    async with running(crm) as handle:
        await drainer(handle.client, session_transact(sessions), Clock(now)).drain_once()
    assert len(posts_to(emu, emu.dm_channel_id(FAN))) == 1
    assert await deliveries(sessions, drop_id) == {str(FAN): ("sent", None)}


async def test_a_scheduled_drop_goes_out_at_its_time_once_across_a_restart(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "superfan"})
    at = now + timedelta(hours=20)
    drop_id = await new_drop(sessions, settings, now, scheduled_at=at)
    clock = Clock(now + timedelta(hours=19, minutes=59))
    async with running(crm) as before:
        assert await drainer(before.client, session_transact(sessions), clock).drain_once() == 0
    assert dms_to(emu, FAN) == [] and emu.sent_messages(DROPS_CHANNEL) == []
    for _ in range(2):  # at its time, then a restarted process at the same time: once
        clock.now = at
        async with running(crm) as handle:
            await drainer(handle.client, session_transact(sessions), clock).drain_once()
    assert len(dms_to(emu, FAN)) == 1 and len(dms_to(emu, FAN2)) == 1 and len(emu.sent_messages(DROPS_CHANNEL)) == 1
    assert await deliveries(sessions, drop_id) == {str(FAN): ("sent", None), str(FAN2): ("sent", None)}


async def test_a_fan_who_opts_out_after_the_drop_was_made_gets_no_dm(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    fans = await add_fans(sessions, settings, now, {FAN: "superfan", FAN2: "superfan"})
    drop_id = await new_drop(sessions, settings, now)
    async with sessions.begin() as s:  # /optout between the drop's creation and its DMs
        await set_opt_out(s, fans[FAN2], True)
    async with running(crm) as bot:
        await drainer(bot.client, session_transact(sessions), Clock(now)).drain_once()
    assert len(dms_to(emu, FAN)) == 1
    assert dms_to(emu, FAN2) == []
    assert await deliveries(sessions, drop_id) == {str(FAN): ("sent", None), str(FAN2): ("cancelled", "fan opted out")}


async def test_a_long_rate_limit_puts_the_dm_back_for_later_instead_of_holding_a_sender(
        emu: DiscordEmulator, crm: Crm, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
        now: datetime) -> None:
    await add_fans(sessions, settings, now, {FAN: "superfan"})
    drop_id = await new_drop(sessions, settings, now)
    ten_minutes = {**RATE_LIMITED, "retry_after": 600.0}
    emu.fail_next("POST", f"/channels/{emu.dm_channel_id(FAN)}/messages", 429, json=ten_minutes)
    async with running(crm) as handle:
        # discord.py would sleep the ten minutes inside the send; the row waits in the outbox instead
        await asyncio.wait_for(drainer(handle.client, session_transact(sessions), Clock(now)).drain_once(), 60)
    assert dms_to(emu, FAN) == []
    assert await deliveries(sessions, drop_id) == {str(FAN): ("pending", "discord 429")}
    async with sessions() as s:
        (due,) = (await s.execute(select(Outbox.next_attempt_at).where(Outbox.kind == "drop_dm"))).scalars()
    assert due >= now + timedelta(seconds=600)
