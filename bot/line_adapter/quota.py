"""The LINE monthly message quota: pushes and multicasts cost, replies are free.

LINE itself is the source of truth (it counts every recipient of a push or multicast in the
calendar month), so the book starts each month from LINE's own consumption figure and counts
locally from there: a restart does not forget what was spent, and a send that would pass the
configured quota is refused *before* it is made, with a message staff can act on. The figure is
read again every :data:`RESEED_SECONDS` before a send, because superfan is not the only sender:
a creator's broadcast from LINE Official Account Manager spends the same quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from crm.clock import Clock, utcnow
from crm.errors import CrmError

log = logging.getLogger(__name__)

#: How old LINE's consumption figure may be before a send reads it again.
RESEED_SECONDS = 600.0


class QuotaExceeded(CrmError):
    """A push or multicast would pass ``[line] monthly_quota``; nothing was sent."""

    def __init__(self, needed: int, used: int, quota: int, month: str) -> None:
        super().__init__(
            f"LINE monthly message quota reached: {used}/{quota} used in {month}, this send needs {needed}. "
            "Nothing was sent. Reply within the reply-token window (free), wait for next month, "
            "or raise [line] monthly_quota if your plan allows more.",
            code="line.quota_reached", needed=needed, used=used, quota=quota, month=month,
        )
        self.needed, self.used, self.quota, self.month = needed, used, quota, month


class QuotaBook:
    """Reserve before sending, release if LINE refused; one lock so concurrent sends cannot overspend."""

    def __init__(self, quota: int, timezone: str, consumption: Callable[[], Awaitable[int]], *,
                 clock: Clock = utcnow) -> None:
        self.quota = quota
        self._tz = ZoneInfo(timezone)
        self._consumption = consumption
        self._clock = clock
        self._month: str | None = None
        self._seeded_at: datetime | None = None
        self.used = 0
        self._lock = asyncio.Lock()

    def _month_of(self, at: datetime) -> str:
        return at.astimezone(self._tz).strftime("%Y-%m")

    async def reserve(self, recipients: int) -> None:
        """Count ``recipients`` messages against this month, or raise :class:`QuotaExceeded`."""
        async with self._lock:
            now = self._clock()
            month = self._month_of(now)
            if month != self._month:
                self._month, self._seeded_at = month, now
                self.used = await self._seed()
            elif self._seeded_at is None or (now - self._seeded_at).total_seconds() >= RESEED_SECONDS:
                self._seeded_at = now  # others' sends (a broadcast from LINE's console) count too
                self.used = max(self.used, await self._seed())
            if self.used + recipients > self.quota:
                raise QuotaExceeded(recipients, self.used, self.quota, month)
            self.used += recipients

    def release(self, recipients: int) -> None:
        """LINE definitely did not send (a 4xx): give the reservation back."""
        self.used = max(0, self.used - recipients)

    @property
    def remaining(self) -> int:
        return max(0, self.quota - self.used)

    async def _seed(self) -> int:
        try:
            return max(0, int(await self._consumption()))
        except Exception as exc:
            log.warning("LINE quota: could not read this month's consumption (%s); counting from 0",
                        type(exc).__name__)
            return 0
