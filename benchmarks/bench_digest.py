"""The daily digest on a large community: ``build_digest`` for 100k fans and 5,000 open conversations.

    python -m benchmarks.bench_digest [--fans 100000] [--open 5000] [--interactions 1000000] [--repeat 7]

Target (issue #16): ≤ 250 ms on SQLite. The database is built set-based with stdlib sqlite3 on the
migrated schema and kept in the temp directory between runs (``--rebuild`` makes it again).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm.db import make_engine, make_read_sessionmaker
from crm.digest import build_digest
from crm.schema import migrate
from crm.settings import CrmSettings

TARGET_MS = 250.0
NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 09:00 in Taipei
TIERS = ["passerby"] * 70 + ["fan"] * 20 + ["superfan"] * 8 + ["close_friend"] * 2
TEXTS = ["謝謝分享今天的影片！", "好喜歡這首歌", "直播好好看", "周邊什麼時候到？", "明天見"]
#: About one message in a hundred asks after the creator.
CARE_TEXTS = ["最近好嗎？好久沒發文了", "are you ok? miss your posts"]


def _t(at: datetime) -> str:
    """SQLite's stored form of a UTC time (naive, as the models write it)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _fans(rng: random.Random, count: int) -> Iterator[tuple[object, ...]]:
    """Fans first seen over three years; ``last_seen_at`` is set from their interactions afterwards."""
    for n in range(1, count + 1):
        first = NOW - timedelta(seconds=rng.randrange(60 * 86400, 3 * 365 * 86400))
        yield (n, f"粉絲{n}", f"粉絲{n}", None, 0, rng.random() * 100, rng.choice(TIERS), _t(first), _t(first))


def _interactions(rng: random.Random, fans: int, count: int) -> Iterator[tuple[object, ...]]:
    """Two months of activity in arrival order (ids grow with time, as live ingest writes them),
    most of it from a core of active fans, as in a real community."""
    stamps = sorted(rng.randrange(60 * 86400) for _ in range(count))
    for n, ago in enumerate(reversed(stamps), start=1):
        at = NOW - timedelta(seconds=ago)
        kind = rng.choice(("message", "message", "reaction", "dm_in", "share"))
        text = None
        if kind in ("message", "dm_in") and rng.random() < 0.5:
            text = rng.choice(CARE_TEXTS if rng.random() < 0.01 else TEXTS)
        fan = 1 + int(fans * rng.random() ** 3)
        yield (n, fan, "line", kind, _t(at), _t(at), 0.1, text, f"bench-{n}")


def _conversations(rng: random.Random, fans: int, open_count: int) -> Iterator[tuple[object, ...]]:
    """``open_count`` waiting conversations, and as many answered ones of the last week."""
    people = rng.sample(range(1, fans + 1), 2 * open_count)
    for n, fan in enumerate(people, start=1):
        since = NOW - timedelta(seconds=rng.randrange(7 * 86400))
        due = since + timedelta(hours=24)
        if n <= open_count:
            yield (n, fan, "line", "waiting", _t(since), _t(since), _t(due), None, None, _t(since))
        else:
            answered = since + timedelta(seconds=rng.randrange(40 * 3600))
            yield (n, fan, "line", "answered", _t(since), None, None, _t(answered),
                   (answered - since).total_seconds(), _t(since))


def build(path: Path, fans: int, open_count: int, interactions: int) -> None:
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    rng = random.Random(16)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany("INSERT INTO fans (id, display_name, name_key, locale, opted_out, score_base, tier,"
                         " first_seen_at, last_seen_at) VALUES (?,?,?,?,?,?,?,?,?)", _fans(rng, fans))
        conn.executemany("INSERT INTO interactions (id, fan_id, platform, kind, occurred_at, recorded_at, points,"
                         " summary, source_event_id) VALUES (?,?,?,?,?,?,?,?,?)",
                         _interactions(rng, fans, interactions))
        conn.execute("UPDATE fans SET last_seen_at = (SELECT max(occurred_at) FROM interactions"
                     " WHERE fan_id = fans.id) WHERE id IN (SELECT DISTINCT fan_id FROM interactions)")
        convs = list(_conversations(rng, fans, open_count))
        conn.executemany("INSERT INTO conversations (id, fan_id, platform, status, opened_at, waiting_since, due_at,"
                         " answered_at, first_response_seconds, last_inbound_at) VALUES (?,?,?,?,?,?,?,?,?,?)", convs)
        conn.executemany(
            "INSERT INTO conversation_waits (conversation_id, fan_id, started_at, due_at, ended_at, ended_by,"
            " response_seconds) VALUES (?,?,?,?,?,?,?)",
            [(c[0], c[1], c[4], _t(datetime.fromisoformat(c[4]).replace(tzinfo=UTC) + timedelta(hours=24)), c[7],
              "reply" if c[7] else None, c[8]) for c in convs])
        conn.executemany("INSERT INTO tier_changes (fan_id, from_tier, to_tier, reason, at) VALUES (?,?,?,?,?)",
                         [(rng.randrange(1, fans + 1), "fan", "superfan", "score",
                           _t(NOW - timedelta(seconds=rng.randrange(2 * 86400)))) for _ in range(2000)])
        conn.execute("INSERT INTO job_runs (job, run_key, started_at) VALUES ('digest', '2026-11-21', ?)",
                     (_t(NOW - timedelta(days=1)),))
    conn.execute("ANALYZE")
    conn.close()


async def measure(path: Path, repeat: int) -> tuple[list[float], list[float], dict[str, int]]:
    """Wall and CPU milliseconds of each run (CPU time counts SQLite's thread too, and is what to
    compare on a shared machine, where the wall clock also measures the neighbours)."""
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    readers = make_read_sessionmaker(engine)
    settings = CrmSettings()
    times, cpu = [], []
    try:
        for _ in range(repeat + 1):  # the first run warms the page cache and SQLAlchemy's statement cache
            t0, c0 = time.perf_counter(), time.process_time()
            async with readers() as session:
                digest = await build_digest(session, settings, NOW)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    finally:
        await engine.dispose()
    return times[1:], cpu[1:], digest.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fans", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    path = Path(tempfile.gettempdir()) / f"superfan-bench-digest-{args.fans}-{args.open}-{args.interactions}.db"
    if args.rebuild or not path.exists():
        for stale in path.parent.glob(path.name + "*"):
            stale.unlink()
        t0 = time.perf_counter()
        build(path, args.fans, args.open, args.interactions)
        print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    else:
        asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))  # a database kept from an older schema
    times, cpu, counts = asyncio.run(measure(path, args.repeat))
    median = statistics.median(times)
    print(f"fans {args.fans:,}, open conversations {args.open:,}, interactions {args.interactions:,}")
    print(f"digest counts: {counts}")
    print(f"build_digest: median {median:.1f} ms (min {min(times):.1f}, max {max(times):.1f}) over {len(times)} runs"
          f"   target ≤ {TARGET_MS:.0f} ms   {'OK' if median <= TARGET_MS else 'MISSED'}")
    print(f"build_digest CPU time: median {statistics.median(cpu):.1f} ms (min {min(cpu):.1f}, max {max(cpu):.1f});"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
