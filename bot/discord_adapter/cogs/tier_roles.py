"""Keeps tier roles in step with the CRM while the bot runs (see roles.py for the rules).

Woken at once when a unit of work here moved a tier, and every ``role_sync_seconds`` otherwise,
for tier changes made elsewhere (LINE, imports, the decay job). A failed pass is logged and the
next one retries: the outbox rows stay unmarked until a pass has acted on them.
"""

from __future__ import annotations

import asyncio
import logging

from discord.ext import commands

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.roles import sync_pending_roles
from bot.wake import sleep_until_set

log = logging.getLogger(__name__)


class TierRoles(commands.Cog):
    """The role-sync loop."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        if not self.bot.config.tier_role_ids:
            return
        self.bot.on_tier_moves.append(self._wake.set)
        self._task = self.bot.background(self._run(), "superfan-tier-roles")

    async def cog_unload(self) -> None:
        if self._wake.set in self.bot.on_tier_moves:
            self.bot.on_tier_moves.remove(self._wake.set)
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        await self.bot.wait_until_ready()
        while not self.bot.is_closed():
            self._wake.clear()
            try:
                report = await sync_pending_roles(self.bot, self.bot.crm)
                if report.added or report.removed or report.failed:
                    log.info("tier roles synced: %d added, %d removed, %d failed",
                             report.added, report.removed, report.failed)
            except Exception:
                log.exception("tier role sync failed; retrying in %.0fs", self.bot.config.role_sync_seconds)
            await sleep_until_set(self._wake, self.bot.config.role_sync_seconds)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(TierRoles(bot))
