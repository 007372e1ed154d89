"""Messages, reactions and DMs → interactions.

What counts: messages people post in the server (channels, threads, forum posts) → ``message``;
reactions they add → ``reaction``; DMs to the bot → ``dm_in``. What never counts: the bot's own
messages and other bots, webhooks, system messages (joins, pins, boosts), staff messages in the
inbox channel and its threads (answers to fans: cogs/inbox.py), edits, and removals —
a removed reaction or deleted message keeps its history row (a deleted message loses its stored
text unless ``[discord] redact_deleted_messages = false``), and adding the same reaction again
is the same event (its id is message + user + emoji), so it is not counted twice. Discord
message ids are the event ids, so a message redelivered around a gateway reconnect is stored once.
"""

from __future__ import annotations

import logging
from datetime import datetime

import discord
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, event_id, interaction_in, record_event
from bot.writer import Action
from crm.privacy import redact_texts

log = logging.getLogger(__name__)
COUNTED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class Intake(commands.Cog):
    """Records what fans do in the server and in DMs."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot

    def _counts(self, author: discord.abc.User) -> bool:
        return not author.bot and not author.system and (self.bot.user is None or author.id != self.bot.user.id)

    def _in_inbox(self, channel: object) -> bool:
        inbox = self.bot.config.inbox_channel_id
        return bool(inbox) and (getattr(channel, "id", None) == inbox or getattr(channel, "parent_id", None) == inbox)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.webhook_id is not None or message.type not in COUNTED_TYPES or not self._counts(message.author):
            return
        if message.guild is None:
            kind = "dm_in"
        elif self._in_inbox(message.channel):
            return  # staff answering fans in the inbox (cogs/inbox.py) is not fan activity
        elif self.bot.in_scope(message.guild.id):
            kind = "message"
        else:
            return
        item = interaction_in(message.author, kind, message.created_at, str(message.id), text=message.content)
        recorded = await record_event(self.bot, item)
        log.debug("%s %s from %s: %s", kind, message.id, message.author.id, recorded.status if recorded else "queued")

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted([payload.message_id], payload.guild_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(sorted(payload.message_ids), payload.guild_id)

    async def _deleted(self, message_ids: list[int], guild_id: int | None) -> None:
        """A deleted message keeps its history row (and points); its text goes, unless configured not to."""
        if not self.bot.crm.config.discord.redact_deleted_messages:
            return
        if guild_id is not None and not self.bot.in_scope(guild_id):
            return

        event_ids = [str(m) for m in message_ids]

        async def redact(session: AsyncSession, now: datetime) -> int:
            return await redact_texts(session, PLATFORM, event_ids)

        redacted = await self.bot.intake(Action("discord delete", redact))
        log.debug("deleted messages %s: %s texts redacted", message_ids, "queued" if redacted is None else redacted)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is not None and not self.bot.in_scope(payload.guild_id):
            return
        user: discord.abc.User | None = payload.member or self.bot.get_user(payload.user_id)
        if user is None or not self._counts(user):
            return
        emoji = payload.emoji.id or payload.emoji.name
        eid = event_id("reaction", payload.message_id, payload.user_id, emoji)
        item = interaction_in(user, "reaction", self.bot.now(), eid, text=str(payload.emoji))
        recorded = await record_event(self.bot, item)
        log.debug("reaction on %s by %s: %s", payload.message_id, payload.user_id,
                  recorded.status if recorded else "queued")


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Intake(bot))
