"""``/drop create`` and ``/drop status``: exclusive drops from Discord, for staff.

``/drop create`` takes who gets it (minimum tier, topic, platforms) and the extras (link, image,
sponsored, evergreen) as options, then asks for the text in a modal. Submitting shows a preview
only the staff member sees (who receives it on which platform, who is left out and why, the LINE
quota it uses, a sample of recipients, the text as fans will read it) with **Send** and
**Cancel**; over the LINE quota, Send is off and **Send on Discord only** is offered when Discord
is one of the platforms.
Send creates the drop once (a second press, or a press on an old preview, creates nothing): the
drop, its deliveries and their outbox rows in one transaction (``crm.drops.create_drop``); the
drainers send them.

``/drop status [id]`` shows a drop's sent / failed / pending per platform, why deliveries failed,
the LINE quota used and the reactions on its tier-channel post; without an id, the latest drops.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any

import discord
from discord import app_commands
from discord.utils import format_dt
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._staff import StaffCog, author
from bot.discord_adapter.errors import ReportingView, report
from bot.discord_adapter.render import clip
from bot.discord_adapter.replies import Reply, answer, locale_of, send_ephemeral
from bot.drops_cli import line_quota_left, platforms_of
from bot.i18n import t
from bot.writer import Action
from crm.drop_posts import PostReactions, post_failure, post_reactions
from crm.drop_reports import drop_report, list_drops
from crm.drops import (
    MAX_TEXT,
    CreatedDrop,
    DropDraft,
    DropView,
    Preview,
    create_drop,
    drop_text,
    pending_line_messages,
    preview_drop,
)

log = logging.getLogger(__name__)
#: Discord's limit on a modal text input.
INPUT_MAX = 4000
#: How long a preview's buttons work.
CONFIRM_SECONDS = 600.0
RECENT = 5
COLOUR = 0xE91E63
PLATFORMS = {"both": ("line", "discord"), "line": ("line",), "discord": ("discord",)}


def _(key: str, locale: str, **params: object) -> str:
    return t(f"drops.discord.{key}", locale, **params)


def _text(key: str) -> app_commands.locale_str:
    """A command string from ``[drops.discord]``: English by default, zh-TW by the translator."""
    full = f"drops.discord.{key}"
    return app_commands.locale_str(t(full, "en"), key=full)


def _as_written(text: str, limit: int) -> str:
    """Text with its line breaks kept, cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _url_ok(url: str | None, schemes: tuple[str, ...] = ("https://", "http://")) -> bool:
    """Checked before the text form opens, so nobody types a drop only to have its link refused
    (``crm.drops`` checks again: an image must be https, as LINE requires)."""
    return url is None or (url.startswith(schemes) and len(url) <= 500 and not any(c.isspace() for c in url))


def preview_embed(p: Preview, bot: SuperfanBot, locale: str) -> discord.Embed:
    """The preview as staff read it: the text as fans will, then counts, left out, quota, sample."""
    draft, settings = p.draft, bot.settings
    tier = settings.tiers.name(p.min_tier, locale)
    topic = t("drops.topic_part", locale, topic=draft.topic) if draft.topic else ""
    fans_read = drop_text(DropView(0, draft.text, draft.link, draft.image_url, p.min_tier, draft.sponsored, None),
                          settings)
    embed = discord.Embed(title=t("drops.preview_title", locale, tier=tier, topic=topic)[:256], colour=COLOUR,
                          description=_as_written(fans_read, 3000))
    counts, total = p.audience.counts(), len({r.fan_id for r in p.audience.recipients})
    lines = [t("drops.counts", locale, total=total, line=counts["line"], discord=counts["discord"])]
    left_out = sum(len(v) for v in p.audience.left_out.values())
    if left_out:
        lines.append(t("drops.left_out", locale, count=left_out))
        for reason, fans in sorted(p.audience.left_out.items(), key=lambda kv: -len(kv[1])):
            lines.append(t("drops.left_out_line", locale, count=len(fans),
                           reason=t(f"drops.reason.{reason}", locale, topic=draft.topic or "")))
    else:
        lines.append(t("drops.left_out_none", locale))
    if "line" in draft.platforms:
        lines.append(t("drops.quota_unknown", locale, needed=p.line_messages) if p.quota_left is None else
                     t("drops.quota", locale, needed=p.line_messages, left=p.quota_left, quota=p.quota))
        if not p.fits:
            lines.append(t("drops.quota_over", locale))
    if p.sample:
        more = total - len(p.sample)
        names = "、".join(discord.utils.escape_markdown(n) for n in p.sample)
        lines.append(t("drops.sample", locale, names=names + (t("drops.sample_more", locale, count=more)
                                                              if more > 0 else "")))
    if p.post_channel_id:
        lines.append(t("drops.post", locale, channel=f"<#{p.post_channel_id}>"))
    if draft.sponsored:
        lines.append(t("drops.sponsored", locale, disclosure=settings.drops.disclosure))
    if draft.evergreen:
        lines.append(t("drops.evergreen", locale, tier=tier))
    embed.add_field(name="\u200b", value=clip(lines), inline=False)
    if draft.image_url:
        embed.set_image(url=draft.image_url)
    embed.set_footer(text=_("preview_footer", locale, send=_("send", locale)))
    return embed


