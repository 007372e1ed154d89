"""LINE display names, from the profile API, refreshed at most once per interval per user.

Fetching a profile takes a round trip to LINE, so it never delays a webhook's 200: events are
stored first (a new fan is briefly ``line:…abcd``) and the name follows in the background. The
last refresh time is kept by the CRM (:func:`crm.identity.profile_due` /
:func:`crm.identity.refresh_profile`), so a restart does not refetch everyone; opted-out and
erased fans are never looked up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.line_adapter.commands import PLATFORM
from bot.line_adapter.sender import LineSender, mask
from bot.writer import Action, GroupWriter
from crm.clock import Clock, utcnow
from crm.identity import profile_due, refresh_profile
from crm.settings import CrmSettings

log = logging.getLogger(__name__)


class Profiles:
    """Keeps LINE display names fresh without asking LINE more than once a day per fan."""

    def __init__(self, sender: LineSender, writer: GroupWriter, sessions: async_sessionmaker[AsyncSession],
                 settings: CrmSettings, *, refresh: timedelta = timedelta(hours=24), clock: Clock = utcnow,
                 concurrency: int = 4) -> None:
        self._sender = sender
        self._writer = writer
        self._sessions = sessions
        self._settings = settings
        self._refresh = refresh
        self._clock = clock
        self._checked: dict[str, datetime] = {}
        self._busy: set[str] = set()
        self._limit = asyncio.Semaphore(concurrency)
        self.fetched = 0

    def due(self, user_id: str) -> bool:
        """Cheap, in-memory: is this user worth a look (not checked within the interval, not in flight)?"""
        if user_id in self._busy:
            return False
        checked = self._checked.get(user_id)
        return checked is None or self._clock() - checked >= self._refresh

    async def refresh(self, user_id: str) -> None:
        """Fetch and store the user's display name if the stored one is older than the interval."""
        if not self.due(user_id):
            return
        self._busy.add(user_id)
        try:
            async with self._limit:
                await self._refresh_one(user_id)
        finally:
            self._busy.discard(user_id)

    async def _refresh_one(self, user_id: str) -> None:
        now = self._clock()
        async with self._sessions() as session:
            due = await profile_due(session, PLATFORM, user_id, now, self._refresh)
        if due is None:  # no fan yet (a command from someone never seen): look again on their next event
            return
        self._checked[user_id] = now
        if not due:
            return
        profile = await self._sender.profile(user_id)
        if profile is None:
            return
        self.fetched += 1
        await self._writer.submit([Action("line profile", _store(user_id, profile.display_name, self._settings),
                                          ordered=False)])
        log.debug("LINE profile of %s refreshed", mask(user_id))


def _store(user_id: str, name: str, settings: CrmSettings) -> Callable[[AsyncSession, datetime], Awaitable[None]]:
    """The writer action storing a fetched name (the CRM leaves unknown, erased and opted-out fans alone)."""

    async def run(session: AsyncSession, now: datetime) -> None:
        await refresh_profile(session, settings, platform=PLATFORM, external_id=user_id, display_name=name,
                              now=now)

    return run
