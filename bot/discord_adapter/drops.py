"""Drops on Discord: a DM to each fan (outbox kind ``drop_dm``) and the post in the tier's channel
(``drop_post``), registered with the Discord outbox sender.

A ``drop_dm`` row carries one fan's delivery (recipient: their Discord user id, payload
``{"drop_id": D}``, key ``drop:D:discord:FAN``); a ``drop_post`` row the drop's one post (recipient:
the channel id, key ``drop:D:post``). The text is rendered at send time by ``crm.drops.drop_text``
(the sponsored disclosure first, the link last), the image as an embed under it.

Exactly once: every message carries a nonce from the row's key with ``enforce_nonce``, so a resend
after a crash is answered with the message Discord already made. The drainer settles the row's
delivery in the transaction that marks the row (``crm.drops.record_outcome``); a handler here only
raises what happened.

Failures (translated by ``outbox_sender.classify``): Discord's rate limits are discord.py's to
respect (it waits on the bucket headers and retries a 429 itself); a 429 it gives up on becomes
``RetryLater`` with Discord's ``retry_after``. DMs closed (50007) make the delivery fail with
``dms_closed`` and mark the fan's identity (``note_dm_closed``), so the next drop's audience
leaves them out; a DM that goes through clears that mark (``note_dm_open``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import discord
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.outbox_sender import PERMANENT_CODES, chunks, nonce_of, register
from bot.drop_views import DropViews
from bot.outbox_drain import Undeliverable
from bot.writer import Action
from crm import drops
from crm.outbox import OutboxMessage

if TYPE_CHECKING:
    from datetime import datetime

    from bot.discord_adapter.client import SuperfanBot

log = logging.getLogger(__name__)
DM, POST = "drop_dm", "drop_post"
DMS_CLOSED_CODE = 50007
DMS_CLOSED = PERMANENT_CODES[DMS_CLOSED_CODE]
EMBED_COLOUR = 0xE91E63
#: A drop's 1,000 DMs read it once, not 1,000 times (one cache per bot: tests run several).
_VIEWS: WeakKeyDictionary[SuperfanBot, DropViews] = WeakKeyDictionary()


def image_embed(image_url: str | None) -> discord.Embed | None:
    """The drop's image as an embed (Discord shows it under the text), or None."""
    if not image_url:
        return None
    return discord.Embed(colour=EMBED_COLOUR).set_image(url=image_url)


def _views(bot: SuperfanBot) -> DropViews:
    views = _VIEWS.get(bot)
    if views is None:
        views = _VIEWS[bot] = DropViews(bot.crm.read, bot.settings.drops)
    return views


async def _drop(bot: SuperfanBot, message: OutboxMessage) -> tuple[drops.DropView, str]:
    """The drop the row carries and its text as fans read it; Undeliverable when it is gone."""
    try:
        drop_id = int(message.payload["drop_id"])
    except (KeyError, TypeError, ValueError):
        raise Undeliverable("no drop id in the payload") from None
    views = _views(bot)
    view = await views.get(drop_id)
    if view is None:
        raise Undeliverable("the drop no longer exists")
    return view, views.text(view)


async def _send(channel: discord.abc.Messageable, text: str, embed: discord.Embed | None,
                key: str) -> discord.Message:
    """The text in pieces Discord accepts, the embed with the last; each piece its own nonce."""
    pieces = list(chunks(text)) or [""]
    sent: discord.Message | None = None
    for part, piece in enumerate(pieces):
        embeds = [embed] if embed is not None and part == len(pieces) - 1 else []
        sent = await channel.send(piece or None, embeds=embeds, nonce=nonce_of(key, part))
    assert sent is not None
    return sent


async def _note_reach(bot: SuperfanBot, user_id: str, *, dms_closed: bool) -> None:
    """Whether Discord takes the bot's DMs to this user (the next drop's audience reads it)."""

    async def work(session: AsyncSession, now: datetime) -> None:
        if dms_closed:
            await drops.note_dm_closed(session, user_id, now)
        else:
            await drops.note_dm_open(session, user_id, now)

    await bot.run_action(Action("drop dm reach", work))


async def send_drop_dm(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``drop_dm``: the drop as a DM to one fan (``recipient``: their Discord user id)."""
    try:
        user_id = int(message.recipient)
    except ValueError:
        raise Undeliverable("recipient is not a Discord user id") from None
    view, text = await _drop(bot, message)
    if message.recipient not in await _views(bot).still_waiting(message.id):
        return  # the fan opted out or was erased since the drop was made: nothing to send, the row is done
    try:
        channel = await bot.create_dm(discord.Object(user_id))
        await _send(channel, text, image_embed(view.image_url), message.idempotency_key)
    except discord.Forbidden as exc:
        if exc.code == DMS_CLOSED_CODE:
            await _note_reach(bot, message.recipient, dms_closed=True)
            log.info("drop %d: Discord refused the DM (DMs closed), row #%d", view.id, message.id)
            raise Undeliverable(DMS_CLOSED) from exc
        raise
    try:
        await _note_reach(bot, message.recipient, dms_closed=False)
    except Exception as exc:  # the DM is out: a retry for this mark could send it again
        log.warning("drop %d: DM sent, but whether DMs are open was not stored (%s)", view.id, type(exc).__name__)


async def send_drop_post(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``drop_post``: the drop in the tier's channel (``recipient``), once; the message id is
    recorded so the reactions it gathers can be counted (``crm.drop_posts``)."""
    try:
        channel_id = int(message.recipient)
    except ValueError:
        raise Undeliverable("recipient is not a Discord channel id") from None
    view, text = await _drop(bot, message)
    sent = await _send(bot.get_partial_messageable(channel_id), text, image_embed(view.image_url),
                       message.idempotency_key)
    await bot.run_action(Action("drop post", lambda s, now: drops.record_post(s, view.id, str(channel_id),
                                                                              str(sent.id))))


register(DM, send_drop_dm)
register(POST, send_drop_post)
