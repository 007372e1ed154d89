"""What staff commands share: the staff check and finding the fan a command is about."""

from __future__ import annotations

from typing import Any

import discord
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import existing_fan, own_fan_id
from bot.discord_adapter.errors import Refusal
from bot.discord_adapter.permissions import require_staff
from crm.identity import find_fan
from crm.models import Fan

Target = discord.Member | discord.User


class StaffCog(commands.Cog):
    """A cog whose every command is refused to non-staff before its body runs."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await require_staff(interaction)


async def target_fan(bot: SuperfanBot, session: AsyncSession, member: Target | None, query: str | None, *,
                     create: bool) -> Fan | None:
    """The fan a staff command names: a member (created on demand when ``create``) or a query
    (id, ``line:U…``, name; unknown or ambiguous raise the CRM's errors)."""
    if member is not None:
        if member.bot:
            raise Refusal("staff.bot_target")
        if create:
            return await session.get(Fan, await own_fan_id(bot, session, member))
        return await existing_fan(session, member)
    if query and query.strip():
        return await find_fan(session, query)
    raise Refusal("staff.need_target")


def author(interaction: discord.Interaction[Any]) -> str:
    """How staff actions are attributed in notes, pins and logs."""
    return f"{interaction.user.display_name} (discord:{interaction.user.id})"
