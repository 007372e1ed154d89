"""The creator-scale suite's measurements, each run in its own process by ``python -m benchmarks``.

    python -m benchmarks.scale_probes PROBE DB [ARGS…]

Each probe prints one JSON object on its last stdout line. The suite (``benchmarks/__main__.py``)
starts a fresh process per probe, so every figure (and its peak RSS, read by the parent with
``os.wait4``) belongs to that probe alone. Probes marked *reference* do the same work with
stdlib sqlite3 and nothing else: the floor the crm figure is read against.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import random
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.scale_db import NOW

LOOKUPS = 300
SEED = 19


def percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "n": len(ordered)}


def sample_fans(db: Path, count: int = LOOKUPS) -> list[tuple[int, str, str, str]]:
    """(fan id, platform, external id, display name) of ``count`` fans: light ones and every tenth
    a heavy one (the first few hundred ids hold the most rows)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    top = conn.execute("SELECT max(id) FROM fans").fetchone()[0]
    rng = random.Random(SEED)
    ids = [rng.randrange(1, 300) if n % 10 == 0 else rng.randrange(300, top + 1) for n in range(count)]
    out = []
    for fid in ids:
        row = conn.execute("SELECT i.platform, i.external_id, f.display_name FROM identities i JOIN fans f"
                           " ON f.id = i.fan_id WHERE i.fan_id = ? ORDER BY i.id LIMIT 1", (fid,)).fetchone()
        if row:
            out.append((fid, *row))
    conn.close()
    return out


def typo(name: str, rng: random.Random) -> str:
    """A name as a creator mistypes it: one character dropped or changed (never a substring)."""
    chars = list(name)
    at = rng.randrange(len(chars))
    if len(chars) > 3 and rng.random() < 0.5:
        del chars[at]
        chars.insert(rng.randrange(len(chars) + 1), "x")
    else:
        chars[at] = "翔" if chars[at] != "翔" else "明"
    return "".join(chars)


# crm probes (the real code, in-process, each call timed)

async def _timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    times = []
    for call in calls:
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def card_probe(db: Path, how: str) -> dict[str, Any]:
    """``find_fan`` + ``fan_documents`` (20 interactions) per lookup, as ``superfan fan`` and ``/fan`` do."""
    from crm.db import make_engine, make_read_sessionmaker
    from crm.errors import AmbiguousFan, FanNotFound
    from crm.identity import find_fan
    from crm.profiles import fan_documents
    from crm.settings import CrmSettings

    rng = random.Random(SEED)
    fans = sample_fans(db)
    if how == "id":
        queries = [f"{platform}:{ext}" for _, platform, ext, _ in fans]
    elif how == "name":
        queries = [name for *_, name in fans]
    else:
        queries = [typo(name, rng) for *_, name in fans][:100]
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    readers = make_read_sessionmaker(engine)
    settings = CrmSettings()
    outcomes = {"found": 0, "ambiguous": 0, "not_found": 0}

    async def card(query: str) -> None:
        async with readers() as session:
            try:
                fan = await find_fan(session, query)
            except AmbiguousFan:
                outcomes["ambiguous"] += 1
                return
            except FanNotFound:
                outcomes["not_found"] += 1
                return
            await fan_documents(session, [fan], settings, NOW, interactions=20)
            outcomes["found"] += 1

    try:
        await _timed([functools.partial(card, q) for q in queries[:10]])  # warm the caches
        for key in outcomes:
            outcomes[key] = 0
        times = await _timed([functools.partial(card, q) for q in queries])
    finally:
        await engine.dispose()
    return {**percentiles(times), **outcomes}


async def top_probe(db: Path) -> dict[str, Any]:
    """``fans --top 100`` without the printing: ``ranked_fans`` + ``fan_documents``."""
    from crm.db import make_engine, make_read_sessionmaker
    from crm.profiles import fan_documents, ranked_fans
    from crm.settings import CrmSettings

    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    readers = make_read_sessionmaker(engine)
    settings = CrmSettings()

    async def top() -> None:
        async with readers() as session:
            found = await ranked_fans(session, settings, NOW, top=100)
            await fan_documents(session, found, settings, NOW, interactions=None)

    try:
        times = (await _timed([top for _ in range(12)]))[2:]
    finally:
        await engine.dispose()
    return percentiles(times)


