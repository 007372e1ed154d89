"""The staff inbox on Discord: one thread per conversation, in ``[discord] inbox_channel_id``.

Outbox handlers (registered with ``outbox_sender.register``) for the kinds the CRM queues:
``inbox_message`` (a fan's DM: the conversation's thread, created on first use with a context
card, gets the message), ``sla_reminder`` and ``sla_breach`` (a line in the thread; a breach
also in the staff channel) and ``inbox_relay_failed`` (a staff answer that could not be delivered).

No conversation gets two threads: the thread is claimed in the database before it is created,
named ``#<conversation id> <fan>``, and its id stored after (``crm/inbox_threads.py``). After a
crash between creating and storing, the next attempt finds the thread by name among the
channel's active threads. Every post carries a nonce derived from the outbox row (Discord
answers a resend with the first message), the context card one derived from the conversation.
The inbox channel may be a text channel (public threads) or a forum (a post per conversation).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import discord
from discord.utils import escape_markdown, escape_mentions, format_dt

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.outbox_sender import MAX_CONTENT, nonce_of, register
from bot.discord_adapter.render import clip, short, tier_colour
from bot.i18n import t
from bot.outbox_drain import RetryLater, Undeliverable
from bot.writer import Action
from crm.inbox_threads import (
    CLAIM_TTL,
    RELAY_FAILED,
    ThreadClaim,
    claim_thread,
    forget_thread,
    inbox_context,
    store_thread_ref,
)
from crm.outbox import OutboxMessage

log = logging.getLogger(__name__)
#: The "answered elsewhere" button's id: the same on every card, so it works after a restart
#: (the cog answers it by the thread it was clicked in).
ELSEWHERE_ID = "superfan:inbox:elsewhere"
THREAD_NAME_MAX = 100
#: A week without messages before Discord hides the thread (the longest it allows).
ARCHIVE_MINUTES: Final[Literal[10080]] = 10080


def thread_name(conversation_id: int, display_name: str) -> str:
    """``#12 小慧``: the id prefix is how a thread is found again after a crash."""
    return f"#{conversation_id} {' '.join(display_name.split())}"[:THREAD_NAME_MAX]


def _locale(bot: SuperfanBot) -> str:
    return bot.default_locale


def _zone(bot: SuperfanBot) -> ZoneInfo:
    return ZoneInfo(bot.crm.config.creator.timezone)


def local_time(at: datetime, zone: ZoneInfo) -> str:
    """A time as the creator reads it (their timezone), e.g. ``2026-12-08 10:00``."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _platform(platform: str, locale: str) -> str:
    text = t(f"discord.platform.{platform}", locale)
    return platform if text.startswith("discord.platform.") else text


def _conversation_id(message: OutboxMessage) -> int:
    value: Any = message.payload.get("conversation_id", message.conversation_id)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Undeliverable("no conversation id") from None


def elsewhere_view(locale: str) -> discord.ui.View:
    """The card's buttons. No callback here: the inbox cog answers clicks by ``custom_id``."""
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label=t("discord.inbox.elsewhere_button", locale), custom_id=ELSEWHERE_ID,
                                    style=discord.ButtonStyle.secondary, emoji="✅"))
    return view


