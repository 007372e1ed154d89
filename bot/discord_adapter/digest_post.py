"""The daily digest as a Discord embed in the staff channel (outbox kind ``digest``).

The row's payload is the digest JSON (:meth:`crm.digest.Digest.as_json`) and its recipient the
staff channel id; the embed is rendered here, at send time, in the digest's locale. One message
with a nonce from the row's idempotency key, so a resend after a crash is the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from bot.discord_adapter.outbox_sender import nonce_of, register
from bot.i18n import t
from bot.outbox_drain import Undeliverable
from bot.render_digest import Section, sections, title
from crm.outbox import OutboxMessage

if TYPE_CHECKING:
    from bot.discord_adapter.client import SuperfanBot

#: Discord allows 1024 characters per field and 6000 per embed; 7 fields of this stay below.
FIELD_CHARS = 800
COLOUR_CALM = 0x2ECC71
COLOUR_OVERDUE = 0xE67E22


def _field_value(section: Section, locale: str) -> str:
    """The section's lines that fit in a field, then "…and N more" for the rest."""
    lines: list[str] = []
    used = 0
    for n, line in enumerate(section.lines):
        if used + len(line) + 1 > FIELD_CHARS:
            more = len(section.lines) - n + section.more
            lines.append(t("digest.more", locale, count=more))
            return "\n".join(lines)
        lines.append(line)
        used += len(line) + 1
    if section.more > 0:
        lines.append(t("digest.more", locale, count=section.more))
    return "\n".join(lines) or t("digest.none", locale)


def digest_embed(digest: dict[str, Any]) -> discord.Embed:
    """One embed: sections with people as fields, one-line sections in the description."""
    locale = str(digest.get("locale") or "zh-TW")
    overdue = digest["counts"]["overdue"] > 0
    embed = discord.Embed(title=title(digest, locale), colour=COLOUR_OVERDUE if overdue else COLOUR_CALM)
    summary = []
    for section in sections(digest, locale):
        if section.lines or section.more:
            embed.add_field(name=section.heading[:256], value=_field_value(section, locale), inline=False)
        else:
            summary.append(section.heading)
    embed.description = "\n".join(summary)
    return embed


async def post_digest(bot: SuperfanBot, message: OutboxMessage) -> None:
    """Send the digest embed to the staff channel (``message.recipient``)."""
    try:
        channel_id = int(message.recipient)
    except ValueError:
        raise Undeliverable("recipient is not a Discord channel id") from None
    channel = bot.get_partial_messageable(channel_id)
    await channel.send(embed=digest_embed(message.payload), nonce=nonce_of(message.idempotency_key))


register("digest", post_digest)
