"""Play a :class:`~bot.demo.traffic.Traffic` into the running app, the way LINE, Discord, a shop
and the creator's staff would, and wait until it is stored.

Everything enters through the real adapters: signed LINE webhooks and purchase orders on the web
app, gateway dispatches and slash commands from the Discord emulator, staff answers typed in the
inbox threads the bot opened. What is stored is read back from the database (the app's own
writer commits it); nothing here writes fan data itself. The drop is created through
``crm/drops.py`` as ``superfan drop`` creates it, and sent by the app's outbox.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from sqlalchemy import func, select

from bot.app import Crm
from bot.demo.sandbox import Sandbox
from bot.demo.show import DropResult
from bot.demo.traffic import Traffic
from bot.purchase_hook import SIGNATURE_HEADER as PURCHASE_SIGNATURE
from bot.purchase_hook import sign as sign_purchase
from crm.clock import utcnow
from crm.drops import DropDraft, create_drop
from crm.models import Conversation, Delivery, Drop, Interaction

#: Events per LINE webhook request (LINE batches events the same way) and requests in flight.
LINE_BATCH = 100
CONCURRENT_REQUESTS = 4
#: Discord messages dispatched ahead of what is stored, at most (keeps the bot's queue short).
DISCORD_WINDOW = 3000
POLL_S = 0.1

Progress = Callable[[str, int, int], None]
T = TypeVar("T")
Item = TypeVar("Item")


class DemoFailed(Exception):
    """The app refused or lost something the demo sent (the message says what; no fan text)."""

    message_is_safe = True


@dataclass(frozen=True)
class Answered:
    """Simulated staff at the inbox: conversations answered in their threads, and left waiting."""

    answered: int
    waiting: int


async def until(check: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float,
                what: str) -> T:
    """Poll ``check`` until ``done(value)``; :class:`DemoFailed` naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if done(value):
            return value
        if loop.time() > deadline:
            raise DemoFailed(f"{what}: not done after {timeout:.0f} s (last {value!r})")
        await asyncio.sleep(POLL_S)


