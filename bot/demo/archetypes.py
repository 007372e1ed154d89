"""The archetypes of fan in the simulated community (:mod:`bot.demo.community`), how many of each
(:class:`Mix`), and what each does day by day.

:class:`Simulation` holds the timeline of one community: the creator's posting days, merch drops and
meetups, and every account's events, made by the method named after the account's archetype. Rates
are individual and random; nothing here knows any scoring formula.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

ARCHETYPES = ("true_fan", "casual", "lurker", "spammer", "one_time_buyer", "occasional_buyer", "event_goer",
              "lapsed_true_fan", "heavy_chatter", "quiet_true_fan")


@dataclass(frozen=True)
class Mix:
    true_fans: int = 120
    casual: int = 600
    lurkers: int = 900
    spammers: int = 25
    one_time_buyers: int = 150
    occasional_buyers: int = 80  # 2-4 purchases, otherwise nearly silent
    event_goers: int = 60  # come to most meetups, chat a little, rarely buy
    lapsed_true_fans: int = 40  # true-fan behaviour that stopped 100-150 days before the end
    heavy_chatters: int = 0  # real people who talk nearly every day, react a lot, rarely buy
    #: "classic" true fans are active the whole window at the rates the defaults were tuned on;
    #: "steady" ones follow issue #18's rates: buy every 3-8 weeks, check in 1-3 times a week,
    #: share about monthly, talk a few times a week, and join between ``joined_days_ago`` days ago.
    true_fan_style: str = "classic"
    joined_days_ago: tuple[int, int] = (90, 365)
    recent_share: float = 0.0  # share of steady true fans who joined only 90-120 days ago
    dm_rate: float = 1.0  # DMs to the creator, relative to the archetypes' own rates (the demo's inbox)
    quiet_true_fans: int = 0  # true-fan behaviour that stopped 15-45 days before the end (going quiet)

    def counts(self) -> dict[str, int]:
        """Accounts per archetype, in ``ARCHETYPES`` order."""
        return dict(zip(ARCHETYPES, (self.true_fans, self.casual, self.lurkers, self.spammers, self.one_time_buyers,
                                     self.occasional_buyers, self.event_goers, self.lapsed_true_fans,
                                     self.heavy_chatters, self.quiet_true_fans), strict=True))


# Relative chat activity per local hour (Taipei evenings peak, pre-dawn is quiet).
_HOUR_CUM = list(accumulate((0.6, 0.35, 0.2, 0.1, 0.06, 0.06, 0.12, 0.3, 0.45, 0.5, 0.55, 0.6, 0.9, 0.7,
                             0.6, 0.6, 0.65, 0.7, 0.85, 1.0, 1.25, 1.4, 1.3, 1.0)))
_CHAT = ("哈哈哈哈", "今天直播好好笑", "+1", "推", "新周邊什麼時候出？", "晚安～", "早安！", "好可愛 😍", "笑死",
         "真的假的", "有人要一起看嗎", "這首歌超好聽", "期待下一集！", "辛苦了", "我也是！", "lol", "GG",
         "剛下班 終於趕上", "昨天那段我笑到不行", "敲碗", "+1 想要", "收到了 好喜歡 🥹")
_MEET = ("今天見面會好開心！", "謝謝大家 下次見 👋", "合照我收藏了 🥹", "第一次參加 好緊張哈哈", "大家回家路上小心")
_DMS = ("謝謝你的作品！", "請問訂單什麼時候寄出？", "想問見面會還有名額嗎", "最近過得好嗎 要照顧身體喔",
        "想分享一下我畫的 fan art", "收到周邊了 包裝好用心", "可以幫我簽名嗎 🙏", "生日快樂！！")
_SPAM = ("免費領取 Nitro 👉 discord-gift.xyz", "加我LINE 日賺三千 💰", "投資穩賺不賠 私訊我", "🔥🔥🔥🔥🔥",
         "哈哈哈哈哈哈哈哈哈哈", "@everyone 限時抽獎 點這裡", "Steam 免費遊戲 steamcommunlty.com", "1", "a",
         "簽到簽到簽到", "衝衝衝衝衝")
_PRICES = (300, 350, 390, 450, 480, 590, 650, 690, 790, 880, 990, 1080, 1280, 1480, 1680, 1980, 2280, 2500)
_BIG_PRICES = (3200, 3680, 4500, 5200, 5980, 6800, 7500, 8000)


def _pois(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _prof(**kw: float | tuple) -> dict:
    base = {"talk": 0.0, "msgs": 1.0, "react": 0.0, "react_n": 0.0, "share": 0.0, "referral": 0.0,
            "dm_in": 0.0, "checkin": 0.0, "attend": 0.0, "meet_buy": 0.0}
    return base | kw


class Simulation:
    """One community's timeline: each account's events, made by the method named after its archetype
    (``true_fan``, ``casual`` …), around the creator's posting days, merch drops and meetups."""

    def __init__(self, rng: random.Random, start: datetime, end: datetime, tz: ZoneInfo, mix: Mix) -> None:
        self.rng, self.tz, self.mix = rng, tz, mix
        self.lo, self.hi = int(start.timestamp()), int(end.timestamp())
        first = start.date()
        self.n = max(1, (end.date() - first).days + (1 if end.time() != time() else 0))
        dates = [first + timedelta(days=d) for d in range(self.n)]
        self.day0 = [int(datetime.combine(x, time(), tz).timestamp()) for x in dates]
        self.weekend = [x.weekday() >= 4 for x in dates]  # Fri-Sun are busier
        self.post_day = [rng.random() < 0.45 for _ in dates]  # days the creator posts content
        self.drops = sorted(rng.sample(range(self.n), k=min(self.n, rng.randint(2, 4))))  # merch drops
        self.events: list[tuple] = []
        self.meetups: list[tuple[int, int, str]] = []  # (day, start ts, code)
        k = rng.randint(3, 5)
        for i in range(k):
            seg = [d for d in range(i * self.n // k, (i + 1) * self.n // k) if dates[d].weekday() >= 5]
            if seg:
                d = rng.choice(seg)
                ts = self.day0[d] + rng.choice((14, 19)) * 3600
                code = "MEET-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(5))
                if self.lo <= ts and ts + 3 * 3600 < self.hi:
                    self.meetups.append((d, ts, code))

    def emit(self, f: int, ts: int, kind: str, amount: int = 0, text: str = "") -> None:
        if self.lo <= ts < self.hi:
            self.events.append((ts, len(self.events), f, kind, amount, text))

    def at(self, d: int) -> int:
        hour = self.rng.choices(range(24), cum_weights=_HOUR_CUM)[0]
        return self.day0[d] + hour * 3600 + self.rng.randrange(3600)

    def chat(self, f: int, d: int, n: int, texts: tuple = _CHAT, ts: int | None = None) -> None:
        rng = self.rng
        sessions = 1 if n <= 3 else rng.randint(1, 3)
        for s in range(sessions):
            t = self.at(d) if ts is None else ts
            for _ in range(n // sessions + (1 if s < n % sessions else 0)):
                self.emit(f, t, "message", text=rng.choice(texts))
                t += rng.randint(4, 45) if rng.random() < 0.6 else rng.randint(60, 600)

    def buy(self, f: int, n: int, prices: tuple, first: int, last: int, drop_bias: float) -> None:
        rng = self.rng
        drops = [x for x in self.drops if first <= x <= last]
        for _ in range(n):
            near_drop = drops and rng.random() < drop_bias
            d = min(last, rng.choice(drops) + rng.choice((0, 0, 0, 1, 2, 3))) if near_drop else rng.randint(first, last)
            self.emit(f, self.at(d), "purchase", rng.choice(prices))

    def regular(self, f: int, p: dict, first: int, last: int, off: range = range(0)) -> None:
        rng, streak, c = self.rng, False, p["checkin"]
        for d in range(first, last + 1):
            if d in off:
                streak = False
                continue
            if rng.random() < p["talk"] * (1.25 if self.weekend[d] else 0.9):
                self.chat(f, d, 1 + _pois(rng, p["msgs"] - 1))
            if rng.random() < p["react"] * (1.6 if self.post_day[d] else 0.5):
                for _ in range(1 + _pois(rng, p["react_n"])):
                    self.emit(f, self.at(d), "reaction")
            for kind in ("share", "referral", "dm_in"):
                if rng.random() < p[kind] * (self.mix.dm_rate if kind == "dm_in" else 1.0):
                    self.emit(f, self.at(d), kind, text=rng.choice(_DMS) if kind == "dm_in" else "")
            # c is a daily probability, or (start, keep-going) probabilities for a streaker
            streak = rng.random() < ((c[1] if streak else c[0]) if isinstance(c, tuple) else c)
            if streak:
                self.emit(f, self.at(d), "checkin")
        for d, ts, _code in self.meetups:
            if first <= d <= last and d not in off and rng.random() < p["attend"]:
                self.emit(f, ts - 900 + rng.randrange(5400), "event_checkin")
                if rng.random() < p["meet_buy"]:
                    self.emit(f, ts + rng.randrange(3 * 3600), "purchase", rng.choice(_PRICES[:10]))
                if rng.random() < 0.6:
                    self.chat(f, d, rng.randint(1, 4), _MEET, ts + 3 * 3600 + rng.randrange(4 * 3600))

    def span(self) -> tuple[int, int]:
        """Active days of a non-core member: most stay, some join late, some drift away."""
        r, n = self.rng.random(), self.n - 1
        if r < 0.2:
            return self.rng.randint(0, n), n
        if r < 0.4:
            return 0, self.rng.randint(0, n)
        return 0, n

    # --- archetypes -----------------------------------------------------------------------------
    def true_fan(self, f: int, last: int | None = None) -> None:
        if self.mix.true_fan_style == "steady":
            self.steady_fan(f, last)
            return
        rng, u = self.rng, self.rng.uniform
        quiet = rng.random() < 0.25  # mostly buys and checks in
        streaker = rng.random() < 0.3
        checkin = (u(0.15, 0.35), u(0.8, 0.95)) if streaker else (u(0.3, 0.7) if quiet else u(0.12, 0.45))
        p = _prof(talk=u(0.03, 0.12) if quiet else u(0.25, 0.65),
                  msgs=u(1.0, 2.0) if quiet else rng.lognormvariate(math.log(3.5), 0.45),
                  react=u(0.3, 0.8), react_n=u(0.5, 2.5), share=u(0.01, 0.05), referral=u(0.002, 0.012),
                  dm_in=u(0.005, 0.04), checkin=checkin, attend=u(0.2, 0.6), meet_buy=0.5)
        end = self.n - 1 if last is None else last
        off = range(0)
        if rng.random() < 0.3:  # a holiday or a busy exam week
            b = rng.randint(0, self.n - 1)
            off = range(b, b + rng.randint(4, 14))
        self.regular(f, p, 0, end, off)
        self.buy(f, rng.randint(3, 8) + (2 if quiet else 0), _PRICES, 0, end, 0.5)

    def steady_fan(self, f: int, last: int | None = None) -> None:
        """Issue #18's true fan: steady commitment at modest rates, joined 3 months to a year ago."""
        rng, u, mix = self.rng, self.rng.uniform, self.mix
        lo, hi = (90, 120) if rng.random() < mix.recent_share else mix.joined_days_ago
        first = max(0, self.n - rng.randint(lo, hi)) if last is None else 0
        end = self.n - 1 if last is None else last
        p = _prof(talk=u(2, 5) / 7, msgs=rng.lognormvariate(math.log(3.0), 0.45), react=u(0.2, 0.6), react_n=1.0,
                  share=u(1 / 40, 1 / 20), referral=u(0.0, 0.006), dm_in=u(0.005, 0.03), checkin=u(1, 3) / 7,
                  attend=u(0.2, 0.6), meet_buy=0.3)
        off = range(0)
        if rng.random() < 0.3:  # a holiday or a busy exam week
            b = rng.randint(first, end)
            off = range(b, b + rng.randint(4, 14))
        self.regular(f, p, first, end, off)
        every = u(21, 56)
        d = first + u(0, every)
        while d <= end:
            self.emit(f, self.at(int(d)), "purchase", rng.choice(_PRICES))
            d += every * u(0.8, 1.2)

    def heavy_chatter(self, f: int) -> None:
        """Talks nearly every day, many lines at a time, reacts to everything; seldom buys or checks in."""
        rng, u = self.rng, self.rng.uniform
        p = _prof(talk=u(0.7, 0.95), msgs=rng.lognormvariate(math.log(12), 0.5), react=u(0.5, 0.9), react_n=2.0,
                  share=u(0.0, 0.008), dm_in=u(0.005, 0.03), checkin=u(0.0, 0.03), attend=0.05, meet_buy=0.1)
        first, last = self.span()
        self.regular(f, p, first, last)
        r = rng.random()
        self.buy(f, 0 if r < 0.6 else 1 if r < 0.9 else 2, _PRICES[:11], first, last, 0.6)

    def lapsed_true_fan(self, f: int) -> None:
        last = max(0, self.n - 1 - self.rng.randint(100, 150))
        self.true_fan(f, last)
        if self.rng.random() < 0.3 and last < self.n - 1:  # an occasional glance afterwards
            for _ in range(self.rng.randint(1, 2)):
                self.emit(f, self.at(self.rng.randint(last + 1, self.n - 1)), "reaction")

    def quiet_true_fan(self, f: int) -> None:
        """A true fan going quiet: the same behaviour, stopped 15-45 days before the end."""
        self.true_fan(f, max(0, self.n - 1 - self.rng.randint(15, 45)))

    def casual(self, f: int) -> None:
        rng, u = self.rng, self.rng.uniform
        p = _prof(talk=u(0.02, 0.25), msgs=rng.lognormvariate(math.log(2.5), 0.8), react=u(0.05, 0.35),
                  react_n=0.5, share=u(0.0, 0.006), referral=0.0003, dm_in=0.002, checkin=u(0.0, 0.06),
                  attend=0.04, meet_buy=0.1)
        first, last = self.span()
        self.regular(f, p, first, last)
        r = rng.random()
        self.buy(f, 1 if r < 0.35 else 2 if r < 0.45 else 0, _PRICES[:11], first, last, 0.6)

    def lurker(self, f: int) -> None:
        first, last = self.span()
        self.regular(f, _prof(react=self.rng.uniform(0.01, 0.12), react_n=self.rng.uniform(0.0, 1.0)), first, last)

    def occasional_buyer(self, f: int) -> None:
        u = self.rng.uniform
        p = _prof(talk=u(0.005, 0.03), msgs=1.5, react=u(0.02, 0.1), share=0.001, dm_in=0.003, checkin=0.01,
                  attend=0.05, meet_buy=0.3)
        self.regular(f, p, 0, self.n - 1)
        self.buy(f, self.rng.randint(2, 4), _PRICES[:15], 0, self.n - 1, 0.6)

    def event_goer(self, f: int) -> None:
        u = self.rng.uniform
        p = _prof(talk=u(0.02, 0.08), msgs=2.0, react=u(0.05, 0.2), react_n=0.3, share=u(0.003, 0.015),
                  referral=0.002, dm_in=0.004, checkin=0.02, attend=u(0.6, 0.95), meet_buy=0.15)
        self.regular(f, p, 0, self.n - 1)

    def one_time_buyer(self, f: int) -> None:
        rng = self.rng
        d = rng.randint(0, self.n - 1)
        ts = self.at(d)
        self.emit(f, ts, "purchase", rng.choice(_BIG_PRICES if rng.random() < 0.35 else _PRICES))
        if rng.random() < 0.4:  # asks about shipping
            self.emit(f, ts + rng.randint(3600, 5 * 86400), "dm_in", text=rng.choice(_DMS[1:2] + _DMS[5:6]))
        if rng.random() < 0.15:
            self.emit(f, ts + rng.randint(2 * 86400, 9 * 86400), "message", text="收到了 好喜歡 🥹")
        for _ in range(rng.randint(1, 3) if rng.random() < 0.3 else 0):
            self.emit(f, self.at(rng.randint(0, self.n - 1)), "reaction")

    def spammer(self, f: int) -> None:
        rng = self.rng
        first = rng.randint(0, self.n - 1)
        last = min(self.n - 1, first + rng.randint(20, 100))
        p_day, paced = rng.uniform(0.5, 0.95), rng.random() < 0.45
        gap_lo = rng.randint(61, 75)  # paced bots stay just above a 60 s XP cooldown
        gap_hi, texts = gap_lo + rng.randint(10, 45), rng.sample(_SPAM, 3)
        for d in range(first, last + 1):
            if rng.random() >= p_day:
                continue
            if paced:
                for _ in range(1 if rng.random() < 0.7 else 2):
                    t, stop = self.at(d), rng.randint(5400, 5 * 3600)
                    for _ in range(stop // ((gap_lo + gap_hi) // 2)):
                        self.emit(f, t, "message", text=rng.choice(texts) + " " * rng.randint(0, 2))
                        t += rng.randint(gap_lo, gap_hi)
            else:
                for _ in range(rng.randint(3, 10)):  # bursts of near-identical lines seconds apart
                    t = self.at(d)
                    for _ in range(rng.randint(8, 40)):
                        self.emit(f, t, "message", text=rng.choice(texts))
                        t += rng.randint(0, 6)
        if rng.random() < 0.3:
            self.emit(f, self.at(rng.randint(first, last)), "reaction")