def created_text(made: CreatedDrop, locale: str) -> str:
    counts = made.preview.audience.counts()
    return t("drops.created", locale, id=made.id, total=len({r.fan_id for r in made.preview.audience.recipients}),
             line=counts["line"], batches=made.line_batches, discord=counts["discord"])


class Confirm(ReportingView):
    """Send / Send on Discord only / Cancel under a preview; only its author can press, once."""

    def __init__(self, bot: SuperfanBot, preview: Preview, owner: int, locale: str) -> None:
        super().__init__(timeout=CONFIRM_SECONDS)
        self.bot, self.preview, self.owner, self.locale = bot, preview, owner, locale
        self._lock = asyncio.Lock()
        self._answered = False
        # Each preview's buttons have ids of their own: a click can only ever reach this draft.
        tag = secrets.token_hex(8)
        for button, key in ((self.send, "send"), (self.discord_only, "discord_only"), (self.cancel, "cancel")):
            button.label = _(key, locale)
            button.custom_id = f"{button.custom_id}:{tag}"
        draft = preview.draft
        self.send.disabled = not preview.fits
        if preview.fits or "discord" not in draft.platforms or draft.platforms == ("discord",):
            self.remove_item(self.discord_only)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id == self.owner:
            return True
        await send_ephemeral(interaction, _("not_yours", self.locale))
        return False

    async def _take(self, interaction: discord.Interaction[Any]) -> bool:
        """True for the first press; later presses (a double click, another tab) are told the
        preview was answered. The view stays registered until it times out so they get that answer."""
        if self._answered:
            await send_ephemeral(interaction, _("used", self.locale))
            return False
        self._answered = True
        return True

    async def _create(self, interaction: discord.Interaction[SuperfanBot], draft: DropDraft) -> None:
        async with self._lock:
            if not await self._take(interaction):
                return
            await interaction.response.defer()
            bot, p = self.bot, self.preview

            async def work(session: AsyncSession, now: datetime) -> CreatedDrop:
                return await create_drop_now(session, bot, draft, now, quota_left=p.quota_left, quota=p.quota)

            try:
                made: CreatedDrop = await bot.run_action(Action("drop create", work))
            except Exception:
                self._answered = False  # nothing was created: the preview may be tried again
                raise
            log.info("drop %d created from Discord by %s", made.id, interaction.user.id)
            await interaction.edit_original_response(content=created_text(made, self.locale), view=None)

    @discord.ui.button(style=discord.ButtonStyle.success, custom_id="superfan:drop:send")
    async def send(self, interaction: discord.Interaction[SuperfanBot], button: discord.ui.Button[Confirm]) -> None:
        await self._create(interaction, self.preview.draft)

    @discord.ui.button(style=discord.ButtonStyle.primary, custom_id="superfan:drop:discord-only")
    async def discord_only(self, interaction: discord.Interaction[SuperfanBot],
                           button: discord.ui.Button[Confirm]) -> None:
        await self._create(interaction, replace(self.preview.draft, platforms=("discord",)))

    @discord.ui.button(style=discord.ButtonStyle.secondary, custom_id="superfan:drop:cancel")
    async def cancel(self, interaction: discord.Interaction[SuperfanBot], button: discord.ui.Button[Confirm]) -> None:
        async with self._lock:
            if await self._take(interaction):
                await interaction.response.edit_message(content=_("cancelled", self.locale), embed=None, view=None)


async def create_drop_now(session: AsyncSession, bot: SuperfanBot, draft: DropDraft, now: datetime, *,
                          quota_left: int | None, quota: int | None) -> CreatedDrop:
    """``crm.drops.create_drop`` with the quota the preview showed, less what was queued since."""
    if quota_left is not None and "line" in draft.platforms:
        quota_left = max(0, quota_left - (await pending_line_messages(session)))
    return await create_drop(session, bot.settings, draft, now, quota_left=quota_left, quota=quota)


