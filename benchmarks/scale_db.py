"""The creator-scale database: 100,000 fans and 10M interactions over 365 days, built set-based.

    python -m benchmarks.scale_db [--small] [--rebuild]

Fans, identities and conversations go in with stdlib sqlite3 ``executemany``; the interactions are
made inside SQLite by one ``INSERT … SELECT`` over a recursive counter, in time order (ids grow with
time, as live ingest writes them), with the interaction indexes dropped while they load and built
afterwards. The schema is the real one (``superfan migrate``, Alembic); a later migration is applied
to a cached copy by :func:`ensure_db`. A few hundred heavy fans hold 3,000-15,000 rows each, the
rest follow a long tail; 5,000 conversations are open. Every fan's ``score_base``, tier and
``last_seen_at`` are worked out from their rows with the default scoring, so lists and cards show
what superfan would have stored.

The file is cached under ``~/.cache/superfan-bench/`` (``SUPERFAN_BENCH_CACHE`` overrides) and
reused until ``--rebuild`` or a change of :data:`VERSION`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm.names import name_key
from crm.schema import migrate
from crm.scoring import DEFAULT_EPOCH
from crm.tiers import DEFAULT_TIERS

#: Bump when the generated content changes: a cached file of another version is not reused.
VERSION = 2
#: The benchmark's "now": scores, tiers and the digest are evaluated here (09:00 in Taipei).
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
DAYS = 365
HALF_LIFE_DAYS = 90.0
#: Daily caps as the generator applies them: a kind's row is awarded with probability
#: ``min(1, AWARD[kind] / 1000 / rows)`` (per mille, against the fan's yearly row count), so a fan
#: is awarded about as many rows a day as the default caps allow (2.5 messages, 2 reactions, one
#: DM, two shares, one check-in) however much they write; purchases are never capped.
AWARD = {kind: int(per_day * DAYS / share * 1000)
         for kind, per_day, share in (("message", 2.5, 0.62), ("reaction", 2, 0.26), ("dm_in", 1, 0.05),
                                      ("share", 2, 0.03), ("checkin", 1, 0.03))}
SURNAMES = "陳林黃張李王吳劉蔡楊許鄭謝郭洪曾邱廖賴徐周葉蘇莊呂江何蕭羅高"
GIVEN = "怡君雅婷佳穎宗翰家豪志明淑芬美玲俊傑建宏詩涵欣怡冠宇彥廷承恩品妤子晴宜蓁柏翰思妤芷晴"
NICKS = ("小慧", "阿明", "小鈞", "阿凱", "小瑜", "阿哲", "阿翔", "小雯", "阿偉", "小胖", "🍓草莓", "貓奴🐱",
         "小熊🐻", "🌙月月", "咪咪🐾", "🌸花花", "布丁🍮")
LATIN = ("Mandy", "Kevin", "Ting", "Jerry", "yuyu", "Amber", "Chloe", "Ming", "Iris", "Vicky", "Ray", "Sandy",
         "Hsiao-Hui", "Wei", "Kai", "Yun", "Nina", "Ivy", "Leo", "Ken")
TEXTS = ("謝謝分享今天的影片！", "好喜歡這首歌", "直播好好看", "周邊什麼時候到？", "明天見", "哈哈哈哈", "+1",
         "最近好嗎？好久沒發文了")


@dataclass(frozen=True)
class Scale:
    fans: int
    interactions: int
    heavy: int  # fans with HEAVY_ROWS rows each (spread evenly)
    heavy_rows: tuple[int, int]
    open_conversations: int

    @property
    def name(self) -> str:
        return f"scale-v{VERSION}-{self.fans}-{self.interactions}"


FULL = Scale(100_000, 10_000_000, 300, (3_000, 15_000), 5_000)
SMALL = Scale(5_000, 200_000, 20, (500, 3_000), 250)


def cache_dir() -> Path:
    return Path(os.environ.get("SUPERFAN_BENCH_CACHE") or Path.home() / ".cache" / "superfan-bench")


def db_path(scale: Scale) -> Path:
    return cache_dir() / f"{scale.name}.db"


def _t(at: datetime) -> str:
    """SQLite's stored form of a UTC time (naive text, as the models write it)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def fan_name(n: int, rng: random.Random) -> str:
    """Names as a Taiwanese community has them: mostly full names (some shared), nicknames many
    fans share, Latin handles with a number."""
    roll = rng.random()
    if roll < 0.7:
        return rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
    if roll < 0.85:
        return rng.choice(NICKS)
    return f"{rng.choice(LATIN)}{'_' if rng.random() < 0.5 else ' '}{n % 9973}"


def line_id(n: int) -> str:
    return f"U{n:032x}"


def discord_id(n: int) -> str:
    return str(400_000_000_000_000_000 + n)


def platforms_of(n: int) -> tuple[str, ...]:
    """Fan ``n``'s accounts: one in ten has both (linked), a third Discord only, the rest LINE."""
    if n % 10 == 1:
        return ("line", "discord")
    return ("discord",) if n % 3 == 0 else ("line",)


