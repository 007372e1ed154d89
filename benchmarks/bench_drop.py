"""A drop to 10,000 fans on LINE, from create to all sent, against the LINE emulator.

    python -m benchmarks.bench_drop [--fans 10000] [--line-ineligible 2000] [--delay 0.0]
                                    [--dms 1000] [--dms-ineligible 200] [--no-discord]

The production pieces as ``superfan run`` has them: the ``GroupWriter``, the LINE
``OutboxDrainer`` (started, woken by the writer's commit) with the real ``LineOutboxSender`` and
``LineSender`` (line-bot-sdk) against the emulator on 127.0.0.1. The fans (10,000 at 鐵粉 on LINE,
plus fans below the tier and fans who blocked the account) are stored first, untimed. Timed: the
drop is created as ``/drop`` creates it, one writer action (audience, drop, 10,000 deliveries, 20
outbox rows in one transaction), and its commit wakes the drainer; the clock stops when every
delivery is ``sent``. ``--delay`` makes the emulator answer each request that many seconds late
(LINE's own latency, tens to hundreds of ms, is not in the default figure).

Printed next to the targets: time from create to all sent (≤ 2 s), multicast calls (exactly 20,
none over 500 ids), and the emulator's count of deliveries per fan (each eligible fan exactly
once, nobody else). ``superfan drop create`` from another process adds the drainer's poll (up
to ``poll_s`` = 2 s) before the first send, because its commit cannot wake another process.

Then the Discord part (:func:`discord_dms`): 1,000 DMs against the Discord emulator with
Discord's rate limits, measured by ``benchmarks/bench_drop_discord.py`` (about 40 s: bounded by
Discord's global limit, not by superfan; ``--no-discord`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from benchmarks.bench_drop_discord import add_arguments as add_discord_arguments
from benchmarks.bench_drop_discord import create_and_wait
from benchmarks.bench_drop_discord import measure as measure_discord
from bot.app import settle_heap
from bot.drop_views import DropViews
from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.sender import LineSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import writer_transact
from bot.sandbox.line_emulator import LineEmulator
from bot.writer import GroupWriter
from crm.db import make_engine, make_sessionmaker
from crm.drops import CreatedDrop
from crm.models import Fan, Identity, Interaction
from crm.schema import migrate
from crm.settings import CrmSettings

T0 = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
TARGET_S = 2.0


@dataclass
class LineRun:
    create_s: float
    total_s: float
    created: CreatedDrop
    statuses: dict[str, int]


def user(n: int) -> str:
    return f"U{n:032x}"


async def seed(sessions: async_sessionmaker[AsyncSession], fans: int, ineligible: int) -> None:
    """``fans`` at 鐵粉 on LINE; ``ineligible`` more, half below the tier and half who blocked."""
    total = fans + ineligible
    async with sessions.begin() as s:
        await s.execute(insert(Fan), [
            {"display_name": f"fan{n}", "name_key": f"fan{n}", "score_base": 0.0, "opted_out": False,
             "tier": "superfan" if n < fans or n % 2 else "fan", "first_seen_at": T0, "last_seen_at": T0}
            for n in range(total)])
        ids = dict((await s.execute(select(Fan.name_key, Fan.id))).all())
        await s.execute(insert(Identity), [
            {"fan_id": ids[f"fan{n}"], "platform": "line", "external_id": user(n), "created_at": T0}
            for n in range(total)])
        await s.execute(insert(Interaction), [
            {"fan_id": ids[f"fan{n}"], "platform": "line", "kind": "unfollow", "occurred_at": T0, "recorded_at": T0,
             "points": 0.0, "source_event_id": f"unfollow-{n}"} for n in range(fans, total) if n % 2])


async def line_drop(args: argparse.Namespace, emu: LineEmulator, db: Path) -> LineRun:
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    settings = CrmSettings()
    try:
        await seed(sessions, args.fans, args.line_ineligible)
        writer = GroupWriter(sessions, settings, clock=lambda: T0)
        await writer.start()
        sender = LineSender(emu.base_url, emu.access_token, monthly_quota=10 * args.fans, timezone="Asia/Taipei",
                            clock=lambda: T0)
        await sender.start()
        handler = LineOutboxSender(sender, clock=lambda: T0, drops=DropViews(sessions, settings.drops))
        drainer = OutboxDrainer("line", writer_transact(writer), handler, clock=lambda: T0)
        writer.on_outbox.append(drainer.wake)
        await drainer.start()
        settle_heap()  # as superfan run does once started: start-up objects out of the collector's view
        try:
            created, create_s, total_s, statuses = await create_and_wait(writer, sessions, settings, "line",
                                                                          poll_s=0.005)
        finally:
            await drainer.close()
            await sender.close()
            await writer.close()
    finally:
        await engine.dispose()
    return LineRun(create_s, total_s, created, statuses)


async def discord_dms(args: argparse.Namespace, db: Path) -> None:
    """The Discord part: 1,000 DMs against the Discord emulator with its rate-limit headers (the
    Discord side of #17 measures it in ``benchmarks/bench_drop_discord.py``)."""
    if args.no_discord:
        print("Discord: skipped (--no-discord); python -m benchmarks.bench_drop_discord runs it alone")
        return
    await measure_discord(args, db)


def report_line(args: argparse.Namespace, run: LineRun, emu: LineEmulator) -> bool:
    multicasts = [c for c in emu.calls if c.path == "/v2/bot/message/multicast"]
    sizes = [len(c.json["to"]) for c in multicasts]
    calls = collections.Counter(c.path.rsplit("/", 1)[-1] for c in emu.calls)
    received = emu.received()
    expected = {user(n) for n in range(args.fans)}
    once = set(received) == expected and set(received.values()) == {1}
    want_batches = -(-args.fans // 500)
    print(f"LINE drop to {args.fans:,} fans ({args.line_ineligible:,} more below the tier or blocked); "
          f"emulator answer delay {args.delay * 1000:.0f} ms")
    print(f"  create → all sent: {run.total_s:.2f} s   target ≤ {TARGET_S:.0f} s   "
          f"{'OK' if run.total_s <= TARGET_S else 'MISSED'}   (create transaction {run.create_s:.2f} s)")
    print(f"  multicast calls: {len(multicasts)}   target exactly {want_batches}   "
          f"{'OK' if len(multicasts) == want_batches else 'MISSED'}   (largest batch {max(sizes, default=0)}; "
          f"all API calls: {dict(calls)})")
    print(f"  deliveries: {run.statuses}; each eligible fan exactly once, nobody else: {'OK' if once else 'FAIL'}")
    return once and run.total_s <= TARGET_S and len(multicasts) == want_batches


async def measure(args: argparse.Namespace, folder: Path) -> None:
    async with LineEmulator(delay=args.delay, monthly_quota=10 * args.fans) as emu:
        run = await line_drop(args, emu, folder / "bench-drop-line.db")
        report_line(args, run, emu)
    await discord_dms(args, folder / "bench-drop-discord.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fans", type=int, default=10_000)
    parser.add_argument("--line-ineligible", type=int, default=2_000, help="LINE fans below the tier or blocked")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the LINE emulator takes per answer")
    parser.add_argument("--no-discord", action="store_true", help="skip the 1,000 Discord DMs (about 40 s)")
    add_discord_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
