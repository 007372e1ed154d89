"""Answering interactions inside Discord's 3-second window, in the user's language.

Discord drops an interaction that gets no callback within 3 seconds ("The application did not
respond"). :func:`answer` runs the work and replies directly when it finishes within
``defer_after`` seconds (one message, no "thinking…" flash); slower work gets a deferred response
first and its reply as the follow-up, so a slow database can never cost the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord

from bot.i18n import pick_locale

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """What a command shows: text, an embed, buttons (any may be absent)."""

    content: str | None = None
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.content is not None:
            out["content"] = self.content
        if self.embed is not None:
            out["embed"] = self.embed
        if self.view is not None:
            out["view"] = self.view
        return out


def locale_of(interaction: discord.Interaction[Any]) -> str:
    """The user's Discord language when we have a catalogue for it, else the creator's default."""
    default = getattr(interaction.client, "default_locale", None) or "zh-TW"
    return pick_locale(interaction.locale.value if interaction.locale else None, default)


async def answer(
    interaction: discord.Interaction[Any],
    build: Callable[[], Awaitable[Reply]],
    *,
    ephemeral: bool = True,
    defer_after: float | None = None,
) -> None:
    """Run ``build`` and show its reply; defer first if it is not done within ``defer_after`` s.

    Exceptions from ``build`` propagate to the command tree's error handler, which answers with a
    follow-up when the interaction was already deferred.
    """
    if defer_after is None:
        defer_after = float(getattr(getattr(interaction.client, "config", None), "defer_after_seconds", 1.5))
    task = asyncio.ensure_future(build())
    done, _ = await asyncio.wait({task}, timeout=max(defer_after, 0.0))
    if not done:
        try:
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        except discord.HTTPException as exc:
            log.warning("could not defer interaction %s (%s); the reply may be lost", interaction.id, exc)
    reply = await task
    await deliver(interaction, reply, ephemeral=ephemeral)


async def deliver(interaction: discord.Interaction[Any], reply: Reply, *, ephemeral: bool = True) -> None:
    """Send as the interaction response, or as a follow-up once the response is taken."""
    kwargs = reply.kwargs()
    if interaction.response.is_done():
        if reply.view is not None:
            kwargs["wait"] = True
        await interaction.followup.send(ephemeral=ephemeral, **kwargs)
    else:
        await interaction.response.send_message(ephemeral=ephemeral, **kwargs)


async def send_ephemeral(interaction: discord.Interaction[Any], text: str) -> None:
    """Best effort: an error message must never raise from the error handler itself."""
    try:
        await deliver(interaction, Reply(content=text), ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error in interaction %s: %s", interaction.id, exc)