def _row_counts(scale: Scale, rng: random.Random) -> list[int]:
    """Rows per fan (index 0 is fan 1): heavy fans first, then a long tail summing to the total."""
    low, high = scale.heavy_rows
    heavy = [low + (high - low) * k // max(1, scale.heavy - 1) for k in range(scale.heavy)]
    rest = scale.interactions - sum(heavy)
    weights = [rng.random() ** 4 for _ in range(scale.fans - scale.heavy)]
    total = sum(weights)
    tail = [int(rest * w / total) for w in weights]
    tail[0] += rest - sum(tail)
    return heavy + tail


def build(path: Path, scale: Scale) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    tmp = path.with_suffix(".building")
    for stale in path.parent.glob(tmp.name + "*"):
        stale.unlink()
    asyncio.run(migrate(f"sqlite+aiosqlite:///{tmp}", "0011"))
    rng = random.Random(19)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("PRAGMA temp_store=FILE")
    conn.execute("BEGIN")
    start = NOW - timedelta(days=DAYS)
    fans, identities = [], []
    for n in range(1, scale.fans + 1):
        name = fan_name(n, rng)
        first = start - timedelta(seconds=rng.randrange(0, 2 * 365 * 86400))
        fans.append((n, name, name_key(name), 0, 0.0, "passerby", _t(first), _t(first)))
        for platform in platforms_of(n):
            seen = name if rng.random() < 0.8 else f"{name}{rng.choice(('🎶', '✨', ' ❤'))}"
            ext = line_id(n) if platform == "line" else discord_id(n)
            identities.append((n, platform, ext, seen, name_key(seen), _t(first)))
    conn.executemany("INSERT INTO fans (id, display_name, name_key, opted_out, score_base, tier, first_seen_at,"
                     " last_seen_at) VALUES (?,?,?,?,?,?,?,?)", fans)
    conn.executemany("INSERT INTO identities (fan_id, platform, external_id, display_name, name_key, created_at)"
                     " VALUES (?,?,?,?,?,?)", identities)
    # plan: row numbers [lo, lo + rows) belong to fan_id; the counter's rows pick theirs by a
    # multiplicative hash (a permutation of 0..N-1), so every fan gets exactly its count, spread in time.
    conn.execute("CREATE TEMP TABLE plan (lo INTEGER PRIMARY KEY, code INTEGER)")
    plan, lo = [], 0
    for n, rows in enumerate(_row_counts(scale, rng), start=1):
        if rows:
            plan.append((lo, n * 1_000_000 + rows))
            lo += rows
    conn.executemany("INSERT INTO temp.plan VALUES (?,?)", plan)
    indexes = [sql for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'interactions' AND sql IS NOT NULL")]
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'interactions'"
                                " AND sql IS NOT NULL").fetchall():
        conn.execute(f"DROP INDEX {name}")
    total, step = scale.interactions, DAYS * 86400 / scale.interactions
    mult = 2_654_435_761
    while _gcd(mult, total) != 1:
        mult += 2
    texts = " ".join(f"WHEN {i} THEN '{text}'" for i, text in enumerate(TEXTS))
    conn.execute(f"""
        INSERT INTO interactions (id, fan_id, platform, kind, occurred_at, recorded_at, points, amount_cents,
                                  currency, summary, source_event_id)
        SELECT i, fan_id, platform, kind, at, at,
               CASE WHEN kind = 'purchase' THEN 5.0 + cents * 0.00005
                    WHEN h / 100 % 1000 >= (CASE kind WHEN 'message' THEN {AWARD['message']}
                        WHEN 'reaction' THEN {AWARD['reaction']} WHEN 'dm_in' THEN {AWARD['dm_in']}
                        WHEN 'share' THEN {AWARD['share']} ELSE {AWARD['checkin']} END) / rows THEN 0.0
                    ELSE CASE kind WHEN 'message' THEN 0.1 WHEN 'reaction' THEN 0.05 WHEN 'dm_in' THEN 0.1
                                   WHEN 'share' THEN 2.5 ELSE 1.5 END END,
               CASE kind WHEN 'purchase' THEN cents END, CASE kind WHEN 'purchase' THEN 'TWD' END,
               CASE WHEN kind IN ('message', 'dm_in') AND h % 2 = 0 THEN CASE h / 7 % {len(TEXTS)} {texts} END END,
               'ev-' || i
        FROM (
            SELECT i, h, code / 1000000 AS fan_id, code % 1000000 AS rows,
                   CASE WHEN code / 1000000 % 10 = 1 THEN CASE WHEN h % 5 < 2 THEN 'discord' ELSE 'line' END
                        WHEN code / 1000000 % 3 = 0 THEN 'discord' ELSE 'line' END AS platform,
                   CASE WHEN h % 100 < 62 THEN 'message' WHEN h % 100 < 88 THEN 'reaction'
                        WHEN h % 100 < 93 THEN 'dm_in' WHEN h % 100 < 96 THEN 'share'
                        WHEN h % 100 < 99 THEN 'checkin' ELSE 'purchase' END AS kind,
                   strftime('%Y-%m-%d %H:%M:%S', {int(start.timestamp())} + CAST(i * {step!r} AS INTEGER),
                            'unixepoch') || '.000000' AS at,
                   30000 + h % 270 * 1000 AS cents
            FROM (
                SELECT i, h, (SELECT code FROM temp.plan WHERE lo <= r ORDER BY lo DESC LIMIT 1) AS code
                FROM (SELECT i, (i * {mult}) % {total} AS r, (i * 1103515245 + 12345) / 65536 % 1000003 AS h
                      FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total})
                            SELECT i FROM n))
                LIMIT -1 OFFSET 0  -- not flattened: the fan lookup runs once a row
            )
            LIMIT -1 OFFSET 0
        )
    """)
    for sql in indexes:
        conn.execute(sql)
    _derive_fans(conn)
    _conversations(conn, rng, scale)
    conn.execute("INSERT INTO score_state (id, epoch, half_life_days) VALUES (1, ?, ?)",
                 (_t(DEFAULT_EPOCH), HALF_LIFE_DAYS))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)
    for wal in path.parent.glob(tmp.name + "-*"):
        wal.unlink()


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _derive_fans(conn: sqlite3.Connection) -> None:
    """last_seen_at, score_base (default half-life, DEFAULT_EPOCH) and the score-alone tier."""
    epoch_jd = f"julianday('{_t(DEFAULT_EPOCH)}')"
    conn.execute(f"""
        UPDATE fans SET last_seen_at = agg.last, score_base = agg.base
        FROM (SELECT fan_id, max(occurred_at) AS last,
                     total(points * exp(0.6931471805599453 * (julianday(occurred_at) - {epoch_jd}) / {HALF_LIFE_DAYS}))
                       AS base
              FROM interactions GROUP BY fan_id) AS agg
        WHERE fans.id = agg.fan_id
    """)
    divisor = 2.0 ** ((NOW - DEFAULT_EPOCH).total_seconds() / 86400 / HALF_LIFE_DAYS)
    cases = " ".join(f"WHEN score_base / {divisor!r} >= {tier.threshold!r} THEN '{tier.key}'"
                     for tier in reversed(DEFAULT_TIERS))
    conn.execute(f"UPDATE fans SET tier = CASE {cases} ELSE '{DEFAULT_TIERS[0].key}' END")


