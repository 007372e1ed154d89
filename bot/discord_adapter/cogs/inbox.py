"""Staff answering fans from the inbox: thread messages, notes, "answered elsewhere", ``/reply``.

A staff member's message in a conversation's inbox thread is the answer: it is relayed to the fan
on the fan's own platform (``crm.conversations.note_reply`` queues the relay in the same
transaction) and the conversation is answered. A message starting with ``[discord] note_prefix``
stays internal and becomes a note on the fan. Each message is claimed as a processed event, so a
message the gateway delivers twice is relayed once. Non-staff posts and threads that are not a
conversation's are ignored (and never count as fan interactions: see cogs/intake.py).

The card's "answered elsewhere" button (a fixed ``custom_id``, answered here by the thread it is
in, so it works after a restart) resolves the conversation: for answers the creator gave in LINE
Official Account Manager, which LINE never tells superfan about.

Relays that failed for good are reported in their thread: a loop queues one notice per failed
relay (``crm.inbox_threads.report_failed_relays``; the notice's key makes it once only).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._staff import StaffCog
from bot.discord_adapter.errors import NotStaff, Refusal, report
from bot.discord_adapter.inbox import ELSEWHERE_ID
from bot.discord_adapter.localise import text
from bot.discord_adapter.permissions import is_staff
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from bot.i18n.errors import error_text
from bot.write_failures import brief
from bot.writer import Action
from crm import conversations
from crm.errors import CrmError
from crm.identity import find_fan
from crm.inbox_threads import conversation_for_thread, report_failed_relays
from crm.processed_events import claim_event
from crm.topics import add_note

log = logging.getLogger(__name__)
PLATFORM = "discord"
#: How often failed relays are looked for (they are rare; a notice within a minute is soon enough).
FAILED_RELAY_POLL_S = 30.0
REPLIED, NOTED = "✅", "📝"


def staff_author(member: discord.abc.User) -> str:
    """How staff are credited in notes and conversation records (as ``/note`` does)."""
    return f"{member.display_name} (discord:{member.id})"


def member_is_staff(member: discord.abc.User, config: Any) -> bool:
    """A member with a configured staff role or Manage Server (the rule of ``permissions.is_staff``)."""
    if not isinstance(member, discord.Member):
        return False
    if member.guild_permissions.manage_guild:
        return True
    return bool(set(config.staff_role_ids) & {role.id for role in member.roles})


def is_inbox_thread(channel: object, inbox_channel_id: int) -> bool:
    """Whether a channel is a thread of the configured inbox channel."""
    return bool(inbox_channel_id) and isinstance(channel, discord.Thread) and channel.parent_id == inbox_channel_id


class Inbox(StaffCog):
    """Relays staff answers, keeps notes internal, resolves "answered elsewhere", ``/reply``."""

    async def cog_load(self) -> None:
        if self.bot.config.inbox_channel_id:
            self.bot.background(self._report_failed_relays(), "inbox-failed-relays")

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None or message.guild is None:
            return
        if not is_inbox_thread(message.channel, self.bot.config.inbox_channel_id):
            return
        if not member_is_staff(message.author, self.bot.config):
            log.debug("inbox: message %s by a non-staff member ignored", message.id)
            return
        body = "\n".join([message.content.strip(), *(a.url for a in message.attachments)]).strip()
        if not body:
            return
        prefix = self.bot.config.note_prefix
        as_note = bool(prefix) and body.startswith(prefix)
        thread_ref, by = str(message.channel.id), staff_author(message.author)

        async def work(session: AsyncSession, now: datetime) -> str | None:
            conv = await conversation_for_thread(session, thread_ref)
            if conv is None:
                return None
            if not await claim_event(session, PLATFORM, f"inbox:{message.id}", now):
                return "duplicate"
            if as_note:
                await add_note(session, conv.fan_id, body[len(prefix):].strip() or body, author=by, now=now)
                return "noted"
            await conversations.note_reply(session, self.bot.settings, conv.id, text=body, by=by, now=now,
                                           source="inbox")
            return "replied"

        try:
            outcome = await self.bot.run_action(Action("inbox answer", work))
        except CrmError as exc:
            await self._say(message.channel, t("discord.inbox.reply_failed", self.bot.default_locale,
                                               reason=error_text(exc, self.bot.default_locale)))
            return
        log.info("inbox: message %s in thread %s: %s", message.id, thread_ref, outcome or "not a conversation")
        if outcome in ("noted", "replied"):
            try:
                await message.add_reaction(NOTED if outcome == "noted" else REPLIED)
            except discord.HTTPException as exc:
                log.debug("inbox: could not react to %s (%s)", message.id, exc.status)

    async def _say(self, channel: discord.abc.Messageable, content: str) -> None:
        try:
            await channel.send(content)
        except discord.HTTPException as exc:
            log.warning("inbox: could not post in thread (%s)", exc.status)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """The card's "answered elsewhere" button (any card, also those sent before a restart)."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        if data.get("custom_id") != ELSEWHERE_ID:
            return
        try:
            await self._answered_elsewhere(interaction)
        except Exception as exc:
            await report(interaction, exc, where="button answered elsewhere")

    async def _answered_elsewhere(self, interaction: discord.Interaction[Any]) -> None:
        locale = locale_of(interaction)
        if not is_staff(interaction, self.bot.config):
            raise NotStaff()
        if not is_inbox_thread(interaction.channel, self.bot.config.inbox_channel_id):
            raise Refusal("inbox.not_inbox_thread")
        thread_ref, by = str(interaction.channel_id), staff_author(interaction.user)

        async def work(session: AsyncSession, now: datetime) -> bool:
            conv = await conversation_for_thread(session, thread_ref)
            if conv is None:
                return False
            await conversations.resolve(session, self.bot.settings, conv.id, how="elsewhere", by=by, now=now)
            return True

        async def build() -> Reply:
            if not await self.bot.run_action(Action("inbox answered elsewhere", work)):
                raise Refusal("inbox.not_inbox_thread")
            return Reply(content=t("discord.inbox.resolved_ok", locale))

        await answer(interaction, build)
        channel = interaction.channel
        if isinstance(channel, discord.Thread):
            await self._say(channel, t("discord.inbox.resolved", self.bot.default_locale,
                                       by=discord.utils.escape_markdown(interaction.user.display_name)))

    @app_commands.command(name="reply", description=text("cmd.reply"))
    @app_commands.guild_only()
    @app_commands.describe(fan=text("cmd.reply_fan"), text_=text("cmd.reply_text"))
    @app_commands.rename(text_="text")
    async def reply(self, interaction: discord.Interaction[SuperfanBot], fan: app_commands.Range[str, 1, 100],
                    text_: app_commands.Range[str, 1, 2000]) -> None:
        """Answer a fan's open conversation from anywhere, as a thread message would."""
        locale, by = locale_of(interaction), staff_author(interaction.user)

        async def work(session: AsyncSession, now: datetime) -> tuple[str, str | None]:
            found = await find_fan(session, fan)
            conv = await conversations.open_conversation(session, found.id)
            if conv is None:
                return found.display_name, None
            await conversations.note_reply(session, self.bot.settings, conv.id, text=text_, by=by, now=now,
                                           source="discord")
            return found.display_name, conv.platform

        async def build() -> Reply:
            name, platform = await self.bot.run_action(Action("inbox /reply", work))
            if platform is None:
                raise Refusal("inbox.no_conversation", name=discord.utils.escape_markdown(name))
            shown = t(f"discord.platform.{platform}", locale)
            return Reply(content=t("discord.inbox.replied", locale, name=discord.utils.escape_markdown(name),
                                   platform=platform if shown.startswith("discord.") else shown))

        await answer(interaction, build)

    async def _report_failed_relays(self) -> None:
        """Every :data:`FAILED_RELAY_POLL_S`: queue a thread notice for each relay that failed for good."""
        while True:
            try:
                queued = await self.bot.run_action(Action("inbox failed relays", report_failed_relays))
                if queued:
                    log.info("inbox: %d failed relays to report in their threads", queued)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("inbox: could not look for failed relays (%s)", brief(exc))
            await asyncio.sleep(FAILED_RELAY_POLL_S)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Inbox(bot), guild=bot.command_guild)
