"""In-memory world of the Discord emulator and the payload shapes discord.py parses.

Field sets follow what discord.py 2.7 reads with ``data[...]`` (hard requirements) plus the
``data.get`` fields whose absence would change behaviour (``flags``, ``member_count``...).
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.sandbox._discord_gateway import InteractionHandle

DISCORD_EPOCH_MS = 1420070400000
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = discord.Permissions.all().value
# Discord's historical default for @everyone: view/send/read history/reactions, no MANAGE_GUILD.
DEFAULT_EVERYONE_PERMISSIONS = 104324673
THREAD_TYPES = (10, 11, 12)
EDITABLE = ("content", "embeds", "components", "flags", "allowed_mentions", "poll")
_CUSTOM_EMOJI = re.compile(r"<?(a)?:?(\w+):(\d+)>?")

Payload = dict[str, Any]


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


class SnowflakeFactory:
    """Time-based snowflakes so ``created_at`` on emulated objects is plausible."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def emoji_payload(emoji: str) -> Payload:
    match = _CUSTOM_EMOJI.fullmatch(emoji)
    if match:
        return {"id": match.group(3), "name": match.group(2), "animated": bool(match.group(1))}
    return {"id": None, "name": emoji}


@dataclass
class User:
    id: int
    name: str
    bot: bool = False
    dms_closed: bool = False

    def payload(self) -> Payload:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> Payload:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    user_id: int
    roles: list[int]
    joined_at: str
    nick: str | None = None
    permissions: int | None = None


@dataclass
class Channel:
    id: int
    name: str
    type: int = 0
    guild_id: int | None = None
    position: int = 0
    parent_id: int | None = None
    owner_id: int | None = None
    recipient_ids: list[int] = field(default_factory=list)


@dataclass
class Invite:
    code: str
    guild_id: int
    channel_id: int
    inviter_id: int
    uses: int = 0
    max_uses: int = 0
    created_at: str = field(default_factory=iso_now)


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int | None = None
    channels: dict[int, Channel] = field(default_factory=dict)
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    invites: dict[str, Invite] = field(default_factory=dict)


