"""Embeds built from CRM documents (crm.profiles.fan_documents, crm.stats.community_stats).

Every word comes from the catalogue (``discord.*`` keys); times become Discord timestamps so each
reader sees them in their own timezone. Embed limits (1024 per field, 25 fields, 6000 in all)
are respected by truncating long lists with an ellipsis rather than failing the command.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import discord
from discord.utils import format_dt

from bot.i18n import t
from bot.tiers_cli import standing_lines
from crm.tiers import TierRules

FIELD_MAX = 1024
TIER_COLOURS = (0x95A5A6, 0x3498DB, 0xE67E22, 0xE91E63, 0x9B59B6)


def _(key: str, locale: str, **params: object) -> str:
    return t(f"discord.{key}", locale, **params)


def kind_name(kind: str, locale: str) -> str:
    """A localised interaction kind; kinds added later fall back to their key."""
    key = f"discord.kind.{kind}"
    text = t(key, locale)
    return kind if text == key else text


def when(iso: str | None, style: str = "R") -> str:
    if not iso:
        return "—"
    return format_dt(datetime.fromisoformat(iso), style)  # type: ignore[arg-type]


def clip(lines: Iterable[str], limit: int = FIELD_MAX) -> str:
    """Join lines, dropping the tail (with an ellipsis) when the field would overflow."""
    out, size = [], 0
    for line in lines:
        if size + len(line) + 1 > limit - 2:
            out.append("…")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out) or "—"


def short(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def identity_line(ident: dict[str, Any], locale: str) -> str:
    if ident["platform"] == "discord" and str(ident["external_id"]).isdigit():
        return f"Discord · <@{ident['external_id']}>"
    platform = _(f"platform.{ident['platform']}", locale)
    if platform == f"discord.platform.{ident['platform']}":
        platform = ident["platform"]
    return f"{platform} · {discord.utils.escape_markdown(ident.get('display_name') or ident['external_id'])}"


def tier_colour(rank: int) -> discord.Colour:
    return discord.Colour(TIER_COLOURS[min(rank, len(TIER_COLOURS) - 1)])


def fan_card(doc: dict[str, Any], locale: str, rules: TierRules, *, for_fan: bool = False) -> discord.Embed:
    """The fan card (staff ``/fan``, "View fan") or, with ``for_fan``, the fan's own ``/me``."""
    title = _("card.title_me" if for_fan else "card.title", locale, name=doc["display_name"], id=doc["id"])
    pinned = _("card.pinned", locale) if doc.get("tier_pinned") else ""
    tier = rules.name(doc["tier_key"], locale)
    description = _("card.summary", locale, tier=tier, pinned=pinned, score=f"{doc['score']:.1f}")
    if doc.get("opted_out"):
        description += "\n" + _("card.opted_out", locale)
    if doc.get("tier_standing"):
        description += "\n" + "\n".join(standing_lines(doc["tier_standing"], rules, locale))
    embed = discord.Embed(title=title[:256], description=description, colour=tier_colour(rules.rank(doc["tier_key"])))
    explained = doc.get("score_explained") or {}
    if explained:
        embed.add_field(name=_("card.breakdown", locale), inline=False, value=clip(
            _("card.breakdown_line", locale, kind=kind_name(kind, locale), count=int(e["count"]),
              points=f"{e['points']:.1f}", today=f"{e['decayed']:.1f}")
            for kind, e in explained.items()))
    embed.add_field(name=_("card.identities", locale), inline=False,
                    value=clip(identity_line(i, locale) for i in doc["identities"]))
    none = _("card.none", locale)
    embed.add_field(name=_("card.preferences", locale), value=short(", ".join(doc["preferences"]), 1000) or none)
    embed.add_field(name=_("card.tags", locale), value=short(", ".join(doc["tags"]), 1000) or none)
    if doc["notes"]:
        embed.add_field(name=_("card.notes", locale), inline=False, value=clip(
            f"{when(n['at'], 'd')} {short(n['text'], 200)}" for n in doc["notes"][:10]))
    conv = doc.get("open_conversation")
    if conv:
        key = "card.conversation_overdue" if conv.get("overdue") else "card.conversation"
        embed.add_field(name=_("card.conversation_title", locale), inline=False,
                        value=_(key, locale, since=when(conv["waiting_since"]), due=when(conv["due_at"], "f")))
    recent = doc.get("interactions") or []
    if recent:
        embed.add_field(name=_("card.recent", locale, count=len(recent)), inline=False,
                        value=clip(interaction_line(i, locale) for i in recent))
    embed.set_footer(text=_("card.footer_me" if for_fan else "card.footer", locale,
                            first=(doc.get("first_seen") or "")[:10], last=(doc.get("last_seen") or "")[:10]))
    return embed


def interaction_line(item: dict[str, Any], locale: str) -> str:
    amount = f" {item['amount']} {item['currency'] or ''}".rstrip() if item.get("amount") is not None else ""
    summary = short(item.get("summary"), 50)
    text = f"{when(item['at'])} · {kind_name(item['kind'], locale)}{amount} · {item['platform']}"
    return f"{text} · {discord.utils.escape_markdown(summary)}" if summary else text


def stats_embed(stats: dict[str, Any], locale: str, rules: TierRules) -> discord.Embed:
    """``/stats``: fans per tier, progress to the true-fans goal, the top fans."""
    true = stats["true_fans"]
    embed = discord.Embed(title=_("stats.title", locale), colour=discord.Colour.gold(),
                          description=_("stats.summary", locale, fans=stats["fans"]))
    embed.add_field(name=_("stats.tiers", locale), inline=False, value=clip(
        f"{rules.name(tier['key'], locale)}: **{tier['count']}**" for tier in stats["tiers"]))
    filled = min(10, int(true["progress_pct"] // 10))
    embed.add_field(name=_("stats.goal", locale), inline=False, value=_(
        "stats.goal_line", locale, count=true["count"], goal=true["goal"], pct=true["progress_pct"],
        tier=rules.name(rules.true_fan_tier, locale), bar="▰" * filled + "▱" * (10 - filled)))
    top = stats.get("top") or []
    embed.add_field(name=_("stats.top", locale, count=len(top)), inline=False, value=clip(
        f"{n}. {discord.utils.escape_markdown(d['display_name'])} · {rules.name(d['tier_key'], locale)}"
        f" · {d['score']:.1f}" for n, d in enumerate(top, 1)) if top else _("stats.no_fans", locale))
    return embed


def topics_text(title: str, topics: list[str], locale: str) -> str:
    return f"**{title}**\n" + (", ".join(f"`{x}`" for x in topics) if topics else _("card.none", locale))
