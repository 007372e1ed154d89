"""The LINE outbox draining 1,000 messages against an emulator that answers 429s and 5xxs.

    python -m benchmarks.bench_outbox [--messages 1000] [--fans 250] [--share-429 0.1] [--share-5xx 0.03]

Half the rows answer a fan's command with a fresh reply token the emulator issued (kind
``answer``), half are staff relays pushed with the row's retry key (kind ``relay``), interleaved,
each fan's rows in order. The production pieces drain them as ``superfan run`` does: the
``OutboxDrainer`` (started, woken, committing through the ``GroupWriter``) with the real
``LineOutboxSender`` and ``LineSender`` (line-bot-sdk), against the LINE emulator on 127.0.0.1,
which answers a seeded share of requests 429 with ``Retry-After: 1`` and another share 500.

Time: the drainer, the LINE senders, the quota book and the writer read an injected clock (the
emulator's reply tokens keep its real 60 s). The clock stands still while anything is due or being
sent; when nothing is, it jumps to the earliest ``next_attempt_at`` (a Retry-After or a backoff)
and the drainer is woken. So no Retry-After is slept in real seconds: the wall time is the work.

Printed: messages/s and wall time, API calls by endpoint (reply, push), 429s and 5xx seen, rows
sent / failed, how far the injected clock moved, and, the point, the emulator's deliveries per
row: every row delivered exactly once (OK/FAIL). The issue sets no rate target; the exactly-once
check is the pass mark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.sender import LineSender
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import writer_transact
from bot.sandbox.line_emulator import LineEmulator
from bot.writer import GroupWriter
from crm import outbox
from crm.clock import as_utc
from crm.db import make_engine, make_sessionmaker
from crm.models import Outbox
from crm.schema import migrate
from crm.settings import CrmSettings

T0 = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
REPLY_TTL = timedelta(seconds=50)  # [line] reply_token_ttl_seconds' default


class SteppedClock:
    """Now, as far as the drainer knows; moved only by :func:`drain`."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Run:
    wall_s: float
    moved_s: float
    steps: int
    statuses: dict[str, int]


def user(n: int) -> str:
    return f"U{n:032x}"


async def queue(sessions: async_sessionmaker[AsyncSession], emu: LineEmulator, messages: int,
                fans: int) -> dict[str, str]:
    """The rows, in one transaction; returns each row's text → its fan."""
    texts: dict[str, str] = {}
    async with sessions.begin() as session:
        for n in range(messages):
            fan, text = user(n % fans), f"bench #{n}"
            texts[text] = fan
            if n % 2 == 0:
                await outbox.enqueue(session, platform="line", kind="answer", recipient=fan,
                                     payload={"text": text, "push": True}, now=T0,
                                     reply_token=emu.issue_reply_token(fan), reply_until=T0 + REPLY_TTL)
            else:
                await outbox.enqueue(session, platform="line", kind="relay", recipient=fan,
                                     payload={"text": text}, now=T0)
    return texts


async def state(sessions: async_sessionmaker[AsyncSession], now: datetime) -> tuple[int, int, datetime | None]:
    """Rows due or being sent now, rows still to send, and when the next waiting one is due."""
    o = Outbox
    async with sessions() as session:
        busy = (await session.execute(select(func.count()).where(
            (o.status == outbox.SENDING) | ((o.status == outbox.PENDING) & (o.next_attempt_at <= now))))).scalar_one()
        left, nxt = (await session.execute(select(func.count(), func.min(o.next_attempt_at))
                                           .where(o.status.in_((outbox.PENDING, outbox.SENDING))))).one()
    return int(busy), int(left), as_utc(nxt) if nxt is not None else None


async def drain(sessions: async_sessionmaker[AsyncSession], drainer: OutboxDrainer, clock: SteppedClock,
                look_s: float) -> int:
    """Let the running drainer work; when nothing is due, move the clock to the next due row.
    Looks every ``look_s`` real seconds; returns how many times the clock moved."""
    steps = 0
    drainer.wake()
    while True:
        await asyncio.sleep(look_s)
        busy, left, nxt = await state(sessions, clock.now)
        if not left:
            return steps
        if not busy and nxt is not None:
            clock.now, steps = max(clock.now, nxt), steps + 1
            drainer.wake()


