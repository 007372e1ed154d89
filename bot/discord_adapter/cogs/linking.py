"""``/link``: a one-time code that joins this Discord account to the fan's LINE record."""

from __future__ import annotations

from datetime import timedelta

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, own_fan_id
from bot.discord_adapter.localise import text
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from crm.fan_actions import issue_link_code

LINK_TTL = timedelta(minutes=10)


class Linking(commands.Cog):
    """Account linking across platforms."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    @app_commands.command(name="link", description=text("cmd.link"))
    async def link(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> str:
            fan_id = await own_fan_id(self.bot, session, interaction.user)
            return await issue_link_code(session, fan_id, platform=PLATFORM, now=self.bot.now(), ttl=LINK_TTL)

        async def build() -> Reply:
            code = await self.bot.transact(work)
            minutes = int(LINK_TTL.total_seconds() // 60)
            return Reply(content=t("discord.link.code", locale, code=code, minutes=minutes))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Linking(bot), guild=bot.command_guild)
