"""LINE display names, from the profile API, refreshed at most once per interval per user.

Fetching a profile takes a round trip to LINE, so it never delays a webhook's 200: events are
stored first (a new fan is briefly ``line:…abcd``) and the name follows in the background. The
last refresh time is kept by the CRM (:func:`crm.identity.profiles_due` /
:func:`crm.identity.refresh_profiles`), so a restart does not refetch everyone; opted-out and
erased fans are never looked up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from linebot.v3.messaging import UserProfileResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.line_adapter.commands import PLATFORM
from bot.line_adapter.sender import LineSender
from bot.writer import Action, GroupWriter, WriterClosed, brief
from crm.clock import Clock, utcnow
from crm.identity import profiles_due, refresh_profiles
from crm.settings import CrmSettings

log = logging.getLogger(__name__)


class Profiles:
    """Keeps LINE display names fresh without asking LINE more than once a day per fan.

    A burst of new fans asks for many profiles at once, and each costs as much as storing a dozen
    events. So users waiting for a refresh are taken in batches: one read says which are due, the
    profiles are fetched (a few at a time), and the names are stored by one writer action of a
    few set-based statements. Users asked for while a batch runs go in the next one.
    """

    def __init__(self, sender: LineSender, writer: GroupWriter, sessions: async_sessionmaker[AsyncSession],
                 settings: CrmSettings, *, refresh: timedelta = timedelta(hours=24), clock: Clock = utcnow,
                 concurrency: int = 4) -> None:
        self._sender = sender
        self._writer = writer
        self._sessions = sessions  # read-only: the due check must never wait for, or hold up, the writer
        self._settings = settings
        self._refresh = refresh
        self._clock = clock
        self._checked: dict[str, datetime] = {}
        self._wanted: set[str] = set()  # asked for, not yet taken by a batch
        self._busy: set[str] = set()  # in the running batch
        self._batch: asyncio.Future[None] | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self.fetched = 0

    def due(self, user_id: str) -> bool:
        """Cheap, in-memory: is this user worth a look (not checked within the interval, not in flight)?"""
        if user_id in self._busy or user_id in self._wanted:
            return False
        checked = self._checked.get(user_id)
        return checked is None or self._clock() - checked >= self._refresh

    async def refresh(self, user_id: str) -> None:
        """Fetch and store the user's display name if the stored one is older than the interval;
        returns once the batch that took the user is done."""
        if not self.due(user_id):
            return
        self._wanted.add(user_id)
        while user_id in self._wanted:
            if self._batch is None:
                self._batch = asyncio.ensure_future(self._run_batch())
            await asyncio.shield(self._batch)

    async def _run_batch(self) -> None:
        users, self._wanted = self._wanted, set()
        self._busy = users
        try:
            await self._refresh_all(sorted(users))
        except WriterClosed:
            log.debug("LINE: %d profile refreshes dropped at shutdown", len(users))
        except Exception as exc:  # names are cosmetic: whoever was not stored is asked for again on their next event
            log.warning("LINE: refreshing %d profiles failed: %s", len(users), brief(exc))
        finally:
            self._busy = set()
            self._batch = None

    async def _refresh_all(self, users: list[str]) -> None:
        now = self._clock()
        async with self._sessions() as session:
            due = await profiles_due(session, PLATFORM, users, now, self._refresh)
        # No fan yet (a command from someone never seen): not marked, so their next event asks again.
        self._checked.update(dict.fromkeys(due, now))
        fetch = [user_id for user_id, wanted in due.items() if wanted]
        profiles = await asyncio.gather(*map(self._fetch, fetch))
        names = {user_id: p.display_name for user_id, p in zip(fetch, profiles, strict=True) if p is not None}
        if not names:
            return
        self.fetched += len(names)
        try:
            await self._writer.submit([Action("line profiles", _stored(names, self._settings), ordered=False)])
        except BaseException:
            for user_id in names:  # not stored: their next event asks again, not a day later
                self._checked.pop(user_id, None)
            raise
        log.debug("LINE: %d profiles refreshed", len(names))

    async def _fetch(self, user_id: str) -> UserProfileResponse | None:
        async with self._limit:
            return await self._sender.profile(user_id)


def _stored(names: dict[str, str], settings: CrmSettings) -> Callable[[AsyncSession, datetime], Awaitable[None]]:
    """The writer action storing fetched names (the CRM leaves unknown, erased and opted-out fans alone)."""

    async def run(session: AsyncSession, now: datetime) -> None:
        await refresh_profiles(session, settings, platform=PLATFORM, names=names, now=now)

    return run