class Driver:
    """Sends one community's traffic to the app at ``web`` (its base URL) inside ``box``."""

    def __init__(self, box: Sandbox, web: str, crm: Crm, http: aiohttp.ClientSession, progress: Progress) -> None:
        self.box = box
        self.web = web.rstrip("/")
        self.crm = crm
        self.http = http
        self.progress = progress
        self._line_secret = box.config.secret(box.config.line.channel_secret_env).encode()

    # --- LINE ------------------------------------------------------------------------------------
    async def line(self, traffic: Traffic) -> None:
        """Every LINE event, ``LINE_BATCH`` to a signed webhook; 200 means committed."""
        for user_id, name in traffic.line_names.items():
            self.box.line.add_profile(user_id, name)
        events = [dict(e) for e in traffic.line_events]
        for i in traffic.line_replies:
            events[i]["replyToken"] = self.box.line.issue_reply_token(events[i]["source"]["userId"])
        batches = [events[i : i + LINE_BATCH] for i in range(0, len(events), LINE_BATCH)]
        done = 0

        async def post(batch: list[dict[str, Any]]) -> None:
            nonlocal done
            body = json.dumps({"destination": "U" + "0" * 32, "events": batch}, ensure_ascii=False).encode()
            signature = base64.b64encode(hmac.new(self._line_secret, body, hashlib.sha256).digest()).decode()
            await self._post(self.box.config.line.webhook_path, body, {"X-Line-Signature": signature}, "LINE webhook")
            done += len(batch)
            self.progress("line", done, len(events))

        self.progress("line", 0, len(events))
        await _bounded(post, batches)

    # --- purchases -------------------------------------------------------------------------------
    async def purchases(self, traffic: Traffic) -> None:
        """Every order, signed as a shop signs it."""
        secret, done, total = self.box.purchase_secret, 0, len(traffic.purchases)

        async def post(order: dict[str, Any]) -> None:
            nonlocal done
            body = json.dumps(order, ensure_ascii=False).encode()
            await self._post(self.box.config.web.purchase_path, body,
                             {PURCHASE_SIGNATURE: "sha256=" + sign_purchase(secret, body)}, "purchase hook")
            done += 1
            self.progress("purchases", done, total)

        self.progress("purchases", 0, total)
        await _bounded(post, traffic.purchases)

    async def _post(self, path: str, body: bytes, headers: dict[str, str], what: str) -> None:
        async with self.http.post(self.web + path, data=body,
                                  headers={"Content-Type": "application/json", **headers}) as response:
            if response.status != 200:
                raise DemoFailed(f"{what} answered {response.status}: {(await response.text())[:200]}")

    # --- Discord ---------------------------------------------------------------------------------
    async def discord_messages(self, traffic: Traffic) -> None:
        """Channel messages through the gateway; returns once all of them are stored."""
        emu, world = self.box.discord, self.box.world
        messages, total = traffic.discord_messages, len(traffic.discord_messages)
        self.progress("discord", 0, total)
        for n, (author, message_id, text) in enumerate(messages, 1):
            await emu.message_create(world.general_id, author, text, message_id=message_id, guild_id=world.guild_id)
            if n % 500 == 0:
                stored = await until(lambda: self._count("discord", ("message",)),
                                     _caught_up(n), timeout=60, what="Discord messages stored")
                self.progress("discord", stored, total)
        await until(lambda: self._count("discord", ("message",)), lambda s: s >= total, timeout=60,
                    what="Discord messages stored")
        self.progress("discord", total, total)

    async def discord_recent(self, traffic: Traffic) -> None:
        """The last days' DMs and reactions through the gateway, ``/checkin`` as slash commands;
        returns once all of it is stored (after :meth:`discord_messages`: reactions name messages)."""
        emu, world = self.box.discord, self.box.world
        for author, message_id, text in traffic.discord_dms:
            await emu.dm_message(author, text, message_id=message_id)
        for user, message_id, emoji in traffic.discord_reactions:
            await emu.reaction_add(world.general_id, message_id, user, emoji)
        locale = self.box.config.creator.locale
        handles = [await emu.invoke_slash("checkin", user_id=user, channel_id=world.general_id, locale=locale)
                   for user in traffic.discord_checkins]
        await asyncio.gather(*(h.response(30) for h in handles))
        reactions = len(set(traffic.discord_reactions))
        await until(lambda: self._count("discord", ("dm_in",)), lambda s: s >= len(traffic.discord_dms),
                    timeout=30, what="Discord DMs stored")
        await until(lambda: self._count("discord", ("reaction",)), lambda s: s >= reactions, timeout=30,
                    what="Discord reactions stored")

    async def _count(self, platform: str, kinds: Sequence[str]) -> int:
        async with self.crm.read() as session:
            return int((await session.execute(select(func.count()).select_from(Interaction).where(
                Interaction.platform == platform, Interaction.kind.in_(kinds)))).scalar_one())

    # --- staff -----------------------------------------------------------------------------------
    async def answer_inbox(self, texts: Sequence[str], *, share: float = 0.7) -> Answered:
        """Staff answer ``share`` of the waiting conversations in their inbox threads (the bot
        relays each answer to the fan's platform). The rest keep waiting, spread over the two
        days from the oldest on, so the ones older than the reply promise are overdue."""
        emu, world = self.box.discord, self.box.world

        async def waiting() -> list[tuple[int, str | None]]:
            async with self.crm.read() as session:
                rows = await session.execute(select(Conversation.id, Conversation.thread_ref).where(
                    Conversation.status == "waiting").order_by(Conversation.waiting_since, Conversation.id))
                return [(cid, ref) for cid, ref in rows]

        def threads_ready(rows: list[tuple[int, str | None]]) -> bool:  # the card and the DM are posted
            return all(ref is not None and len(emu.sent_messages(int(ref))) >= 2 for _, ref in rows)

        rows = await until(waiting, threads_ready, timeout=30, what="inbox threads opened")
        left = round(len(rows) * (1 - share))
        keep_waiting = {round(k * len(rows) / left) for k in range(left)} if left else set()
        chosen = [row for n, row in enumerate(rows) if n not in keep_waiting]
        self.progress("inbox", 0, len(chosen))
        for n, (_, ref) in enumerate(chosen):
            assert ref is not None
            await emu.message_create(int(ref), world.staff_id, texts[n % len(texts)], guild_id=world.guild_id)
        ids = {cid for cid, _ in chosen}
        await until(waiting, lambda now_waiting: not ids & {cid for cid, _ in now_waiting}, timeout=30,
                    what="staff answers recorded")
        self.progress("inbox", len(chosen), len(chosen))
        return Answered(len(chosen), len(rows) - len(chosen))


    # --- the drop --------------------------------------------------------------------------------
    async def send_drop(self, text: str) -> DropResult:
        """One drop to the true-fan tier and above on both platforms, created as ``superfan drop``
        creates it and sent by the app's outbox; returns once every delivery is settled, with what
        the emulators received."""
        config, crm = self.box.config, self.crm
        locale = config.creator.locale
        quota = config.line.monthly_quota
        async with crm.sessions.begin() as session:
            created = await create_drop(session, crm.settings, DropDraft(text=text, min_tier=config.tiers.true_fan_tier,
                                                                         created_by="superfan demo"),
                                        utcnow(), quota_left=max(0, quota - self.box.line.total_usage), quota=quota)
        audience = created.preview.audience
        total = len(audience.recipients)

        async def settled() -> list[tuple[str, str]]:
            async with crm.read() as session:
                rows = await session.execute(select(Delivery.platform, Delivery.status).where(
                    Delivery.drop_id == created.id))
                statuses = [(platform, status) for platform, status in rows]
            self.progress("drop", sum(s != "pending" for _, s in statuses), total)
            return statuses

        statuses = await until(settled, lambda rows: all(s != "pending" for _, s in rows), timeout=60,
                               what="drop deliveries")
        async with crm.read() as session:
            drop = await session.get(Drop, created.id)
            quota_used = int(drop.quota_used or 0) if drop is not None else 0
        return DropResult(
            drop_id=created.id, tier=crm.settings.tiers.name(created.preview.min_tier, locale),
            eligible=len({r.fan_id for r in audience.recipients}) + sum(len(v) for v in audience.left_out.values()),
            recipients=dict(Counter(r.platform for r in audience.recipients)),
            sent=dict(Counter(p for p, s in statuses if s == "sent")),
            failed=dict(Counter(p for p, s in statuses if s == "failed")),
            left_out={reason: len(ids) for reason, ids in audience.left_out.items()},
            line_received=frozenset(d.to for d in self.box.line.delivered if d.via == "multicast"),
            discord_received=self._dm_recipients(text), quota_used=quota_used, quota=quota)

    def _dm_recipients(self, text: str) -> frozenset[str]:
        """Discord users the emulator got a DM carrying ``text`` for (whoever they are)."""
        emu = self.box.discord
        return frozenset(str(user) for channel in emu.world.dm_channels.values() for user in channel.recipient_ids
                         if any(text in json.dumps(m, ensure_ascii=False) for m in emu.sent_messages(channel.id)))


def _caught_up(sent: int) -> Callable[[int], bool]:
    """Whether at most ``DISCORD_WINDOW`` of ``sent`` messages are still to be stored."""
    return lambda stored: sent - stored <= DISCORD_WINDOW


async def _bounded(send: Callable[[Item], Awaitable[None]], items: Sequence[Item], limit: int = CONCURRENT_REQUESTS) -> None:
    """``send`` each item with at most ``limit`` in flight; the first failure stops the rest."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await send(item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(limit)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
