"""``/prefs add|remove|list``: topics a fan says they care about (drops can target them)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import existing_fan, own_fan_id
from bot.discord_adapter.localise import text
from bot.discord_adapter.render import topics_text
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from crm.profiles import PREFERENCE_SOURCES
from crm.topics import add_topic, remove_topic, topics

Topic = app_commands.Range[str, 1, 64]


class Preferences(commands.Cog):
    """A fan's declared preferences."""

    prefs = app_commands.Group(name="prefs", description=text("cmd.prefs"))

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    @prefs.command(name="add", description=text("cmd.prefs_add"))
    @app_commands.describe(topic=text("cmd.prefs_topic"))
    async def add(self, interaction: discord.Interaction[SuperfanBot], topic: Topic) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> str:
            fan_id = await own_fan_id(self.bot, session, interaction.user)
            return await add_topic(session, fan_id, topic, source="fan", now=self.bot.now())

        async def build() -> Reply:
            return Reply(content=t("discord.prefs.added", locale, topic=await self.bot.transact(work)))

        await answer(interaction, build)

    @prefs.command(name="remove", description=text("cmd.prefs_remove"))
    @app_commands.describe(topic=text("cmd.prefs_topic"))
    async def remove(self, interaction: discord.Interaction[SuperfanBot], topic: Topic) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> bool:
            fan = await existing_fan(session, interaction.user)
            return fan is not None and await remove_topic(session, fan.id, topic, source="fan")

        async def build() -> Reply:
            key = "prefs.removed" if await self.bot.transact(work) else "prefs.not_there"
            return Reply(content=t(f"discord.{key}", locale, topic=topic))

        await answer(interaction, build)

    @prefs.command(name="list", description=text("cmd.prefs_list"))
    async def list_(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> list[str]:
            fan = await existing_fan(session, interaction.user)
            return [] if fan is None else await topics(session, fan.id, sources=PREFERENCE_SOURCES)

        async def build() -> Reply:
            found = await self.bot.read(work)
            return Reply(content=topics_text(t("discord.prefs.title", locale), found, locale)
                         + "\n" + t("discord.prefs.hint", locale))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Preferences(bot), guild=bot.command_guild)
