"""The fan card for staff: ``/fan member:@someone``, ``/fan query:name`` and the "View fan" menu.

Answered within Discord's 3-second window: the card comes from a handful of indexed queries
(tens of milliseconds), and :func:`~bot.discord_adapter.replies.answer` defers if it is ever slower.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._staff import StaffCog, Target, target_fan
from bot.discord_adapter.localise import text
from bot.discord_adapter.permissions import require_staff
from bot.discord_adapter.render import fan_card
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from crm.profiles import fan_documents

RECENT = 10


class FanCard(StaffCog):
    """Look a fan up."""

    def __init__(self, bot: SuperfanBot) -> None:
        super().__init__(bot)
        self.menu = app_commands.ContextMenu(name=text("cmd.view_fan_menu"), callback=self.view_fan)
        self.menu.guild_only = True
        self.menu.add_check(require_staff)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu, guild=self.bot.command_guild)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type, guild=self.bot.command_guild)

    @app_commands.command(name="fan", description=text("cmd.fan"))
    @app_commands.guild_only()
    @app_commands.describe(member=text("cmd.fan_member"), query=text("cmd.fan_query"))
    async def fan(self, interaction: discord.Interaction[SuperfanBot], member: discord.Member | None = None,
                  query: app_commands.Range[str, 1, 100] | None = None) -> None:
        await self.show(interaction, member, query)

    async def view_fan(self, interaction: discord.Interaction[SuperfanBot], member: discord.Member) -> None:
        await self.show(interaction, member, None)

    async def show(self, interaction: discord.Interaction[Any], member: Target | None, query: str | None) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> dict[str, Any] | None:
            fan = await target_fan(self.bot, session, member, query, create=False)
            if fan is None:
                return None
            return (await fan_documents(session, [fan], self.bot.settings, self.bot.now(), interactions=RECENT))[0]

        async def build() -> Reply:
            doc = await self.bot.read(work)
            if doc is None:
                assert member is not None
                return Reply(content=t("discord.fan.no_record", locale, member=member.mention))
            return Reply(embed=fan_card(doc, locale, self.bot.settings.tiers))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(FanCard(bot), guild=bot.command_guild)
