"""``/ref``: a fan's personal referral code; ``/ref use:CODE`` credits whoever brought you.

One command rather than a ``/ref`` group because Discord cannot run a group by itself: ``/ref``
alone shows the code, and the ``use`` option (typed as ``/ref use: CODE``) redeems one.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, external_id, own_fan_id
from bot.discord_adapter.localise import text
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from crm.fan_actions import redeem_referral, referral_code
from crm.models import Fan


class Referrals(commands.Cog):
    """Referral codes."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    @app_commands.command(name="ref", description=text("cmd.ref"))
    @app_commands.describe(use=text("cmd.ref_use"))
    async def ref(self, interaction: discord.Interaction[SuperfanBot],
                  use: app_commands.Range[str, 1, 32] | None = None) -> None:
        locale, user = locale_of(interaction), interaction.user

        async def mine(session: AsyncSession) -> str:
            return await referral_code(session, await own_fan_id(self.bot, session, user))

        async def redeem(session: AsyncSession) -> str:
            assert use is not None
            owner = await redeem_referral(session, self.bot.settings, use, platform=PLATFORM,
                                          external_id=external_id(user), display_name=user.display_name,
                                          at=interaction.created_at, now=self.bot.now(),
                                          source_event_id=str(interaction.id))
            fan = await session.get(Fan, owner)
            return fan.display_name if fan else "?"

        async def build() -> Reply:
            if use is None:
                code = await self.bot.transact(mine)
                return Reply(content=t("discord.ref.mine", locale, code=code))
            name = await self.bot.transact(redeem)
            self.bot.tiers_moved()
            return Reply(content=t("discord.ref.used", locale, name=discord.utils.escape_markdown(name)))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Referrals(bot), guild=bot.command_guild)