async def stats_probe(db: Path) -> dict[str, Any]:
    """``/stats`` as the Discord cog builds it (``stats_figures``: community_stats, the calibration
    view and its lines), each call timed on the wall clock and in CPU; then one more call under
    tracemalloc: the Python memory it held at its peak (per-fan objects for every fan would show)."""
    import tracemalloc

    from bot.discord_adapter.cogs.stats import stats_figures
    from crm.db import make_engine, make_read_sessionmaker
    from crm.settings import CrmSettings

    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    readers = make_read_sessionmaker(engine)
    settings = CrmSettings()

    async def stats() -> None:
        async with readers() as session:
            await stats_figures(session, settings, NOW, settings.locale)

    times, cpu = [], []
    try:
        for n in range(9):
            t0, c0 = time.perf_counter(), time.process_time()
            await stats()
            if n >= 2:  # the first two warm the caches
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
        tracemalloc.start()
        await stats()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await engine.dispose()
    return {**percentiles(times), "cpu_p50": statistics.median(cpu), "python_peak_mb": peak / 2**20}


async def digest_probe(db: Path) -> dict[str, Any]:
    """``build_digest`` as ``benchmarks/bench_digest.py`` measures it, on this database."""
    from crm.db import make_engine, make_read_sessionmaker
    from crm.digest import build_digest
    from crm.settings import CrmSettings

    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    readers = make_read_sessionmaker(engine)
    settings = CrmSettings()
    counts: dict[str, int] = {}

    async def digest() -> None:
        async with readers() as session:
            counts.update((await build_digest(session, settings, NOW)).counts)

    try:
        times = (await _timed([digest for _ in range(8)]))[1:]
    finally:
        await engine.dispose()
    return {**percentiles(times), "unanswered": counts.get("unanswered")}


# raw sqlite3 references

def ref_card(db: Path, how: str) -> dict[str, Any]:
    """The fan's row through its identity (or by ``name_key``) and its last 10 interactions."""
    from crm.names import name_key

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    fans = sample_fans(db)
    times = []
    for _, platform, ext, name in fans[:10] + fans:
        t0 = time.perf_counter()
        if how == "id":
            row = conn.execute("SELECT f.* FROM identities i JOIN fans f ON f.id = i.fan_id"
                               " WHERE i.platform = ? AND i.external_id = ?", (platform, ext)).fetchone()
        else:
            row = conn.execute("SELECT * FROM fans WHERE name_key = ? LIMIT 20", (name_key(name),)).fetchone()
        conn.execute("SELECT kind, platform, occurred_at, summary FROM interactions WHERE fan_id = ?"
                     " ORDER BY occurred_at DESC LIMIT 10", (row[0],)).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times[10:])


def ref_top(db: Path) -> dict[str, Any]:
    """The ranking alone, and the ranking with each listed fan's per-kind sums (count, points, and
    points decayed to today) in one raw ``GROUP BY``: the floor of a list's score breakdown."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    now = NOW.strftime("%Y-%m-%d %H:%M:%S")
    ranking, grouped = [], []
    for _ in range(12):
        t0 = time.perf_counter()
        ids = [r[0] for r in conn.execute("SELECT id FROM fans ORDER BY score_base DESC, id LIMIT 100")]
        ranking.append((time.perf_counter() - t0) * 1000)
        conn.execute(f"SELECT fan_id, kind, count(*), total(points), total(points * exp(-0.6931471805599453 *"
                     f" (julianday('{now}') - julianday(occurred_at)) / 90.0)) FROM interactions"
                     f" WHERE points > 0 AND fan_id IN ({','.join(map(str, ids))}) GROUP BY fan_id, kind").fetchall()
        grouped.append((time.perf_counter() - t0) * 1000)
    rows = conn.execute(f"SELECT count(*) FROM interactions WHERE points > 0 AND fan_id IN ({','.join(map(str, ids))})")
    return {**percentiles(ranking[2:]), "grouped": percentiles(grouped[2:]), "awarded_rows": rows.fetchone()[0]}


def ref_export(db: Path, out: Path) -> dict[str, Any]:
    """The export's join (each interaction with its identity), written with ``csv.writer``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    t0 = time.perf_counter()
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        rows = conn.execute(
            "SELECT i.fan_id, i.platform, d.external_id, d.display_name, i.kind, i.occurred_at, i.amount_cents,"
            " i.currency, i.source_event_id, i.summary FROM interactions i"
            " JOIN identities d ON d.fan_id = i.fan_id AND d.platform = i.platform ORDER BY i.occurred_at, i.id")
        writer.writerows(rows)
    return {"seconds": time.perf_counter() - t0}


# `superfan run` holding the database while fans look themselves up