def context_card(doc: dict[str, Any], bot: SuperfanBot) -> discord.Embed:
    """The thread's first message: who is writing and by when they need an answer."""
    locale, zone, rules = _locale(bot), _zone(bot), bot.settings.tiers
    conv = doc["conversation"]

    def _(key: str, **params: object) -> str:
        return t(f"discord.inbox.{key}", locale, **params)

    embed = discord.Embed(title=_("card_title", id=conv["id"], name=doc["display_name"])[:256],
                          colour=tier_colour(rules.rank(doc["tier_key"])),
                          description=_("card_summary", platform=_platform(conv["platform"], locale),
                                        tier=rules.name(doc["tier_key"], locale), score=f"{doc['score']:.1f}"))
    due = datetime.fromisoformat(conv["due_at"]) if conv.get("due_at") else None
    if due is None:
        due_text = _("due_none")
    elif conv.get("overdue"):
        due_text = _("due_overdue", local=local_time(due, zone), zone=zone.key)
    else:
        due_text = _("due_line", local=local_time(due, zone), zone=zone.key, relative=format_dt(due, "R"))
    embed.add_field(name=_("due"), value=due_text, inline=False)
    none = _("none")
    embed.add_field(name=_("preferences"), value=short(", ".join(doc["preferences"]), 1000) or none)
    embed.add_field(name=_("tags"), value=short(", ".join(doc["tags"]), 1000) or none)
    purchase = doc.get("last_purchase")
    if purchase:
        amount = f"{purchase['amount']} {purchase['currency'] or ''}".strip() if purchase["amount"] is not None else ""
        at = local_time(datetime.fromisoformat(purchase["at"]), zone)
        embed.add_field(name=_("last_purchase"), value=_("purchase_line", at=at, amount=amount or none))
    else:
        embed.add_field(name=_("last_purchase"), value=none)
    if doc["notes"]:
        embed.add_field(name=_("notes"), inline=False, value=clip(
            f"{n['at'][:10]} {escape_markdown(short(n['text'], 200))}" for n in doc["notes"][:5]))
    embed.set_footer(text=_("how_to", prefix=bot.config.note_prefix))
    return embed


async def _inbox_channel(bot: SuperfanBot) -> discord.TextChannel | discord.ForumChannel:
    channel_id = bot.config.inbox_channel_id
    if not channel_id:
        raise Undeliverable("no [discord] inbox_channel_id configured")
    channel = bot.get_channel(channel_id) or await bot.fetch_channel(channel_id)
    if not isinstance(channel, discord.TextChannel | discord.ForumChannel):
        raise Undeliverable("[discord] inbox_channel_id is not a text or forum channel")
    return channel


async def _find_thread(bot: SuperfanBot, channel: discord.abc.GuildChannel,
                       conversation_id: int) -> discord.Thread | None:
    """The conversation's thread among the channel's active threads (after a crash lost its id)."""
    guild = bot.get_guild(channel.guild.id) or await bot.fetch_guild(channel.guild.id)
    prefix = f"#{conversation_id} "
    for thread in await guild.active_threads():
        if thread.parent_id == channel.id and (thread.name + " ").startswith(prefix):
            return thread
    return None


async def _fetch_thread(bot: SuperfanBot, conversation_id: int, ref: str) -> discord.Thread:
    try:
        thread = bot.get_channel(int(ref)) or await bot.fetch_channel(int(ref))
    except discord.NotFound:
        thread = None
    if not isinstance(thread, discord.Thread):  # deleted by staff: the next attempt opens a new one
        await bot.store(Action("inbox thread gone", lambda s, now: forget_thread(s, conversation_id, ref)))
        raise RetryLater("inbox thread was deleted", after=1.0)
    return thread


async def ensure_thread(bot: SuperfanBot, conversation_id: int) -> discord.Thread:
    """The conversation's inbox thread: the stored one, else found by name, else created with its card."""
    claim: ThreadClaim | None = await bot.run_action(Action(
        "inbox thread claim", lambda s, now: claim_thread(s, conversation_id, now)))
    if claim is None:
        raise Undeliverable("conversation not found")
    if claim.thread_ref:
        return await _fetch_thread(bot, conversation_id, claim.thread_ref)
    if not claim.won:
        raise RetryLater("inbox thread being created by another attempt", after=CLAIM_TTL.total_seconds())
    doc = await bot.read(lambda s: inbox_context(s, bot.settings, conversation_id, bot.now()))
    if doc is None:
        raise Undeliverable("conversation not found")
    channel = await _inbox_channel(bot)
    card, view = context_card(doc, bot), elsewhere_view(_locale(bot))
    card_nonce = nonce_of(f"inbox-card:{conversation_id}")
    thread = await _find_thread(bot, channel, conversation_id)
    if thread is None and isinstance(channel, discord.ForumChannel):
        created = await channel.create_thread(name=thread_name(conversation_id, doc["display_name"]),
                                              embed=card, view=view, auto_archive_duration=ARCHIVE_MINUTES)
        thread = created.thread
    elif thread is None:
        assert isinstance(channel, discord.TextChannel)
        thread = await channel.create_thread(name=thread_name(conversation_id, doc["display_name"]),
                                             type=discord.ChannelType.public_thread,
                                             auto_archive_duration=ARCHIVE_MINUTES)
        await thread.send(embed=card, view=view, nonce=card_nonce)
    elif isinstance(channel, discord.TextChannel):
        await thread.send(embed=card, view=view, nonce=card_nonce)  # the same nonce: no second card
    found = thread
    await bot.run_action(Action("inbox thread ref", lambda s, now: store_thread_ref(s, conversation_id,
                                                                                   str(found.id))))
    log.info("inbox: conversation %d has thread %d", conversation_id, found.id)
    return found


