"""``/checkin [code]``: one check-in per local day, or once per meetup with the event's code."""

from __future__ import annotations

from datetime import datetime

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, external_id
from bot.discord_adapter.localise import text
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from bot.writer import Action
from crm.fan_actions import CheckinResult, checkin


def checkin_text(result: CheckinResult, locale: str, code: str | None) -> str:
    key = {"checked_in": "checkin.event_done" if result.event_name else "checkin.done",
           "already": "checkin.event_already" if result.event_name else "checkin.already",
           "unknown_code": "checkin.unknown_code", "opted_out": "checkin.opted_out"}[result.status]
    return t(f"discord.{key}", locale, streak=result.streak, event=result.event_name or "", code=code or "")


class Checkin(commands.Cog):
    """Daily and event check-ins."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    @app_commands.command(name="checkin", description=text("cmd.checkin"))
    @app_commands.describe(code=text("cmd.checkin_code"))
    async def checkin(self, interaction: discord.Interaction[SuperfanBot],
                      code: app_commands.Range[str, 1, 32] | None = None) -> None:
        locale, user = locale_of(interaction), interaction.user

        async def work(session: AsyncSession, now: datetime) -> CheckinResult:
            return await checkin(session, self.bot.settings, platform=PLATFORM, external_id=external_id(user),
                                 display_name=user.display_name, at=interaction.created_at, now=now,
                                 source_event_id=str(interaction.id), code=code)

        async def build() -> Reply:
            # the same crm function on the same path as LINE's check-in: an action in the writer's group
            result: CheckinResult = await self.bot.run_action(Action("discord checkin", work))
            return Reply(content=checkin_text(result, locale, code))

        await answer(interaction, build)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Checkin(bot), guild=bot.command_guild)
