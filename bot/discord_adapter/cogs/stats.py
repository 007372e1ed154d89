"""``/stats`` for staff: fans per tier, progress to the true-fans goal, the top fans."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._staff import StaffCog
from bot.discord_adapter.localise import text
from bot.discord_adapter.render import stats_embed
from bot.discord_adapter.replies import Reply, answer, locale_of
from crm.stats import community_stats

TOP = 10


class Stats(StaffCog):
    """Community figures."""

    @app_commands.command(name="stats", description=text("cmd.stats"))
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> dict[str, Any]:
            return await community_stats(session, self.bot.settings, self.bot.now(), top=TOP)

        async def build() -> Reply:
            figures = await self.bot.read(work)
            return Reply(embed=stats_embed(figures, locale, self.bot.settings.tiers))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Stats(bot), guild=bot.command_guild)
