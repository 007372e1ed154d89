"""World builders of :class:`~bot.sandbox.discord_emulator.DiscordEmulator` (guilds, members, invites)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bot.sandbox._discord_objects import (
    DEFAULT_EVERYONE_PERMISSIONS,
    Channel,
    Guild,
    Invite,
    Member,
    Payload,
    Role,
    World,
    iso_now,
)


class WorldBuilders:
    """Mixin of ``DiscordEmulator``: shape the world before the bot connects."""

    world: World

    if TYPE_CHECKING:

        @property
        def bot_user_id(self) -> int: ...

    # --- world builders (call before the bot connects; GUILD_CREATE carries this state) ------
    def add_guild(
        self,
        guild_id: int | None = None,
        name: str = "Test Guild",
        *,
        owner_id: int | None = None,
        everyone_permissions: int | str = DEFAULT_EVERYONE_PERMISSIONS,
    ) -> int:
        """Create a guild with its @everyone role and the bot as a member."""
        guild = Guild(guild_id or self.world.new_id(), name, owner_id)
        guild.roles[guild.id] = Role(guild.id, "@everyone", int(everyone_permissions))
        guild.members[self.bot_user_id] = Member(self.bot_user_id, [], iso_now())
        self.world.guilds[guild.id] = guild
        return guild.id

    def set_owner(self, guild_id: int, user_id: int) -> None:
        """Owners get every permission, which is how Discord satisfies "Manage Guild" for them."""
        self.world.guilds[guild_id].owner_id = user_id

    def add_channel(
        self, guild_id: int, channel_id: int | None = None, name: str = "general", type: int = 0, **extra: Any
    ) -> int:
        """``type``: 0 text, 2 voice, 4 category, 5 news, 15 forum, 11 public thread (pass parent_id)."""
        guild = self.world.guilds[guild_id]
        channel = Channel(
            channel_id or self.world.new_id(), name, type, guild_id, position=len(guild.channels)
        )
        channel.parent_id = extra.get("parent_id")
        guild.channels[channel.id] = channel
        return channel.id

    def add_role(
        self, guild_id: int, role_id: int | None = None, name: str = "role", permissions: int | str = "0"
    ) -> int:
        guild = self.world.guilds[guild_id]
        role = Role(role_id or self.world.new_id(), name, int(permissions), position=len(guild.roles))
        guild.roles[role.id] = role
        return role.id

    def add_member(
        self,
        guild_id: int,
        user_id: int | None = None,
        name: str | None = None,
        roles: Iterable[int] = (),
        bot: bool = False,
        *,
        permissions: int | None = None,
        nick: str | None = None,
        joined_at: str | None = None,
    ) -> int:
        """``permissions`` overrides the computed value sent in interaction ``member.permissions``."""
        user = self.world.user(user_id or self.world.new_id(), name, bot=bot)
        if name:
            user.name = name
        member = Member(user.id, list(roles), joined_at or iso_now(), nick=nick, permissions=permissions)
        self.world.guilds[guild_id].members[user.id] = member
        return user.id

    def add_user(self, user_id: int, name: str | None = None, *, bot: bool = False) -> int:
        """A user outside any guild, e.g. a DM-only contact."""
        return self.world.user(user_id, name, bot=bot).id

    def add_invite(
        self, guild_id: int, code: str, inviter_id: int, uses: int = 0, *, channel_id: int | None = None
    ) -> Payload:
        """An invite for GET /guilds/{g}/invites; ``member_add(via_invite=code)`` bumps ``uses``."""
        guild = self.world.guilds[guild_id]
        channel_id = channel_id or next(c.id for c in guild.channels.values() if c.type == 0)
        invite = Invite(code, guild_id, channel_id, inviter_id, uses)
        guild.invites[code] = invite
        return self.world.invite_payload(invite)

    def set_dms_closed(self, user_id: int, closed: bool = True) -> None:
        """Bot DMs to this user then fail with 403/50007 like a user with DMs disabled."""
        self.world.user(user_id).dms_closed = closed
