"""``superfan rescore`` at creator scale: time and peak RSS against a raw streamed sqlite3 read of the
same rows, and how long the live writer waits for SQLite's write lock meanwhile.

    python -m benchmarks.bench_rescore [--db PATH] [--rows 3000000] [--fans 100000]

Runs on a copy of ``--db`` (a superfan SQLite database, e.g. the creator-scale one from
``benchmarks.scale_db``), or on a generated database of ``--fans`` fans and ``--rows`` interactions
(``benchmarks.scale_db``'s generator, cached). Each measurement runs in its own process, so its
peak RSS is its own:

* reference: stdlib sqlite3 reading the rows rescore reads, in its order, one at a time;
* rescore: ``crm.rescore.rescore`` with the message weight changed (so most rows get new points),
  while a second process acts as the live writer: every 20 ms it takes the write lock
  (``BEGIN IMMEDIATE``, the 10 s busy timeout superfan uses), writes a row and commits, timing
  how long it waited for the lock.

Targets (issue #19): rescore ≤ 3 × the reference's time, ≤ 200 MB peak RSS, and the writer never
waits more than about a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

TARGET_RATIO = 3.0
TARGET_RSS_MB = 200
TARGET_WAIT_MS = 1000
PING_EVERY_S = 0.02
QUERY = ("SELECT id, fan_id, kind, occurred_at, amount_cents, currency, points FROM interactions"
         " ORDER BY fan_id, occurred_at, id")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds this process used (every thread): on a shared machine, wall time also counts waiting."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_raw(db: Path) -> dict[str, float]:
    conn = sqlite3.connect(db)
    t0 = time.perf_counter()
    rows = 0
    for _row in conn.execute(QUERY):
        rows += 1
    seconds = time.perf_counter() - t0
    conn.close()
    return {"seconds": seconds, "rows": rows, "rss_mb": _rss_mb(), "cpu_s": _cpu_s()}


def phase_rescore(db: Path, now: datetime) -> dict[str, float]:
    from crm.db import make_engine, make_sessionmaker
    from crm.rescore import rescore
    from crm.settings import CrmSettings

    async def go() -> dict[str, float]:
        engine = make_engine(f"sqlite+aiosqlite:///{db}")
        settings = CrmSettings()
        scoring = settings.scoring
        changed = replace(settings, scoring=replace(scoring, weights={**scoring.weights, "message": 0.12}))
        t0 = time.perf_counter()
        async with make_sessionmaker(engine)() as session:
            result = await rescore(session, changed, now)
        seconds = time.perf_counter() - t0
        await engine.dispose()
        return {"seconds": seconds, "rows": result.interactions, "fans": result.fans,
                "changed_points": result.changed_points, "tier_moves": len(result.tier_moves),
                "batches": result.batches, "reread": result.reread, "rss_mb": _rss_mb(), "cpu_s": _cpu_s()}

    return asyncio.run(go())


def phase_ping(db: Path, stop: Path) -> dict[str, float]:
    """The live writer: a row every PING_EVERY_S, timing each wait for the write lock."""
    conn = sqlite3.connect(db, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_ping (id INTEGER PRIMARY KEY, waited REAL)")
    waits: list[float] = []
    commits: list[float] = []
    locked = 0
    while not stop.exists():
        t0 = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # "database is locked": a webhook would have answered 503
            locked += 1
            waits.append((time.perf_counter() - t0) * 1000)
            continue
        waited = time.perf_counter() - t0
        conn.execute("INSERT INTO bench_ping (waited) VALUES (?)", (waited,))
        t1 = time.perf_counter()
        conn.execute("COMMIT")  # with SQLite's default autocheckpoint, this may copy the WAL back
        commits.append((time.perf_counter() - t1) * 1000)
        waits.append(waited * 1000)
        time.sleep(PING_EVERY_S)
    conn.close()
    waits.sort()
    return {"writes": len(waits), "max_ms": waits[-1] if waits else 0.0,
            "p99_ms": waits[int(len(waits) * 0.99)] if waits else 0.0,
            "median_ms": statistics.median(waits) if waits else 0.0, "over_1s": sum(w > 1000 for w in waits),
            "commit_max_ms": max(commits, default=0.0), "commits_over_100ms": sum(c > 100 for c in commits),
            "locked": locked}


def _child(phase: str, db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.bench_rescore", "--phase", phase, "--db", str(db),
                             *extra], stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a benchmark process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy (WAL included) through SQLite's backup API."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    source.close()
    target.close()


def _now_of(db: Path) -> datetime:
    """Evaluate at the newest interaction (a generated database's 'today')."""
    conn = sqlite3.connect(db)
    (last,) = conn.execute("SELECT max(occurred_at) FROM interactions").fetchone()
    conn.close()
    return datetime.fromisoformat(last).replace(tzinfo=UTC) if last else datetime.now(UTC)


def _generated(fans: int, rows: int) -> Path:
    from benchmarks.scale_db import Scale, ensure_db

    heavy = max(1, fans // 330)
    return ensure_db(Scale(fans, rows, heavy, (3_000, 15_000), min(5_000, fans // 20)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="a superfan SQLite database (copied; the copy is rescored)")
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--fans", type=int, default=100_000)
    parser.add_argument("--phase", choices=("raw", "rescore", "ping"), help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "raw":
            outcome = phase_raw(args.db)
        elif args.phase == "rescore":
            outcome = phase_rescore(args.db, datetime.fromisoformat(args.now))
        else:
            outcome = phase_ping(args.db, args.stop)
        print(json.dumps(outcome))
        return

    source = args.db or _generated(args.fans, args.rows)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SUPERFAN_BENCH_TMP")) as tmp:
        db = Path(tmp) / "rescore.db"
        _copy(source, db)
        now = _now_of(db)
        raw = _result(_child("raw", db))
        stop = Path(tmp) / "stop"
        ping = _child("ping", db, "--stop", str(stop))
        time.sleep(0.5)
        ours = _result(_child("rescore", db, "--now", now.isoformat()))
        stop.touch()
        writer = _result(ping)
        raw_after = _result(_child("raw", db))
    reference = min(raw["seconds"], raw_after["seconds"])
    ratio = ours["seconds"] / reference

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSES TARGET"

    print(f"database: {source} ({raw['rows']:,.0f} interactions, {ours['fans']:,.0f} fans with rows)")
    print(f"reference: raw sqlite3 streamed read : {reference:6.2f} s (runs {raw['seconds']:.2f}, "
          f"{raw_after['seconds']:.2f}; CPU {raw['cpu_s']:.1f}, {raw_after['cpu_s']:.1f} s), "
          f"peak RSS {raw['rss_mb']:.0f} MB")
    print(f"rescore (message weight changed)    : {ours['seconds']:6.2f} s (CPU {ours['cpu_s']:.1f} s), "
          f"peak RSS {ours['rss_mb']:.0f} MB; "
          f"{ours['batches']:,.0f} batches ({ours['reread']:,.0f} read again), "
          f"{ours['changed_points']:,.0f} points changed, {ours['tier_moves']:,.0f} tier moves")
    print(f"  time ratio  : {ratio:.2f} x reference (target <= {TARGET_RATIO}) {verdict(ratio <= TARGET_RATIO)}")
    print(f"  peak RSS    : {ours['rss_mb']:.0f} MB (target <= {TARGET_RSS_MB}) "
          f"{verdict(ours['rss_mb'] <= TARGET_RSS_MB)}")
    print(f"live writer meanwhile: {writer['writes']:,.0f} commits, wait for the lock median "
          f"{writer['median_ms']:.1f} ms, p99 {writer['p99_ms']:.0f} ms, longest {writer['max_ms']:.0f} ms "
          f"(target <= {TARGET_WAIT_MS}) {verdict(writer['max_ms'] <= TARGET_WAIT_MS)}; "
          f"{writer['over_1s']:,.0f} waits over 1 s, {writer['locked']:,.0f} gave up (database is locked); "
          f"its own commits: longest {writer['commit_max_ms']:.0f} ms, {writer['commits_over_100ms']:,.0f} over 100 ms")


if __name__ == "__main__":
    main()
