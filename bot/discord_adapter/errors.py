"""The one handler for everything that goes wrong in a slash command, context menu or button.

Order of precedence (first match wins):

1. :class:`NotStaff` — a polite refusal; the command's body never ran. :class:`Refusal` — the
   adapter's own "cannot do that", from the catalogue.
2. :class:`bot.writer.StorageUnavailable` (and ``WriterClosed`` at shutdown) — nothing was stored
   because the database is busy or unreachable: "try again in a moment", logged as a warning.
3. :class:`crm.errors.CrmError` — an expected failure whose text is safe to show (unknown fan,
   several fans match, bad input, a referral code that cannot be used), in the user's language
   via :func:`bot.i18n.errors.error_text`.
4. Other ``AppCommandError`` raised by discord.py before the body ran (used outside a server,
   an option that could not be converted, another failed check).
5. Anything else is a bug: the user gets a short apology, the log gets the traceback with the
   command, interaction, user, guild and channel ids (never option values or message text).

The answer is always ephemeral and goes out as the response, or as a follow-up when the command
had already deferred or replied.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.discord_adapter.replies import locale_of, send_ephemeral
from bot.i18n import t
from bot.i18n.errors import error_text
from bot.write_failures import StorageUnavailable, WriterClosed
from crm.errors import CrmError

log = logging.getLogger(__name__)


class NotStaff(app_commands.CheckFailure):
    """The member has neither a configured staff role nor Manage Server."""


class Refusal(app_commands.AppCommandError):
    """An adapter-level "cannot do that" (e.g. no member or name given); text from the catalogue."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


def user_message(error: BaseException, locale: str) -> str | None:
    """The text to show for an expected error, or None when it is a bug."""
    if isinstance(error, NotStaff):
        return t("discord.errors.not_staff", locale)
    if isinstance(error, Refusal):
        return t(f"discord.{error.key}", locale, **error.params)
    if isinstance(error, StorageUnavailable | WriterClosed):
        return t("discord.errors.storage_busy", locale)
    if isinstance(error, CrmError):
        return error_text(error, locale)
    if isinstance(error, app_commands.NoPrivateMessage):
        return t("discord.errors.guild_only", locale)
    if isinstance(error, app_commands.TransformerError):
        return t("discord.errors.bad_option", locale, value=str(error.value)[:100])
    if isinstance(error, app_commands.CheckFailure):
        return t("discord.errors.not_allowed", locale)
    return None


async def report(interaction: discord.Interaction[Any], error: BaseException, *, where: str | None = None) -> None:
    """Tell the user what went wrong (see the module docstring for the order of precedence)."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    locale = locale_of(interaction)
    text = user_message(original, locale)
    if text is None:
        command = where or (interaction.command.qualified_name if interaction.command else "?")
        log.error(
            "unexpected error in %s (interaction %s, user %s, guild %s, channel %s)",
            command, interaction.id, interaction.user.id if interaction.user else None,
            interaction.guild_id, interaction.channel_id, exc_info=original,
        )
        text = t("discord.errors.unexpected", locale)
    elif isinstance(original, StorageUnavailable | WriterClosed):
        log.warning("interaction %s not stored: storage unavailable; the user was asked to try again",
                    interaction.id)
    else:
        log.debug("expected error in interaction %s: %s", interaction.id, type(original).__name__)
    await send_ephemeral(interaction, text)


class SuperfanTree(app_commands.CommandTree[Any]):
    """The command tree with :func:`report` as its error handler."""

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /) -> None:
        await report(interaction, error)


class ReportingView(discord.ui.View):
    """A view whose button errors go through :func:`report` instead of discord.py's default log."""

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,
                       item: discord.ui.Item[Any], /) -> None:
        await report(interaction, error, where=f"button {getattr(item, 'custom_id', '?')}")