class World:
    """Users, guilds, channels, messages and commands shared by the gateway and REST halves."""

    def __init__(self, bot_user_id: int, bot_name: str, application_id: int) -> None:
        self.new_id = SnowflakeFactory()
        self.bot = User(bot_user_id, bot_name, bot=True)
        self.application_id = application_id
        self.app_owner_id = 1
        self.users: dict[int, User] = {bot_user_id: self.bot}
        self.guilds: dict[int, Guild] = {}
        self.dm_channels: dict[int, Channel] = {}
        self.messages: dict[int, Payload] = {}
        self.sent: list[Payload] = []
        self.commands: dict[int | None, list[Payload]] = {}
        self.interactions: dict[int, InteractionHandle] = {}

    def user(self, user_id: int, name: str | None = None, *, bot: bool = False) -> User:
        found = self.users.get(user_id)
        if found is None:
            found = self.users[user_id] = User(user_id, name or f"user{user_id}", bot=bot)
        return found

    def channel(self, channel_id: int) -> Channel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return self.dm_channels.get(channel_id)

    def dm_channel_for(self, user_id: int) -> Channel:
        for channel in self.dm_channels.values():
            if channel.recipient_ids == [user_id]:
                return channel
        user = self.user(user_id)
        channel = Channel(self.new_id(), user.name, type=1, recipient_ids=[user_id])
        self.dm_channels[channel.id] = channel
        return channel

    def permissions(self, guild: Guild, user_id: int) -> int:
        member = guild.members.get(user_id)
        if member is not None and member.permissions is not None:
            return member.permissions
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        everyone = guild.roles.get(guild.id)
        value = everyone.permissions if everyone else 0
        for role_id in member.roles if member else ():
            if role_id in guild.roles:
                value |= guild.roles[role_id].permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def user_payload(self, user_id: int) -> Payload:
        return self.user(user_id).payload()

    def member_payload(
        self, guild: Guild, user_id: int, *, with_user: bool = True, with_permissions: bool = False
    ) -> Payload:
        member = guild.members[user_id]
        data: Payload = {
            "roles": [str(r) for r in member.roles],
            "joined_at": member.joined_at,
            "nick": member.nick,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
        }
        if with_user:
            data["user"] = self.user_payload(user_id)
        if with_permissions:
            data["permissions"] = str(self.permissions(guild, user_id))
        return data

    def channel_payload(self, channel: Channel) -> Payload:
        if channel.type in (1, 3):
            return {
                "id": str(channel.id),
                "type": channel.type,
                "recipients": [self.user_payload(u) for u in channel.recipient_ids],
                "last_message_id": None,
                "flags": 0,
            }
        data: Payload = {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "parent_id": str(channel.parent_id) if channel.parent_id else None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "permission_overwrites": [],
            "last_message_id": None,
            "flags": 0,
        }
        if channel.type == 15:
            data.update(available_tags=[], default_reaction_emoji=None, default_forum_layout=0)
        if channel.type in THREAD_TYPES:
            data.update(
                owner_id=str(channel.owner_id or self.bot.id),
                message_count=0,
                member_count=1,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": iso_now(),
                    "locked": False,
                    "create_timestamp": iso_now(),
                },
            )
        return data

    def guild_payload(self, guild: Guild) -> Payload:
        """Full GUILD_CREATE body; ``member_count == len(members)`` makes ``guild.chunked`` true."""
        channels = [c for c in guild.channels.values() if c.type not in THREAD_TYPES]
        threads = [c for c in guild.channels.values() if c.type in THREAD_TYPES]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "owner_id": str(guild.owner_id) if guild.owner_id else None,
            "features": [],
            "preferred_locale": "zh-TW",
            "unavailable": False,
            "large": False,
            "joined_at": iso_now(),
            "member_count": len(guild.members),
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [self.channel_payload(c) for c in channels],
            "threads": [self.channel_payload(c) for c in threads],
            "members": [self.member_payload(guild, uid) for uid in guild.members],
            "presences": [],
            "voice_states": [],
        }

    def invite_payload(self, invite: Invite) -> Payload:
        guild = self.guilds[invite.guild_id]
        channel = guild.channels[invite.channel_id]
        return {
            "type": 0,
            "code": invite.code,
            "guild": {"id": str(guild.id), "name": guild.name, "features": [], "icon": None, "splash": None},
            "channel": {"id": str(channel.id), "name": channel.name, "type": channel.type},
            "inviter": self.user_payload(invite.inviter_id),
            "uses": invite.uses,
            "max_uses": invite.max_uses,
            "max_age": 0,
            "temporary": False,
            "created_at": invite.created_at,
            "expires_at": None,
        }

    def message_payload(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        message_id: int | None = None,
        for_gateway: bool = False,
        extra: Payload | None = None,
    ) -> Payload:
        """A message as REST returns it; ``for_gateway`` adds ``guild_id``/``member`` like MESSAGE_CREATE."""
        data: Payload = {
            "id": str(message_id or self.new_id()),
            "channel_id": str(channel_id),
            "type": 0,
            "content": content,
            "author": self.user_payload(author_id),
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
        }
        data.update(extra or {})
        self.messages[int(data["id"])] = data
        return self.gateway_message(data) if for_gateway else data

    def bot_message(
        self, channel_id: int, body: Payload, *, message_id: int | None = None, **extra: Any
    ) -> Payload:
        """A message the bot created from a send body (content, embeds, components, files)."""
        fields: Payload = {k: body[k] for k in EDITABLE if k in body}
        fields["attachments"] = []
        for item in body.get("attachments") or []:
            name = item.get("filename", "file")
            url = f"https://cdn.invalid/attachments/{name}"
            attachment = {"id": str(self.new_id()), "filename": name, "size": 0, "url": url, "proxy_url": url}
            fields["attachments"].append(attachment)
        content = body.get("content") or ""
        return self.message_payload(
            channel_id, self.bot.id, content, message_id=message_id, extra={**fields, **extra}
        )

    def gateway_message(self, message: Payload) -> Payload:
        channel = self.channel(int(message["channel_id"]))
        data = dict(message)
        if channel is not None and channel.guild_id is not None:
            guild = self.guilds[channel.guild_id]
            data["guild_id"] = str(guild.id)
            author_id = int(message["author"]["id"])
            if author_id in guild.members and "webhook_id" not in message:
                data["member"] = self.member_payload(guild, author_id, with_user=False)
        return data

    def store_commands(self, scope: int | None, commands: list[Payload]) -> list[Payload]:
        """Bulk overwrite keeps ids of same-named commands, as Discord does."""
        old = {(c["name"], c.get("type", 1)): c["id"] for c in self.commands.get(scope, [])}
        stored = [self._normalise_command(c, scope, old) for c in commands]
        self.commands[scope] = stored
        return stored

    def _normalise_command(self, command: Payload, scope: int | None, old: dict[Any, str]) -> Payload:
        data = dict(command)
        data.setdefault("type", 1)
        data.setdefault("description", "")
        data["id"] = old.get((data["name"], data["type"])) or str(self.new_id())
        data["application_id"] = str(self.application_id)
        data["version"] = str(self.new_id())
        data["options"] = [_normalise_option(o) for o in data.get("options") or []]
        if scope is not None:
            data["guild_id"] = str(scope)
        return data

    def find_command(self, name: str, type_: int, guild_id: int | None) -> Payload | None:
        scopes = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == type_:
                    return command
        return None


def _normalise_option(option: Payload) -> Payload:
    data = dict(option)
    data.setdefault("description", "")
    if data.get("options"):
        data["options"] = [_normalise_option(o) for o in data["options"]]
    return data


def apply_edit(message: Payload, body: Payload) -> None:
    for key in EDITABLE:
        if key in body:
            message[key] = body[key]
    message["edited_timestamp"] = iso_now()
