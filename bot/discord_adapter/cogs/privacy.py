"""``/me``, ``/optout`` and ``/forget-me``: a fan's rights over their data (Taiwan PDPA, GDPR).

``/me`` shows everything the fan card holds, staff tags and notes included, because the right of
access covers them. ``/forget-me`` asks for a button press first and then erases the fan record
with every linked account (LINE too) and removes the tier roles; anything the member does in the
server afterwards starts a new record, which ``/optout`` prevents.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import existing_fan, own_fan_id
from bot.discord_adapter.errors import ReportingView
from bot.discord_adapter.localise import text
from bot.discord_adapter.render import fan_card
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.discord_adapter.roles import clear_roles
from bot.i18n import t
from crm.privacy import Forgotten, forget_fan, set_opt_out
from crm.profiles import fan_documents

log = logging.getLogger(__name__)
CONFIRM_SECONDS = 120.0


class ForgetMe(ReportingView):
    """Confirm / cancel buttons for ``/forget-me``; only the member who asked can press them."""

    def __init__(self, bot: SuperfanBot, user_id: int, locale: str) -> None:
        super().__init__(timeout=CONFIRM_SECONDS)
        self.bot, self.user_id, self.locale = bot, user_id, locale
        self.confirm.label = t("discord.forget.confirm", locale)
        self.cancel.label = t("discord.forget.cancel", locale)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(style=discord.ButtonStyle.danger, custom_id="superfan:forget-me:confirm")
    async def confirm(self, interaction: discord.Interaction[SuperfanBot], button: discord.ui.Button[ForgetMe]) -> None:
        async def work(session: AsyncSession) -> Forgotten | None:
            fan = await existing_fan(session, interaction.user)
            return None if fan is None else await forget_fan(session, self.bot.crm.settings, fan.id, self.bot.now())

        forgotten = await self.bot.transact(work)
        self.stop()
        key = ("forget.nothing" if forgotten is None else
               "forget.done_kept_opt_out" if forgotten.kept_opt_out else "forget.done")
        await interaction.response.edit_message(content=t(f"discord.{key}", self.locale), view=None)
        log.info("member %s erased their fan record (%d rows)", interaction.user.id,
                 0 if forgotten is None else forgotten.rows)
        if isinstance(interaction.user, discord.Member):
            await clear_roles(interaction.user, self.bot.crm)

    @discord.ui.button(style=discord.ButtonStyle.secondary, custom_id="superfan:forget-me:cancel")
    async def cancel(self, interaction: discord.Interaction[SuperfanBot], button: discord.ui.Button[ForgetMe]) -> None:
        self.stop()
        await interaction.response.edit_message(content=t("discord.forget.cancelled", self.locale), view=None)


class Privacy(commands.Cog):
    """See, stop and erase what is stored about me."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    @app_commands.command(name="me", description=text("cmd.me"))
    async def me(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> dict | None:
            fan = await existing_fan(session, interaction.user)
            if fan is None:
                return None
            return (await fan_documents(session, [fan], self.bot.settings, self.bot.now(), interactions=10))[0]

        async def build() -> Reply:
            doc = await self.bot.read(work)
            if doc is None:
                return Reply(content=t("discord.me.nothing", locale))
            return Reply(content=t("discord.me.intro", locale),
                         embed=fan_card(doc, locale, self.bot.settings.tiers, for_fan=True))

        await answer(interaction, build)

    @app_commands.command(name="optout", description=text("cmd.optout"))
    @app_commands.describe(resume=text("cmd.optout_resume"))
    async def optout(self, interaction: discord.Interaction[SuperfanBot], resume: bool = False) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> None:
            await set_opt_out(session, await own_fan_id(self.bot, session, interaction.user), not resume)

        async def build() -> Reply:
            await self.bot.transact(work)
            return Reply(content=t("discord.optout.resumed" if resume else "discord.optout.done", locale))

        await answer(interaction, build)

    @app_commands.command(name="forget-me", description=text("cmd.forget_me"))
    async def forget_me(self, interaction: discord.Interaction[SuperfanBot]) -> None:
        locale = locale_of(interaction)
        await interaction.response.send_message(t("discord.forget.ask", locale), ephemeral=True,
                                                view=ForgetMe(self.bot, interaction.user.id, locale))


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Privacy(bot), guild=bot.command_guild)
