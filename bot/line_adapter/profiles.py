"""LINE display names, asked for by one background worker, never on the way to a webhook's 200.

A new fan is stored under ``line:…abcd`` and acknowledged at once; the name follows. One worker
per process does the asking: woken when the adapter stores events of LINE users, it takes the
users whose name is due in batches, asks LINE's profile API for them at a limited rate (a few at
a time; slower while the writer has webhook work queued, see ``BUSY_RATE``), and stores the names
with one writer action per second or so of answers, so a burst
of 10,000 new fans costs the writer a handful of small transactions, not 10,000.

What is due comes from the database (``identities.profile_refreshed_at``, see
:mod:`crm.display_names`): at start, and every few minutes, the worker pages through LINE users
nobody has looked up yet, so a restart resumes where the last run stopped. The users the adapter
reports are only hints for what to look at first (and for names older than the refresh
interval); losing them loses nothing. Opted-out and erased fans are never looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

import aiohttp
from linebot.v3.messaging import ApiException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.line_adapter.commands import PLATFORM
from bot.line_adapter.sender import LineSender, mask
from bot.wake import sleep_until_set
from bot.write_failures import WriterClosed, brief
from bot.writer import Action, GroupWriter, Rejected
from crm.clock import Clock, utcnow
from crm.display_names import never_fetched, profiles_due, refresh_profiles
from crm.settings import CrmSettings

log = logging.getLogger(__name__)

#: LINE's documented limit for the profile endpoint (one of "other API endpoints"), per channel.
RATE_CEILING = 2000.0
#: Users read from the database per step, and at most this many looked up before the next read.
BATCH = 500
#: Every this often the worker looks in the database for users nobody looked up (a missed hint,
#: a failed fetch, another process's fans).
RESCAN_EVERY_S = 300.0
#: Hints kept at most; past it they are dropped and the database says who is due.
MAX_HINTS = 50_000
#: Users remembered as fresh (not due before a time) at most; past it the memory starts afresh.
MAX_FRESH = 200_000
#: While the writer has work queued, storing names waits (polling this often), at most QUIET_MAX_S.
QUIET_POLL_S = 0.02
QUIET_MAX_S = 5.0
#: While the writer has webhook work queued (a burst), lookups slow to this many a second: the
#: fans' events are acknowledged first, and the names catch up at the full rate once it passes.
BUSY_RATE = 10.0
#: A failed pass (database unreachable, say) is tried again after this long.
RETRY_PASS_S = 5.0
REQUEST_TIMEOUT_S = 10.0

_FAILED = object()


class RateLimit:
    """At most ``per_second`` starts a second, evenly spaced; :meth:`hold` pauses everyone (a 429)."""

    def __init__(self, per_second: float, *, monotonic: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.interval = 1.0 / per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = float("-inf")

    async def wait(self) -> None:
        """Return when the caller may start one request."""
        now = self._monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self._sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """Nobody starts before ``seconds`` from now (LINE said 429, with or without Retry-After)."""
        self._next = max(self._next, self._monotonic() + seconds)


class Profiles:
    """The one worker that keeps LINE display names: see the module docstring.

    ``noticed`` is what the webhook calls (cheap, in memory); ``start``/``close`` run the worker;
    ``settle`` waits until it has nothing left to do (shutdown, tests).
    """

    def __init__(self, sender: LineSender, writer: GroupWriter, sessions: async_sessionmaker[AsyncSession],
                 settings: CrmSettings, *, refresh: timedelta = timedelta(hours=24), clock: Clock = utcnow,
                 rate: float = 100.0, flush_every: float = 1.0, fetchers: int = 4, batch: int = BATCH,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sender = sender
        self._writer = writer
        self._sessions = sessions  # read-only: choosing whom to ask never waits for, or holds up, the writer
        self._settings = settings
        self._refresh = refresh
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        if not 0 < rate <= RATE_CEILING:
            log.warning("LINE: %g profile requests a second is outside (0, %g]; using %g",
                        rate, RATE_CEILING, min(max(rate, 1.0), RATE_CEILING))
            rate = min(max(rate, 1.0), RATE_CEILING)
        self._limit = RateLimit(rate, monotonic=monotonic, sleep=sleep)
        self._busy_limit = RateLimit(min(rate, BUSY_RATE), monotonic=monotonic, sleep=sleep)
        self._batch = batch
        self._chunk = max(1, min(batch, int(rate * flush_every)))  # about flush_every seconds of answers
        self._fetchers = max(1, fetchers)
        self._hints: set[str] = set()
        self._fresh_until: dict[str, datetime] = {}
        self._scan_from: int | None = 0  # an identity id: look for never-fetched users past it
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.fetched = 0  # profiles LINE answered
        self.stores = 0  # writer actions that stored them

    def noticed(self, user_ids: Iterable[str]) -> None:
        """Users whose events were just stored: look at the ones not known to be fresh, soon."""
        now = self._clock()
        added = False
        for user_id in user_ids:
            until = self._fresh_until.get(user_id)
            if until is None or until <= now:
                self._hints.add(user_id)
                added = True
        if len(self._hints) > MAX_HINTS:  # a burst outran the worker: the database knows who is new
            self._hints.clear()
            self._scan_from = 0
        if added:
            self._idle.clear()
            self._wake.set()

    async def start(self) -> None:
        """Start the worker; its first pass finds whoever a previous run left without a name."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="line-profiles")

    async def close(self) -> None:
        """Stop the worker; names fetched but not stored are asked for again after the restart."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self) -> None:
        """Wait until every user noticed so far has been looked at (run the work here if no worker)."""
        if self._closed:
            return
        if self._task is None:
            await self._pass()
        elif not self._task.done():
            await self._idle.wait()

    async def refresh(self, user_id: str) -> None:
        """Look this user up now if their name is due, and wait until that is done."""
        self.noticed([user_id])
        await self.settle()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._pass()
            except WriterClosed:
                return
            except Exception as exc:  # names are cosmetic: say so, and try again later
                log.warning("LINE: looking up profiles failed: %s", brief(exc))
                self._idle.set()
                await asyncio.sleep(RETRY_PASS_S)
                continue
            if self._wake.is_set():
                continue
            self._idle.set()
            if not await sleep_until_set(self._wake, RESCAN_EVERY_S):
                self._scan_from = 0

    async def _pass(self) -> None:
        while users := await self._next_batch():
            for start in range(0, len(users), self._chunk):
                await self._fetch_and_store(users[start : start + self._chunk])

    async def _next_batch(self) -> list[str]:
        """Up to ``batch`` users to look up: never-fetched ones from the database first, then hints."""
        now = self._clock()
        async with self._sessions() as session:
            if self._scan_from is not None:
                rows = await never_fetched(session, PLATFORM, after_id=self._scan_from, limit=self._batch)
                if rows:
                    self._scan_from = rows[-1][0]
                    return [external_id for _, external_id in rows]
                self._scan_from = None
            while self._hints:
                take = [self._hints.pop() for _ in range(min(self._batch, len(self._hints)))]
                due = await profiles_due(session, PLATFORM, take, now, self._refresh)
                # Not due: fresh or opted out. No identity: nothing to name yet (asked again on the next event).
                self._remember_fresh([u for u, wanted in due.items() if not wanted], now)
                wanted = [u for u, wanted in due.items() if wanted]
                if wanted:
                    return wanted
        return []

    async def _fetch_and_store(self, users: list[str]) -> None:
        names = await self._fetch_all(users)
        if not names:
            return
        started = self._monotonic()
        while self._writer.pending and self._monotonic() - started < QUIET_MAX_S:
            await self._sleep(QUIET_POLL_S)  # the webhook's commits first
        try:
            [outcome] = await self._writer.submit([Action("line profiles", _stored(names, self._settings),
                                                          ordered=False)])
            if isinstance(outcome, Rejected):
                raise RuntimeError(outcome.reason)
        except WriterClosed:
            raise
        except Exception as exc:  # not stored: the next event (or the next scan) asks again
            log.warning("LINE: refreshing %d profiles failed: %s", len(names), brief(exc))
            return
        self.stores += 1
        self._remember_fresh(names, self._clock())
        log.debug("LINE: %d profiles refreshed", len(names))

    async def _fetch_all(self, users: list[str]) -> dict[str, str | None]:
        """Ask LINE for each user's profile, ``fetchers`` at a time, within the rate limit."""
        answers: dict[str, str | None] = {}
        waiting = list(reversed(users))

        async def fetcher() -> None:
            while waiting:
                user_id = waiting.pop()
                await self._limit.wait()
                if self._writer.pending:  # intake is busy: give way to it
                    await self._busy_limit.wait()
                name = await self._fetch(user_id)
                if name is not _FAILED:
                    answers[user_id] = name  # type: ignore[assignment]

        await asyncio.gather(*(fetcher() for _ in range(min(self._fetchers, len(users)))))
        self.fetched += len(answers)
        return answers

    async def _fetch(self, user_id: str) -> str | None | object:
        """The display name; None when LINE has no profile to give (404); ``_FAILED`` to ask again later."""
        try:
            profile = await self._sender.api.get_profile(user_id, _request_timeout=REQUEST_TIMEOUT_S)
            return str(profile.display_name)
        except ApiException as exc:
            if exc.status == 404:  # not a friend, or blocked us: nothing to ask for until the interval
                return None
            if exc.status == 429:
                self._limit.hold(_retry_after(exc))
            log.warning("LINE profile of %s unavailable: %s", mask(user_id), exc.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("LINE profile of %s unavailable: %s", mask(user_id), type(exc).__name__)
        return _FAILED

    def _remember_fresh(self, users: Iterable[str], now: datetime) -> None:
        if len(self._fresh_until) > MAX_FRESH:
            self._fresh_until.clear()
        until = now + self._refresh
        for user_id in users:
            self._fresh_until[user_id] = until


def _retry_after(exc: ApiException) -> float:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(1.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


def _stored(names: dict[str, str | None], settings: CrmSettings) -> Callable[[AsyncSession, datetime], Awaitable[None]]:
    """The writer action storing fetched names (the CRM leaves unknown, erased and opted-out fans alone)."""

    async def run(session: AsyncSession, now: datetime) -> None:
        await refresh_profiles(session, settings, platform=PLATFORM, names=names, now=now)

    return run
