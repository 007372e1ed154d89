"""``superfan import`` of a large file: speed against raw stdlib sqlite3 ``executemany`` of the same
rows, and peak RSS.

    python -m benchmarks.bench_import [--rows 200000] [--fans 10000] [--repeat 3] [--db PATH]

A CSV file in the import format is written once (``--rows`` rows over ``--fans`` fans). Each round,
each side runs in its own process (so its peak RSS is its own) on fresh files:

* raw: stdlib sqlite3 reads the CSV with ``csv.reader`` and ``executemany``-inserts the rows
  into a table with the ``(platform, event id)`` unique key, in one transaction;
* superfan: :func:`bot.importer.import_file` as ``superfan import`` runs it (one transaction,
  chunk by chunk) into a migrated superfan database, or into a copy of ``--db``.

Targets: superfan ≥ 0.25 × raw in rows/s (issue #2), ≤ 500 MB peak RSS at 3M rows (issue #19).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGET_RATIO = 0.25
TARGET_RSS_MB = 500
KINDS = ["message"] * 6 + ["reaction"] * 3 + ["share", "checkin", "purchase", "dm_in"]
HEADER = ("platform", "external_id", "display_name", "kind", "occurred_at", "amount", "currency", "event_id", "text")


def write_csv(path: Path, rows: int, fans: int, seed: int = 7) -> None:
    """``rows`` rows in the import format, in no particular order (as a shop's export would be)."""
    rng = random.Random(seed)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for n in range(rows):
            fan = rng.randrange(fans)
            kind = rng.choice(KINDS)
            platform = "line" if fan % 2 else "discord"
            ext = f"U{fan:032x}" if platform == "line" else str(400000000000000000 + fan)
            purchase = kind == "purchase"
            at = start + timedelta(seconds=rng.randrange(180 * 86400))
            out.writerow((platform, ext, f"粉絲{fan}", kind, at.isoformat(), rng.randrange(100, 3000) if purchase else "",
                          "TWD" if purchase else "", f"bench-{n}", "謝謝分享今天的影片！" if kind == "message" else ""))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_raw(csv_path: Path, db: Path) -> dict[str, float]:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE interactions (id INTEGER PRIMARY KEY, platform TEXT, external_id TEXT, kind TEXT,"
                 " occurred_at TEXT, amount INTEGER, currency TEXT, summary TEXT, source_event_id TEXT,"
                 " UNIQUE (platform, source_event_id))")
    t0, c0 = time.perf_counter(), time.process_time()
    with csv_path.open(encoding="utf-8", newline="") as fh, conn:
        reader = csv.reader(fh)
        next(reader)
        rows = ((p, e, k, at, int(a) if a else None, c or None, x or None, ev) for p, e, _n, k, at, a, c, ev, x in reader)
        conn.executemany("INSERT INTO interactions (platform, external_id, kind, occurred_at, amount, currency,"
                         " summary, source_event_id) VALUES (?,?,?,?,?,?,?,?)", rows)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    (count,) = conn.execute("SELECT count(*) FROM interactions").fetchone()
    conn.close()
    return {"seconds": seconds, "cpu": cpu, "rows": count, "rss_mb": _rss_mb()}


def phase_superfan(csv_path: Path, db: Path, fresh: bool) -> dict[str, float]:
    from bot.importer import import_file
    from crm.db import make_engine, make_sessionmaker
    from crm.schema import migrate
    from crm.settings import CrmSettings

    async def go() -> dict[str, float]:
        url = f"sqlite+aiosqlite:///{db}"
        if fresh:
            await migrate(url)
        engine = make_engine(url)
        t0, c0 = time.perf_counter(), time.process_time()  # CPU of every thread (SQLite's too)
        async with make_sessionmaker(engine).begin() as session:
            result = await import_file(session, csv_path, CrmSettings(), datetime(2026, 11, 1, tzinfo=UTC))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        await engine.dispose()
        return {"seconds": seconds, "cpu": cpu, "rows": result.stored, "duplicates": result.duplicates,
                "new_fans": result.new_fans, "rss_mb": _rss_mb()}

    return asyncio.run(go())


def _run(*args: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_import", *args], stdout=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"a benchmark process failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--fans", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of raw then superfan, each on fresh files; medians are compared")
    parser.add_argument("--db", type=Path, help="import into a copy of this superfan database instead of a new one")
    parser.add_argument("--phase", choices=("raw", "superfan"), help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        outcome = (phase_raw(args.csv, args.target) if args.phase == "raw"
                   else phase_superfan(args.csv, args.target, args.fresh))
        print(json.dumps(outcome))
        return

    raws, ours = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("SUPERFAN_BENCH_TMP")) as tmp:
        data = Path(tmp) / "import.csv"
        write_csv(data, args.rows, args.fans)
        # Alternating rounds: on a shared VM one raw run can be 2x another a minute later, and a
        # single pair would compare two different machines.
        for n in range(args.repeat):
            raws.append(_run("--phase", "raw", "--csv", str(data), "--target", str(Path(tmp) / f"raw{n}.db")))
            target = Path(tmp) / f"superfan{n}.db"
            if args.db:
                with sqlite3.connect(args.db) as source, sqlite3.connect(target) as copy:
                    source.backup(copy)
                ours.append(_run("--phase", "superfan", "--csv", str(data), "--target", str(target)))
            else:
                ours.append(_run("--phase", "superfan", "--csv", str(data), "--target", str(target), "--fresh"))
            for leftover in Path(tmp).glob("*.db*"):
                leftover.unlink()
        size_mb = data.stat().st_size / 2**20
    raw_rate = [r["rows"] / r["seconds"] for r in raws]
    our_rate = [o["rows"] / o["seconds"] for o in ours]
    raw, mine = statistics.median(raw_rate), statistics.median(our_rate)
    ratio = mine / raw
    rss = max(o["rss_mb"] for o in ours)
    print(f"rows={args.rows:,} fans={args.fans:,} file={size_mb:.0f} MB rounds={args.repeat} "
          f"load average {os.getloadavg()[0]:.2f} (a shared machine: compare the CPU seconds too)"
          f"{f' into a copy of {args.db}' if args.db else ''}")
    print(f"raw sqlite3 executemany : {raw:>10,.0f} rows/s (median; {', '.join(f'{r:,.0f}' for r in raw_rate)}), "
          f"{statistics.median(r['seconds'] for r in raws):.1f} s (CPU {statistics.median(r['cpu'] for r in raws):.1f} s), "
          f"peak RSS {max(r['rss_mb'] for r in raws):.0f} MB")
    print(f"superfan import         : {mine:>10,.0f} rows/s (median; {', '.join(f'{r:,.0f}' for r in our_rate)}), "
          f"{statistics.median(o['seconds'] for o in ours):.1f} s (CPU {statistics.median(o['cpu'] for o in ours):.1f} s), "
          f"peak RSS {rss:.0f} MB")
    print(f"ratio                   : {ratio:.3f} (target >= {TARGET_RATIO}) "
          f"{'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}; per round "
          f"{', '.join(f'{o / r:.3f}' for r, o in zip(raw_rate, our_rate, strict=True))}")
    print(f"peak RSS                : {rss:.0f} MB (target <= {TARGET_RSS_MB} MB at 3M rows) "
          f"{'OK' if rss <= TARGET_RSS_MB else 'MISSES TARGET'}")


if __name__ == "__main__":
    main()
