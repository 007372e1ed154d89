"""Rate limits of the Discord emulator: per-route buckets with Discord's headers, and the global limit.

Discord answers every limited route with ``X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/-Bucket``
(discord.py reads them and waits before a bucket runs dry) and, past the limit, a 429 whose body
holds ``retry_after`` (discord.py sleeps that long and tries again, five tries in all). Buckets are
per route and per *major parameter* (a channel id): each DM channel has its own 5-per-5-seconds
message bucket, while the global limit (50 requests a second per bot) covers every request.
Windows are fixed, timed by the event loop's clock, so a test can shrink them to milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.sandbox._discord_objects import Payload

#: Discord's own figures (developer docs, "Rate Limits"): 50 requests a second per bot, and a
#: channel takes 5 messages every 5 seconds from one bot.
GLOBAL_PER_SECOND = 50
MESSAGES_PER_CHANNEL = (5, 5.0)


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class _Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    limit: int
    per: float
    bucket: str
    windows: dict[str, _Window] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """Headers every answer on the route carries, and the 429 body when the request is over a limit."""

    headers: dict[str, str]
    limited: Payload | None = None


@dataclass
class RateLimitCounts:
    """What the limits did: requests answered 429 per bucket (``"global"`` for the global limit)."""

    limited: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.limited.values())


class RateLimits:
    """The emulator's limits; none until a test or bench sets them."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._rules: list[_Rule] = []
        self._global: tuple[int, float] | None = None
        self._global_window: _Window | None = None
        self.counts = RateLimitCounts()

    def limit(self, method: str, path: str, limit: int, per: float, *, bucket: str | None = None) -> None:
        """``limit`` requests every ``per`` seconds on ``path`` (a regex; its ``major`` group, if any,
        makes one bucket per value, as Discord does per channel). ``method`` may be ``"POST|PATCH"``."""
        name = bucket or f"{method} {path}"
        self._rules.append(_Rule(frozenset(method.upper().split("|")), re.compile(path), limit, per,
                                 _bucket_hash(name)))

    def limit_globally(self, per_second: int, window: float = 1.0) -> None:
        """At most ``per_second`` requests in any ``window`` seconds, every route together."""
        self._global = (per_second, window)

    def use_discords(self) -> None:
        """Discord's documented limits: the global one and 5 messages per 5 s per channel."""
        self.limit_globally(GLOBAL_PER_SECOND)
        limit, per = MESSAGES_PER_CHANNEL
        self.limit("POST", r"/channels/(?P<major>\d+)/messages", limit, per, bucket="channel-messages")

    def check(self, method: str, path: str) -> Verdict:
        """Count one request; what Discord would add to its answer, or the 429 it would give."""
        now = self._clock()
        limited = self._check_global(now)
        if limited is not None:
            return limited
        for rule in self._rules:
            match = rule.pattern.fullmatch(path)
            if match is None or method not in rule.methods:
                continue
            major = match.groupdict().get("major") or ""
            window = rule.windows.get(major)
            if window is None or now >= window.started + rule.per:
                window = rule.windows[major] = _Window(now)
            reset_after = max(0.0, window.started + rule.per - now)
            headers = {"X-RateLimit-Limit": str(rule.limit), "X-RateLimit-Bucket": rule.bucket,
                       "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                       "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}"}
            if window.used >= rule.limit:
                self._count(rule.bucket)
                headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Scope": "user",
                                "Retry-After": str(math.ceil(reset_after)), "Via": "1.1 google"})
                return Verdict(headers, _body(reset_after, is_global=False))
            window.used += 1
            headers["X-RateLimit-Remaining"] = str(rule.limit - window.used)
            return Verdict(headers)
        return Verdict({})

    def _check_global(self, now: float) -> Verdict | None:
        if self._global is None:
            return None
        per_window, length = self._global
        window = self._global_window
        if window is None or now >= window.started + length:
            window = self._global_window = _Window(now)
        if window.used < per_window:
            window.used += 1
            return None
        self._count("global")
        retry = max(0.001, window.started + length - now)
        headers = {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                   "Retry-After": str(math.ceil(retry)), "Via": "1.1 google"}
        return Verdict(headers, _body(retry, is_global=True))

    def _count(self, bucket: str) -> None:
        self.counts.limited[bucket] = self.counts.limited.get(bucket, 0) + 1


def _body(retry_after: float, *, is_global: bool) -> Payload:
    return {"message": "You are being rate limited.", "retry_after": round(retry_after, 3),
            "global": is_global, "code": 0}


def _bucket_hash(name: str) -> str:
    """A stable opaque id, like Discord's bucket hashes."""
    return hashlib.sha1(name.encode()).hexdigest()[:16]