RUN_SECRET = "bench-channel-secret"


def write_config(folder: Path, db: Path, *, line_api: str | None = None, port: int = 0) -> Path:
    """A superfan.toml on ``db`` (LINE on, against ``line_api``, when given)."""
    text = f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n[creator]\ntimezone = "Asia/Taipei"\nlocale = "zh-TW"\n'
    if line_api:
        text += f'[web]\nhost = "127.0.0.1"\nport = {port}\n[line]\nenabled = true\napi_base = "{line_api}"\n'
    path = folder / "superfan.toml"
    path.write_text(text, encoding="utf-8")
    return path


def superfan_command() -> str:
    """The installed ``superfan`` script beside this interpreter."""
    return str(Path(sys.executable).parent / "superfan")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_probe(db: Path, requests: int = 400) -> dict[str, Any]:
    """``superfan run`` (LINE on, against the loopback emulator) while ``requests`` signed webhooks
    arrive from known fans, one in four a ``我的資料`` card lookup; its peak RSS comes from ``wait4``."""
    import base64
    import hashlib
    import hmac
    import os
    import signal
    import subprocess
    import tempfile

    import aiohttp

    from bot.sandbox.line_emulator import LineEmulator

    fans = [f for f in sample_fans(db, 200) if f[1] == "line"]
    run_id = os.urandom(4).hex()
    folder = Path(tempfile.mkdtemp(prefix="superfan-run-", dir=db.parent))
    copy = folder / db.name  # the server writes (messages, fetched names): the cached database stays as built
    await asyncio.to_thread(shutil.copyfile, db, copy)
    db = copy
    async with LineEmulator("bench-token") as emulator:
        port = _free_port()
        config = write_config(folder, db, line_api=emulator.base_url, port=port)
        env = {**os.environ, "LINE_CHANNEL_SECRET": RUN_SECRET, "LINE_CHANNEL_ACCESS_TOKEN": "bench-token"}
        command = [superfan_command(), "--config", str(config), "run"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,  # noqa: ASYNC220 (once, before the load)
                                stderr=subprocess.PIPE, cwd=folder)
        assert proc.stderr is not None
        await asyncio.to_thread(proc.stderr.readline)  # "superfan is running: …"
        url = f"http://127.0.0.1:{port}/line/webhook"
        statuses: dict[int, int] = {}
        t0 = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            for n in range(requests):
                _, _, user, _ = fans[n % len(fans)]
                text = "我的資料" if n % 4 == 0 else f"第 {n} 則留言"
                event = {"type": "message", "mode": "active", "timestamp": int(time.time() * 1000),
                         "webhookEventId": f"01S{run_id}{n:012d}", "replyToken": f"rt{run_id}{n}",
                         "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": user},
                         "message": {"type": "text", "id": f"{run_id}{n}", "text": text, "quoteToken": "q"}}
                body = json.dumps({"destination": "U" + "0" * 32, "events": [event]}, ensure_ascii=False).encode()
                sig = base64.b64encode(hmac.new(RUN_SECRET.encode(), body, hashlib.sha256).digest()).decode()
                async with http.post(url, data=body, headers={"X-Line-Signature": sig,
                                                              "Content-Type": "application/json"}) as resp:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
        served = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # the answers to 我的資料 go out through the outbox
        proc.send_signal(signal.SIGINT)
        _, status, usage = await asyncio.to_thread(os.wait4, proc.pid, 0)
        replies = sum(1 for call in emulator.calls if call.path.endswith("/reply"))
    shutil.rmtree(folder, ignore_errors=True)
    return {"rss_mb": usage.ru_maxrss / 1024, "requests": requests, "statuses": statuses, "replies": replies,
            "seconds": served, "exit": os.waitstatus_to_exitcode(status)}


def main() -> None:
    probe, db, *rest = sys.argv[1:]
    path = Path(db)
    probes: dict[str, Callable[[], Any]] = {
        "card": lambda: asyncio.run(card_probe(path, rest[0])),
        "top": lambda: asyncio.run(top_probe(path)),
        "stats": lambda: asyncio.run(stats_probe(path)),
        "digest": lambda: asyncio.run(digest_probe(path)),
        "ref_card": lambda: ref_card(path, rest[0]),
        "ref_top": lambda: ref_top(path),
        "ref_export": lambda: ref_export(path, Path(rest[0])),
        "run": lambda: asyncio.run(run_probe(path)),
    }
    print(json.dumps(probes[probe]()), flush=True)


if __name__ == "__main__":
    main()