async def measure(args: argparse.Namespace, db: Path) -> tuple[Run, LineEmulator, dict[str, str]]:
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    clock = SteppedClock()
    async with LineEmulator(reply_token_ttl=60.0) as emu:
        texts = await queue(sessions, emu, args.messages, args.fans)
        for seed, endpoint in enumerate(("message/reply", "message/push")):  # not the quota reads
            emu.fail_randomly(429, args.share_429, path_contains=endpoint, retry_after=1, seed=seed)
            emu.fail_randomly(500, args.share_5xx, path_contains=endpoint, seed=10 + seed)
        writer = GroupWriter(sessions, CrmSettings(), clock=clock)
        sender = LineSender(emu.base_url, emu.access_token, monthly_quota=10 * args.messages,
                            timezone="Asia/Taipei", clock=clock)
        await writer.start()
        await sender.start()
        drainer = OutboxDrainer("line", writer_transact(writer), LineOutboxSender(sender, clock=clock), clock=clock)
        try:
            t0 = time.perf_counter()
            await drainer.start()
            steps = await drain(sessions, drainer, clock, args.look)
            wall = time.perf_counter() - t0
        finally:
            await drainer.close()
            await sender.close()
            await writer.close()
        async with sessions() as session:
            statuses = dict((await session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))).all())
    await engine.dispose()
    return Run(wall, (clock.now - T0).total_seconds(), steps, statuses), emu, texts


def report(args: argparse.Namespace, run: Run, emu: LineEmulator, texts: dict[str, str]) -> None:
    calls = collections.Counter(c.path.rsplit("/", 1)[-1] for c in emu.calls)
    by_status = collections.Counter(c.status for c in emu.calls)
    fivexx = sum(n for status, n in by_status.items() if status >= 500)
    per_row = collections.Counter((d.to, m.get("text")) for d in emu.delivered for m in d.messages)
    vias = collections.Counter(d.via for d in emu.delivered)
    wrong = [text for text, fan in texts.items() if per_row[(fan, text)] != 1]
    extra = sum(per_row.values()) - sum(per_row[(fan, text)] for text, fan in texts.items())
    sent, failed = run.statuses.get(outbox.SENT, 0), run.statuses.get(outbox.FAILED, 0)
    print(f"{args.messages:,} LINE messages to {args.fans} fans (half reply tokens, half pushes); "
          f"emulator faults: {args.share_429:.0%} 429 (Retry-After 1 s), {args.share_5xx:.0%} 500")
    print(f"drained in {run.wall_s:.2f} s wall: {sent / run.wall_s:,.0f} messages/s "
          f"(injected clock moved {run.moved_s:.0f} s in {run.steps} steps through Retry-After and backoff;"
          f" up to {args.look * 1000:.0f} ms of wall time per step is the bench looking)")
    print(f"API calls: {sum(calls.values()):,} (reply {calls['reply']:,}, push {calls['push']:,}); "
          f"429s {by_status[429]:,}, 5xx {fivexx:,}, 409 {by_status[409]:,}")
    print(f"rows: sent {sent:,}, failed {failed:,}, other {args.messages - sent - failed:,}; "
          f"delivered by reply {vias['reply']:,}, by push {vias['push']:,}")
    ok = not wrong and not extra and sent == args.messages
    print(f"every row delivered exactly once: {'OK' if ok else 'FAIL'}"
          + ("" if ok else f" ({len(wrong)} rows not delivered exactly once, {extra} stray deliveries)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--fans", type=int, default=250)
    parser.add_argument("--share-429", type=float, default=0.10)
    parser.add_argument("--share-5xx", type=float, default=0.03)
    parser.add_argument("--look", type=float, default=0.02, help="seconds between the bench's looks at the outbox")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, emu, texts = asyncio.run(measure(args, Path(tmp) / "bench-outbox.db"))
    report(args, run, emu, texts)


if __name__ == "__main__":
    main()
