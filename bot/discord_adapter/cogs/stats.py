"""``/stats`` for staff: fans per tier, progress to the true-fans goal, the top fans, and a short
calibration view (score histogram, rising fans; ``superfan tiers`` has the full one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import discord
from discord import app_commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._staff import StaffCog
from bot.discord_adapter.localise import text
from bot.discord_adapter.render import FIELD_MAX, clip, stats_embed
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.tiers_cli import calibration_lines
from crm.settings import CrmSettings
from crm.stats import community_stats
from crm.tier_calibration import calibrate

TOP = 10


async def stats_figures(session: AsyncSession, settings: CrmSettings, now: datetime,
                        locale: str) -> tuple[dict[str, Any], list[str]]:
    """What ``/stats`` reads: the community figures and the short calibration view's lines (the
    creator-scale suite's ``stats`` row times this)."""
    view = await calibrate(session, settings, now)
    return (await community_stats(session, settings, now, top=TOP),
            calibration_lines(view, settings.tiers, locale, short=True))


class Stats(StaffCog):
    """Community figures."""

    @app_commands.command(name="stats", description=text("cmd.stats"))
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> tuple[dict[str, Any], list[str]]:
            return await stats_figures(session, self.bot.settings, self.bot.now(), locale)

        async def build() -> Reply:
            figures, calibration = await self.bot.read(work)
            embed = stats_embed(figures, locale, self.bot.settings.tiers)
            body = clip((line.replace("`", "'") for line in calibration[1:]), FIELD_MAX - 8)
            embed.add_field(name=calibration[0], inline=False, value=f"```\n{body}\n```")
            return Reply(embed=embed)

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Stats(bot), guild=bot.command_guild)