class DropText(discord.ui.Modal):
    """The drop's text; submitting shows the preview."""

    def __init__(self, cog: Drops, draft: DropDraft, tier: str, locale: str) -> None:
        super().__init__(title=_("modal_title", locale, tier=tier)[:45], timeout=CONFIRM_SECONDS,
                         custom_id=f"superfan:drop:modal:{secrets.token_hex(8)}")
        self.cog, self.draft, self.locale = cog, draft, locale
        self.body: discord.ui.TextInput[DropText] = discord.ui.TextInput(
            label=_("modal_text", locale)[:45], style=discord.TextStyle.paragraph, custom_id="superfan:drop:text",
            placeholder=_("modal_placeholder", locale)[:100], max_length=min(MAX_TEXT, INPUT_MAX), required=True)
        self.add_item(self.body)

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        await self.cog.show_preview(interaction, replace(self.draft, text=self.body.value), self.locale)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,  # type: ignore[override]
                       /) -> None:
        await report(interaction, error, where="drop text")


class Drops(StaffCog):
    """Create drops and see how they went."""

    drop = app_commands.Group(name="drop", description=_text("cmd"), guild_only=True)

    async def cog_load(self) -> None:
        """With LINE on, the preview asks LINE for the month's quota: import its SDK now (seconds of
        import, in a thread) rather than inside a preview, where it would miss Discord's 3 s."""
        if self.bot.crm.config.line.enabled:
            await asyncio.to_thread(importlib.import_module, "bot.line_adapter.sender")

    @drop.command(name="create", description=_text("cmd_create"))
    @app_commands.describe(min_tier=_text("opt_min_tier"), platforms=_text("opt_platforms"), topic=_text("opt_topic"),
                           link=_text("opt_link"), image=_text("opt_image"), sponsored=_text("opt_sponsored"),
                           evergreen=_text("opt_evergreen"))
    @app_commands.choices(platforms=[app_commands.Choice(name=_text(f"platforms_{k}"), value=k) for k in PLATFORMS])
    async def create(self, interaction: discord.Interaction[SuperfanBot], min_tier: str,
                     platforms: app_commands.Choice[str] | None = None, topic: str | None = None,
                     link: str | None = None, image: str | None = None, sponsored: bool = False,
                     evergreen: bool = False) -> None:
        locale = locale_of(interaction)
        cfg = self.bot.crm.config
        key = self.bot.settings.tiers.resolve(min_tier)
        chosen = platforms_of(",".join(PLATFORMS[platforms.value]) if platforms else None, cfg)
        if not _url_ok(link) or not _url_ok(image, ("https://",)):
            await send_ephemeral(interaction, _("bad_link" if not _url_ok(link) else "bad_image", locale))
            return
        draft = DropDraft(text="", min_tier=key, link=link, image_url=image, topic=topic or None, platforms=chosen,
                          created_by=author(interaction), sponsored=sponsored, evergreen=evergreen)
        tier = self.bot.settings.tiers.name(key, locale)
        await interaction.response.send_modal(DropText(self, draft, tier, locale))

    @create.autocomplete("min_tier")
    async def tier_names(self, interaction: discord.Interaction[SuperfanBot],
                         current: str) -> list[app_commands.Choice[str]]:
        locale = locale_of(interaction)
        return [app_commands.Choice(name=tier.name(locale), value=tier.key) for tier in self.bot.settings.tiers.tiers
                if current.casefold() in (tier.key + tier.name(locale)).casefold()][:25]

    async def show_preview(self, interaction: discord.Interaction[Any], draft: DropDraft, locale: str) -> None:
        """The dry run of ``draft`` with the buttons that create it."""
        cfg, bot = self.bot.crm.config, self.bot

        async def build() -> Reply:
            left = None
            if "line" in draft.platforms:
                pending = await bot.read(pending_line_messages)
                left = await line_quota_left(cfg, pending)
            quota = cfg.line.monthly_quota
            p = await bot.read(lambda s: preview_drop(s, bot.settings, draft, quota_left=left, quota=quota))
            return Reply(embed=preview_embed(p, bot, locale), view=Confirm(bot, p, interaction.user.id, locale))

        await answer(interaction, build)

    @drop.command(name="status", description=_text("cmd_status"))
    @app_commands.describe(drop_id=_text("opt_id"))
    @app_commands.rename(drop_id="id")
    async def status(self, interaction: discord.Interaction[SuperfanBot],
                     drop_id: app_commands.Range[int, 1] | None = None) -> None:
        locale, bot = locale_of(interaction), self.bot

        async def one(session: AsyncSession) -> tuple[dict[str, Any], PostReactions | None, str | None]:
            assert drop_id is not None
            return (await drop_report(session, drop_id, bot.now()), await post_reactions(session, drop_id),
                    await post_failure(session, drop_id))

        async def build() -> Reply:
            if drop_id is None:
                return Reply(embed=recent_embed(await bot.read(lambda s: list_drops(s, bot.now(), limit=RECENT)),
                                                bot, locale))
            report_, reactions, post_failed = await bot.read(one)
            return Reply(embed=status_embed(report_, reactions, post_failed, bot, locale))

        await answer(interaction, build)


