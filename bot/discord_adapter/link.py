"""``superfan run``'s hold on the Discord bot: a Discord outage at start-up does not stop LINE.

The process serves LINE webhooks and Discord on one loop. Were a failed Discord connection at
start fatal, a machine that boots before its network is up, or a Discord outage, would take
LINE intake down with it. So a *transient* failure (Discord unreachable, answering 5xx, or not
ready in time) is logged and retried in the background, with growing pauses, while everything
else runs; ``/healthz`` reports Discord as a problem until it connects. A failure that needs a
fix (a rejected token, privileged intents not enabled) still stops start-up with its
explanation. Once connected, discord.py's own reconnect takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from bot.discord_adapter.client import DiscordHandle, DiscordStartError, start_discord
from bot.discord_adapter.roles import RoleReport
from bot.writer import GroupWriter

if TYPE_CHECKING:
    from bot.app import Crm

log = logging.getLogger(__name__)

#: Pauses between attempts after a transient failure; the last one repeats.
RETRY_DELAYS: Sequence[float] = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
Starter = Callable[..., Awaitable[DiscordHandle]]


class DiscordLink:
    """Starts the bot, keeps trying after transient failures, and closes whatever it started."""

    def __init__(self, crm: Crm, writer: GroupWriter | None = None, *,
                 delays: Sequence[float] | None = None, starter: Starter = start_discord) -> None:
        self._crm = crm
        self._writer = writer
        self._delays = tuple(delays if delays is not None else RETRY_DELAYS)
        self._starter = starter
        self.handle: DiscordHandle | None = None
        self.attempts = 0
        self._problem: str | None = None
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect now; raise :class:`DiscordStartError` only for a failure that needs a fix."""
        if not await self._attempt():
            self._retrying = asyncio.create_task(self._keep_trying(), name="superfan-discord-retry")

    async def _attempt(self) -> bool:
        self.attempts += 1
        try:
            self.handle = await self._starter(self._crm, writer=self._writer)
        except DiscordStartError as exc:
            self._problem = str(exc)
            if not exc.transient:
                raise
            log.warning("Discord: %s; LINE and the web app keep running, Discord is retried", exc)
            return False
        self._problem = None
        if self.attempts > 1:
            log.info("Discord connected after %d attempts", self.attempts)
        return True

    async def _keep_trying(self) -> None:
        for delay in itertools.chain(self._delays, itertools.repeat(self._delays[-1] if self._delays else 300.0)):
            await asyncio.sleep(delay)
            try:
                if await self._attempt():
                    return
            except DiscordStartError as exc:
                log.error("Discord: %s (not retrying until superfan is restarted)", exc)
                return

    async def health(self) -> str | None:
        """``/healthz``: nothing when the bot is connected, else why it is not."""
        if self.handle is None:
            return f"not connected: {self._problem}" if self._problem else "not connected"
        if self.handle.task.done():
            return "stopped (the log says why)"
        client = self.handle.client
        return None if client.is_ready() and not client.is_closed() else "reconnecting"

    async def reconcile_roles(self) -> RoleReport | None:
        """The scheduled role reconcile; skipped while Discord is not connected (the next run catches up)."""
        if self.handle is None:
            return None
        return await self.handle.reconcile_roles()

    async def close(self, timeout: float = 10.0) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None
        if self.handle is not None:
            await self.handle.close(timeout)