def _conversations(conn: sqlite3.Connection, rng: random.Random, scale: Scale) -> None:
    """``open_conversations`` waiting conversations and as many answered ones of the last week."""
    people = rng.sample(range(1, scale.fans + 1), 2 * scale.open_conversations)
    convs: list[tuple[object, ...]] = []
    waits: list[tuple[object, ...]] = []
    for n, fan in enumerate(people, start=1):
        since = NOW - timedelta(seconds=rng.randrange(7 * 86400))
        due = since + timedelta(hours=24)
        platform = platforms_of(fan)[0]
        if n <= scale.open_conversations:
            convs.append((n, fan, platform, "waiting", _t(since), _t(since), _t(due), None, None, _t(since)))
            waits.append((n, fan, _t(since), _t(due), None, None, None))
        else:
            answered = since + timedelta(seconds=rng.randrange(40 * 3600))
            seconds = (answered - since).total_seconds()
            convs.append((n, fan, platform, "answered", _t(since), None, None, _t(answered), seconds, _t(since)))
            waits.append((n, fan, _t(since), _t(due), _t(answered), "reply", seconds))
    conn.executemany("INSERT INTO conversations (id, fan_id, platform, status, opened_at, waiting_since, due_at,"
                     " answered_at, first_response_seconds, last_inbound_at) VALUES (?,?,?,?,?,?,?,?,?,?)", convs)
    conn.executemany("INSERT INTO conversation_waits (conversation_id, fan_id, started_at, due_at, ended_at,"
                     " ended_by, response_seconds) VALUES (?,?,?,?,?,?,?)", waits)


def ensure_db(scale: Scale, *, rebuild: bool = False, log: bool = True) -> Path:
    """The cached database for ``scale`` (built when missing), migrated to the code's head."""
    path = db_path(scale)
    if rebuild or not path.exists():
        t0 = time.perf_counter()
        if log:
            print(f"building {path} ({scale.fans:,} fans, {scale.interactions:,} interactions) …", flush=True)
        build(path, scale)
        if log:
            print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="5,000 fans, 200k interactions (a quick run)")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    path = ensure_db(SMALL if args.small else FULL, rebuild=args.rebuild)
    conn = sqlite3.connect(path)
    for table in ("fans", "identities", "interactions", "conversations"):
        print(f"{table}: {conn.execute(f'SELECT count(*) FROM {table}').fetchone()[0]:,}")
    print(path)


if __name__ == "__main__":
    main()