def _tier(bot: SuperfanBot, key: str, locale: str) -> str:
    rules = bot.settings.tiers
    return rules.name(key, locale) if key in rules.keys else key


def _when(iso: str | None) -> str:
    return format_dt(datetime.fromisoformat(iso), "f") if iso else "—"


def _reason(reason: str, locale: str) -> str:
    """A failure reason as staff read it: the catalogue's words for the known ones."""
    key = f"drops.reason.{reason}"
    text = t(key, locale, topic="")
    return reason if text == key else text


def _post_reason(reason: str, locale: str) -> str:
    """Why Discord refused the channel post, in words staff can act on (the code otherwise)."""
    key = f"drops.discord.post_reason.{reason}"
    text = t(key, locale)
    return reason if text == key else text


def status_embed(d: dict[str, Any], reactions: PostReactions | None, post_failed: str | None, bot: SuperfanBot,
                 locale: str) -> discord.Embed:
    """One drop: what it says, for whom, and what became of it on each platform."""
    topic = t("drops.topic_part", locale, topic=d["topic"]) if d["topic"] else ""
    embed = discord.Embed(title=t("drops.show_title", locale, id=d["id"],
                                  status=t(f"drops.status.{d['status']}", locale)), colour=COLOUR,
                          description=_as_written(d["text"], 1000))
    lines = [t("drops.show_audience", locale, tier=_tier(bot, d["min_tier"], locale), topic=topic,
               platforms=", ".join(d["platforms"]))]
    for platform, tally in d["per_platform"].items():
        if platform in d["platforms"] or any(tally.values()):
            lines.append(t("drops.show_platform", locale, platform="LINE" if platform == "line" else "Discord",
                           **tally))
    if d["failures"]:
        lines.append(t("drops.show_reasons", locale))
        lines += [t("drops.show_reason_line", locale, reason=f"{f['platform']}: {_reason(f['reason'], locale)}",
                    count=f["count"]) for f in d["failures"]]
    if "line" in d["platforms"]:
        lines.append(t("drops.show_quota", locale, used=d["quota_used"]))
    if "discord" in d["platforms"] and d["post"]:
        if reactions is not None:
            lines.append(_("reactions", locale, reactions=reactions.reactions, fans=reactions.fans))
        elif post_failed is not None:
            lines.append(_("post_failed", locale, reason=_post_reason(post_failed, locale)))
        else:
            lines.append(_("not_posted", locale))
    lines.append(t("drops.show_created", locale, at=_when(d["created_at"]),
                   by=discord.utils.escape_markdown(d["created_by"] or "-")))
    if d["finished_at"]:
        lines.append(t("drops.show_finished", locale, at=_when(d["finished_at"])))
    embed.add_field(name="\u200b", value=clip(lines), inline=False)
    return embed


def recent_embed(drops: list[dict[str, Any]], bot: SuperfanBot, locale: str) -> discord.Embed:
    """The latest drops, one line each."""
    embed = discord.Embed(title=_("status_recent", locale), colour=COLOUR)
    if not drops:
        embed.description = t("drops.list_none", locale)
        return embed
    lines = []
    for d in drops:
        topic = t("drops.topic_part", locale, topic=d["topic"]) if d["topic"] else ""
        flags = (t("drops.flag_sponsored", locale) if d["sponsored"] else "") + \
                (t("drops.flag_evergreen", locale) if d["evergreen"] else "")
        if d["status"] == "scheduled":
            flags += t("drops.flag_scheduled", locale, at=_when(d["scheduled_at"]))
        lines.append(t("drops.list_line", locale, id=d["id"], status=t(f"drops.status.{d['status']}", locale),
                       tier=_tier(bot, d["min_tier"], locale), topic=topic, created=_when(d["created_at"]),
                       sent=d["sent"], failed=d["failed"], pending=d["pending"], flags=flags))
    embed.description = clip(lines, 4000)
    return embed


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Drops(bot), guild=bot.command_guild)
