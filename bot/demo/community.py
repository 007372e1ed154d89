"""Ground-truth simulator of a small creator's Discord + LINE fan community (import-format rows).

Every account gets a hidden archetype and individual random rates; nothing here knows any scoring
formula. Only ``true_fan`` counts as a *current* true fan (鐵粉): ``lapsed_true_fan`` accounts
behaved the same way but stopped 100-150 days before the end of the window.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.demo.archetypes import ARCHETYPES, Mix, Simulation

__all__ = ["ARCHETYPES", "FIELDS", "KINDS", "MIXES", "Community", "Mix", "message_count_ranking",
           "precision_recall", "simulate", "true_fan_keys", "write_csv", "write_jsonl"]

FIELDS = ("platform", "external_id", "display_name", "kind", "occurred_at", "amount", "currency", "event_id", "text")
KINDS = ("message", "reaction", "share", "referral", "purchase", "checkin", "event_checkin", "dm_in")
DEFAULT_END = (2025, 7, 1)  # a fixed default keeps simulate() deterministic for a seed

_NAMES = ("小慧", "阿明", "雅婷", "怡君", "佳穎", "宗翰", "家豪", "志明", "春嬌", "阿凱", "小鈞", "淑芬", "美玲",
          "俊傑", "建宏", "詩涵", "欣怡", "冠宇", "彥廷", "承恩", "品妤", "子晴", "小瑜", "阿哲", "阿翔", "小雯",
          "宜蓁", "柏翰", "思妤", "芷晴", "阿偉", "小胖", "Mandy", "Kevin Lin", "Ting", "Jerry Chen", "yuyu",
          "Amber", "Hsiao-Hui", "Wei", "Chloe", "Ming", "Iris", "Vicky", "Ray", "Sandy Wu", "🍓草莓", "貓奴🐱",
          "☁️ Yun", "小熊🐻", "🌙月月", "阿宅⚡", "🎧 DJ Kai", "ฅ^•ﻌ•^ฅ", "咪咪🐾", "🌸花花", "布丁🍮")
_SPAM_NAMES = ("Nitro Gift 🎁", "客服-小美", "投資老師Amy", "💰賺錢機會💰", "Steam 客服", "免費抽獎", "虛擬幣達人")


#: Named communities for the signal benchmark: (mix, days). "classic" is the one the default
#: tiers were first tuned on; the others are issue #18's: a 365-day window so that a true fan who
#: joined a year ago has a year of history.
MIXES: dict[str, tuple[Mix, int]] = {
    "classic": (Mix(), 180),
    "steady": (Mix(true_fans=40, casual=300, lurkers=330, spammers=15, one_time_buyers=70, occasional_buyers=30,
                   event_goers=25, lapsed_true_fans=13, heavy_chatters=20, true_fan_style="steady"), 365),
    "chatty": (Mix(true_fans=40, casual=400, lurkers=300, spammers=40, one_time_buyers=60, occasional_buyers=30,
                   event_goers=20, lapsed_true_fans=10, heavy_chatters=150, true_fan_style="steady"), 365),
    "recent": (Mix(true_fans=40, casual=300, lurkers=330, spammers=15, one_time_buyers=70, occasional_buyers=30,
                   event_goers=25, lapsed_true_fans=13, heavy_chatters=20, true_fan_style="steady",
                   recent_share=0.8), 365),
}


@dataclass(frozen=True)
class Community:
    rows: list[dict]
    truth: dict[str, str]  # "platform:external_id" -> archetype (only accounts that have rows)
    start: datetime
    end: datetime
    meetups: list[dict] = field(default_factory=list)  # {"code", "starts_at", "ends_at"}


def _account(rng: random.Random, seen: set[str], p_line: float) -> tuple[str, str]:
    while True:
        if rng.random() < p_line:
            platform, ext = "line", f"U{rng.getrandbits(128):032x}"
        else:
            platform, ext = "discord", str(rng.randrange(10**17, 10**18))
        if ext not in seen:
            seen.add(ext)
            return platform, ext


def _nickname(rng: random.Random, archetype: str) -> str:
    if archetype == "spammer":
        return rng.choice(_SPAM_NAMES) if rng.random() < 0.6 else f"user{rng.randrange(10000, 99999)}"
    name, r = rng.choice(_NAMES), rng.random()
    return name if r < 0.7 else f"{name}{rng.randrange(0, 10000):04d}" if r < 0.85 else f"{name}{rng.choice('♡✨☆~_')}"


def simulate(*, seed: int = 1, days: int = 180, mix: Mix = Mix(), end: datetime | None = None,
             tz: str = "Asia/Taipei") -> Community:
    if days < 1 or any(v < 0 for v in mix.counts().values()):
        raise ValueError("days must be >= 1 and every Mix count >= 0")
    zone = ZoneInfo(tz)
    end = datetime(*DEFAULT_END, tzinfo=zone) if end is None else end
    end = end.replace(tzinfo=zone) if end.tzinfo is None else end.astimezone(zone)
    start = end - timedelta(days=days)
    rng = random.Random(seed)
    sim = Simulation(rng, start, end, zone, mix)
    members = [a for a, k in mix.counts().items() for _ in range(k)]
    rng.shuffle(members)
    seen: set[str] = set()
    fans: list[tuple[str, str, str, str]] = []
    for f, archetype in enumerate(members):
        platform, ext = _account(rng, seen, 0.1 if archetype == "spammer" else 0.35)
        fans.append((platform, ext, _nickname(rng, archetype), archetype))
        getattr(sim, archetype)(f)
    sim.events.sort()
    rows, truth = [], {}
    for n, (ts, _seq, f, kind, amount, text) in enumerate(sim.events):
        platform, ext, name, archetype = fans[f]
        truth[f"{platform}:{ext}"] = archetype
        rows.append({"platform": platform, "external_id": ext, "display_name": name, "kind": kind,
                     "occurred_at": datetime.fromtimestamp(ts, zone).isoformat(),
                     "amount": str(amount) if kind == "purchase" else "",
                     "currency": "TWD" if kind == "purchase" else "", "event_id": f"sim-{seed}-{n}",
                     "text": text if kind in ("message", "dm_in") else ""})
    meetups = [{"code": code, "starts_at": datetime.fromtimestamp(ts, zone).isoformat(),
                "ends_at": datetime.fromtimestamp(ts + 3 * 3600, zone).isoformat()} for _d, ts, code in sim.meetups]
    return Community(rows=rows, truth=truth, start=start, end=end, meetups=meetups)


def true_fan_keys(c: Community) -> set[str]:
    """Ground truth of *current* true fans (鐵粉): the true_fan archetype only."""
    return {k for k, a in c.truth.items() if a == "true_fan"}


def message_count_ranking(rows: list[dict], cooldown_s: int = 60) -> list[tuple[str, int]]:
    """MEE6-style baseline: per fan, count messages at least ``cooldown_s`` after the last counted one."""
    times: dict[str, list[datetime]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "message":
            times[f"{r['platform']}:{r['external_id']}"].append(datetime.fromisoformat(r["occurred_at"]))
    counts = []
    for key, ts in times.items():
        ts.sort()
        n, last = 0, None
        for t in ts:
            if last is None or (t - last).total_seconds() >= cooldown_s:
                n, last = n + 1, t
        counts.append((key, n))
    return sorted(counts, key=lambda kv: (-kv[1], kv[0]))


def precision_recall(predicted: set[str], actual: set[str]) -> tuple[float, float]:
    """Precision and recall of ``predicted`` against ``actual``; an empty side scores 0.0."""
    hit = len(predicted & actual)
    return (hit / len(predicted) if predicted else 0.0, hit / len(actual) if actual else 0.0)


def write_jsonl(rows: list[dict], path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_csv(rows: list[dict], path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
