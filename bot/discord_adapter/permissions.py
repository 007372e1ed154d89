"""Who counts as staff: a member with a configured staff role, or with Manage Server.

Staff commands stay visible to everyone (a creator's helpers rarely have Manage Server, so hiding
them behind Discord's default permissions would hide them from staff too); instead every staff
command runs :func:`require_staff` first, and everyone else gets a polite refusal.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.config import DiscordConfig
from bot.discord_adapter.errors import NotStaff


def is_staff(interaction: discord.Interaction[Any], config: DiscordConfig) -> bool:
    """True for staff of the configured server (any server when ``guild_id`` is 0)."""
    user = interaction.user
    if not isinstance(user, discord.Member) or interaction.guild_id is None:
        return False
    if config.guild_id and interaction.guild_id != config.guild_id:
        return False
    if interaction.permissions.manage_guild or user.guild_permissions.manage_guild:
        return True
    staff_roles = set(config.staff_role_ids)
    return any(role.id in staff_roles for role in user.roles)


async def require_staff(interaction: discord.Interaction[Any]) -> bool:
    """An app-command check: True for staff, else :class:`NotStaff` (the error handler refuses)."""
    if is_staff(interaction, interaction.client.config):
        return True
    raise NotStaff()
