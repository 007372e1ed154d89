"""A drop to 1,000 fans as Discord DMs, from create to all sent, against the Discord emulator's rate limits.

    python -m benchmarks.bench_drop_discord [--dms 1000] [--ineligible 200] [--global-per-second 50]
    (also the Discord part of ``python -m benchmarks.bench_drop``)

The production pieces as ``superfan run`` has them: the ``GroupWriter``, the real bot
(``start_discord``: gateway and REST, discord.py unmodified) and the Discord ``OutboxDrainer``
(started, woken by the writer's commit, its defaults: 50 rows a claim, 4 sends at a time) with
the real ``drop_dm`` sender, against the emulator on 127.0.0.1 (which echoes the bot's own DMs
back over the gateway, as Discord does) answering with Discord's rate limits and their headers:
50 requests a second per bot (the global limit, a 429 with ``global: true`` past it) and 5
messages per 5 s per channel (``X-RateLimit-*`` on every answer). ``--global-per-second
1000000`` lifts the global limit to show superfan's own pace.
discord.py waits on the bucket headers and sleeps out each 429's ``retry_after`` itself; a row it
gives up on is retried by the drainer after Discord's ``retry_after`` (at least 1 s, then its next
look). Each DM costs two requests (open the DM channel, send), so the global limit alone puts the
floor at 2 × N / 50 seconds: the figure is Discord's limits, not superfan's work.

Timed: the drop created as ``/drop`` creates it (one writer action: audience, drop, 1,000
deliveries, 1,000 outbox rows) until every delivery is ``sent``. Printed: that time, DMs per
second, requests and 429s by limit, and the emulator's count of DMs per fan (each eligible fan
exactly once, nobody else).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.config import Config, DatabaseConfig, DiscordConfig
from bot.discord_adapter.client import start_discord
from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.discord_adapter.outbox_sender import DiscordOutboxSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import writer_transact
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.writer import Action, GroupWriter
from crm.clock import utcnow
from crm.db import make_engine, make_sessionmaker
from crm.drops import CreatedDrop, DropDraft, create_drop
from crm.models import Delivery, Fan, Identity
from crm.schema import migrate
from crm.settings import CrmSettings

GUILD = 810_000_000_000_000_001
FIRST_USER = 820_000_000_000_000_000


@dataclass
class DiscordRun:
    create_s: float
    total_s: float
    created: CreatedDrop
    statuses: dict[str, int]


def user(n: int) -> int:
    return FIRST_USER + n


async def seed(sessions: async_sessionmaker[AsyncSession], dms: int, ineligible: int) -> None:
    """``dms`` server members at 鐵粉 and ``ineligible`` more below it, each with a Discord account."""
    now = utcnow()
    total = dms + ineligible
    async with sessions.begin() as s:
        await s.execute(insert(Fan), [
            {"display_name": f"member{n}", "name_key": f"member{n}", "score_base": 0.0, "opted_out": False,
             "tier": "superfan" if n < dms else "fan", "first_seen_at": now, "last_seen_at": now}
            for n in range(total)])
        ids = dict((await s.execute(select(Fan.name_key, Fan.id))).all())
        await s.execute(insert(Identity), [
            {"fan_id": ids[f"member{n}"], "platform": "discord", "external_id": str(user(n)), "created_at": now}
            for n in range(total)])


async def run_drop(args: argparse.Namespace, emu: DiscordEmulator, db: Path) -> DiscordRun:
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    settings = CrmSettings()
    config = Config(database=DatabaseConfig(url=url),
                    discord=DiscordConfig(enabled=True, guild_id=GUILD, api_base=emu.api_base,
                                          gateway_url=emu.gateway_url, ready_timeout_seconds=10.0))
    crm = Crm(config, engine, sessions, settings)
    try:
        await seed(sessions, args.dms, args.ineligible)
        writer = GroupWriter(sessions, settings)
        await writer.start()
        handle = await start_discord(crm, token="bench-token", guild_ready_timeout=0.05, writer=writer)
        drainer = OutboxDrainer("discord", writer_transact(writer), DiscordOutboxSender(lambda: handle.client))
        writer.on_outbox.append(drainer.wake)
        await drainer.start()
        try:
            created, create_s, total_s, statuses = await create_and_wait(writer, sessions, settings, "discord",
                                                                          poll_s=0.05)
        finally:
            await drainer.close()
            await handle.close()
            await writer.close()
    finally:
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
        await engine.dispose()
    return DiscordRun(create_s, total_s, created, statuses)


def report(args: argparse.Namespace, run: DiscordRun, emu: DiscordEmulator) -> bool:
    """Print the figures; True when every eligible fan got exactly one DM and nobody else any."""
    per_user = collections.Counter(int(m["channel_id"]) for m in emu.sent_messages())
    channel_of = {user(n): emu.world.dm_channel_for(user(n)).id for n in range(args.dms + args.ineligible)}
    eligible_once = all(per_user[channel_of[user(n)]] == 1 for n in range(args.dms))
    nobody_else = sum(per_user.values()) == args.dms
    requests = collections.Counter(
        "open DM" if r.path == "/users/@me/channels" else "send" if r.path.endswith("/messages") else "other"
        for r in emu.requests)
    limited = emu.rate_limits.counts
    sent = run.statuses.get("sent", 0)
    print(f"Discord drop to {args.dms:,} fans as DMs ({args.ineligible:,} more below the tier); emulator limits: "
          f"{args.global_per_second}/s global, 5 messages per 5 s per channel")
    print(f"  create → all sent: {run.total_s:.1f} s   (no target: Discord's limits bound it; at "
          f"{args.global_per_second}/s the global limit alone needs {2 * args.dms / args.global_per_second:.0f} s "
          f"for {2 * args.dms:,} requests)   {sent / run.total_s:.1f} DMs/s   (create transaction {run.create_s:.2f} s)")
    print("  (each DM is two requests, open the DM channel and send; 'send' and 'open DM' below count retries "
          "of requests answered 429 too)")
    print(f"  requests: {dict(requests)}; answered 429: {limited.total:,} "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(limited.limited.items())) or 'none'})")
    ok = eligible_once and nobody_else and sent == args.dms
    print(f"  deliveries: {run.statuses}; each eligible fan exactly one DM, nobody else: {'OK' if ok else 'FAIL'}")
    return ok


async def measure(args: argparse.Namespace, db: Path) -> bool:
    async with DiscordEmulator() as emu:  # the bot hears its own DMs back, as from Discord
        emu.add_guild(GUILD, "Bench Club")
        emu.add_channel(GUILD, name="general")
        emu.rate_limits.use_discords()
        if args.global_per_second != 50:
            emu.rate_limits.limit_globally(args.global_per_second)
        run = await run_drop(args, emu, db)
        return report(args, run, emu)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dms", type=int, default=1_000, help="eligible fans on Discord")
    parser.add_argument("--dms-ineligible", dest="ineligible", type=int, default=200,
                        help="Discord fans below the tier")
    parser.add_argument("--global-per-second", type=int, default=50, help="the emulator's global limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(args, Path(tmp) / "bench-drop-discord.db"))


if __name__ == "__main__":
    main()


async def create_and_wait(writer: GroupWriter, sessions: async_sessionmaker[AsyncSession], settings: CrmSettings,
                          platform: str, *, poll_s: float) -> tuple[CreatedDrop, float, float, dict[str, int]]:
    """Create the bench's drop on ``platform`` as ``/drop`` does (one writer action) and wait until no
    delivery is pending: the drop, seconds to create, seconds to all sent, deliveries per status."""
    draft = DropDraft("鐵粉限定：新歌搶先聽", "鐵粉", link="https://example.com/early", platforms=(platform,))

    async def create(session: AsyncSession, now: datetime) -> CreatedDrop:
        return await create_drop(session, settings, draft, now)

    started = time.perf_counter()
    (created,) = await writer.submit([Action("drop", create)])
    create_s = time.perf_counter() - started
    assert isinstance(created, CreatedDrop), created
    while True:
        async with sessions() as s:
            pending = (await s.execute(select(func.count()).where(Delivery.status == "pending"))).scalar_one()
        if not pending:
            break
        await asyncio.sleep(poll_s)
    total_s = time.perf_counter() - started
    async with sessions() as s:
        statuses = dict((await s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all())
    return created, create_s, total_s, statuses