def inbound_text(message: OutboxMessage, name: str, platform: str, bot: SuperfanBot) -> str:
    """A fan's message as staff read it: who, where, when (creator's timezone), then the text."""
    locale, payload = _locale(bot), message.payload
    at = payload.get("at")
    when = local_time(datetime.fromisoformat(at), _zone(bot)) if at else ""
    head = t("discord.inbox.inbound", locale, name=escape_markdown(name), platform=_platform(platform, locale),
             at=when)
    lines = [head, escape_mentions(str(payload.get("text") or ""))]
    lines += [t("discord.inbox.sticker", locale, url=u) for u in payload.get("stickers") or []]
    lines += [t("discord.inbox.attachment", locale, url=u) for u in payload.get("attachments") or []]
    text = "\n".join(line for line in lines if line)
    if len(text) > MAX_CONTENT:
        note = "\n" + t("discord.inbox.clipped", locale)
        text = text[: MAX_CONTENT - len(note) - 1] + "…" + note
    return text


async def _thread_and_names(bot: SuperfanBot, message: OutboxMessage) -> tuple[discord.Thread, dict[str, Any]]:
    conversation_id = _conversation_id(message)
    thread = await ensure_thread(bot, conversation_id)
    doc = await bot.read(lambda s: inbox_context(s, bot.settings, conversation_id, bot.now()))
    if doc is None:
        raise Undeliverable("conversation not found")
    return thread, doc


async def send_inbox_message(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``inbox_message``: a fan's DM, appended to the conversation's thread."""
    thread, doc = await _thread_and_names(bot, message)
    text = inbound_text(message, doc["display_name"], doc["conversation"]["platform"], bot)
    await thread.send(text, nonce=nonce_of(message.idempotency_key))


def _due(message: OutboxMessage, doc: dict[str, Any]) -> datetime | None:
    value = message.payload.get("due_at") or doc["conversation"].get("due_at")
    return datetime.fromisoformat(value) if value else None


async def send_reminder(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``sla_reminder``: the answer is due soon (a line in the thread)."""
    thread, doc = await _thread_and_names(bot, message)
    due = _due(message, doc)
    local = local_time(due, _zone(bot)) if due else "—"
    relative = format_dt(due, "R") if due else "—"
    await thread.send(t("discord.inbox.reminder", _locale(bot), local=local, relative=relative),
                      nonce=nonce_of(message.idempotency_key))


async def send_breach(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``sla_breach``: past due, said in the thread and in the staff channel (when configured)."""
    thread, doc = await _thread_and_names(bot, message)
    due = _due(message, doc)
    local = local_time(due, _zone(bot)) if due else "—"
    locale = _locale(bot)
    await thread.send(t("discord.inbox.breach", locale, local=local), nonce=nonce_of(message.idempotency_key))
    staff_id = bot.config.staff_channel_id
    if staff_id:
        staff = bot.get_channel(staff_id) or await bot.fetch_channel(staff_id)
        if isinstance(staff, discord.abc.Messageable):
            await staff.send(t("discord.inbox.breach_staff", locale, name=escape_markdown(doc["display_name"]),
                               local=local, thread=thread.mention),
                             nonce=nonce_of(message.idempotency_key, 1))


async def send_relay_failed(bot: SuperfanBot, message: OutboxMessage) -> None:
    """``inbox_relay_failed``: a staff answer that could not be delivered, said in its thread."""
    thread, _ = await _thread_and_names(bot, message)
    reason = str(message.payload.get("reason") or "?")
    await thread.send(t("discord.inbox.relay_failed", _locale(bot), reason=reason),
                      nonce=nonce_of(message.idempotency_key))


register("inbox_message", send_inbox_message)
register("sla_reminder", send_reminder)
register("sla_breach", send_breach)
register(RELAY_FAILED, send_relay_failed)
