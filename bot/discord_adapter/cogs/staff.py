"""Staff actions on a fan: ``/note``, ``/tag add|remove``, ``/tier pin|unpin``, ``/log``.

A fan is named by ``member`` (created on first use, so staff can note a newcomer) or ``query``
(id, ``line:U…`` or a name, for fans who are only on LINE). ``/log`` records what happened off
Discord by hand — a share, a purchase, a check-in at a booth — with the interaction's id as the
event id, so a retried command is stored once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import discord
from discord import app_commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, external_id, interaction_in
from bot.discord_adapter.cogs._staff import StaffCog, author, target_fan
from bot.discord_adapter.localise import text
from bot.discord_adapter.replies import Reply, answer, locale_of
from bot.i18n import t
from crm.fan_actions import checkin
from crm.ingest import record_many
from crm.models import Fan
from crm.tiers_service import pin
from crm.topics import add_note, add_topic, remove_topic

LOG_KINDS = ("share", "purchase", "checkin")


def _name(fan: Fan) -> str:
    return discord.utils.escape_markdown(fan.display_name)


class Staff(StaffCog):
    """Notes, tags, tier pins and hand-logged interactions."""

    tag = app_commands.Group(name="tag", description=text("cmd.tag"), guild_only=True)
    tier = app_commands.Group(name="tier", description=text("cmd.tier"), guild_only=True)

    async def _run(self, interaction: discord.Interaction[Any], work: Any, moves_tiers: bool = False) -> None:
        async def build() -> Reply:
            content, moved = await self.bot.transact(work)
            if moved or moves_tiers:
                self.bot.tiers_moved()
            return Reply(content=content)

        await answer(interaction, build)

    @app_commands.command(name="note", description=text("cmd.note"))
    @app_commands.guild_only()
    @app_commands.describe(text_=text("cmd.note_text"), member=text("cmd.target_member"),
                           query=text("cmd.target_query"))
    @app_commands.rename(text_="text")
    async def note(self, interaction: discord.Interaction[SuperfanBot], text_: app_commands.Range[str, 1, 2000],
                   member: discord.Member | None = None, query: str | None = None) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> tuple[str, bool]:
            fan = await target_fan(self.bot, session, member, query, create=True)
            assert fan is not None
            await add_note(session, fan.id, text_, author=author(interaction), now=self.bot.now())
            return t("discord.staff.noted", locale, name=_name(fan)), False

        await self._run(interaction, work)

    @tag.command(name="add", description=text("cmd.tag_add"))
    @app_commands.describe(topic=text("cmd.tag_topic"), member=text("cmd.target_member"),
                           query=text("cmd.target_query"))
    async def tag_add(self, interaction: discord.Interaction[SuperfanBot], topic: app_commands.Range[str, 1, 64],
                      member: discord.Member | None = None, query: str | None = None) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> tuple[str, bool]:
            fan = await target_fan(self.bot, session, member, query, create=True)
            assert fan is not None
            key = await add_topic(session, fan.id, topic, source="staff", now=self.bot.now())
            return t("discord.staff.tagged", locale, name=_name(fan), topic=key), False

        await self._run(interaction, work)

    @tag.command(name="remove", description=text("cmd.tag_remove"))
    @app_commands.describe(topic=text("cmd.tag_topic"), member=text("cmd.target_member"),
                           query=text("cmd.target_query"))
    async def tag_remove(self, interaction: discord.Interaction[SuperfanBot], topic: app_commands.Range[str, 1, 64],
                         member: discord.Member | None = None, query: str | None = None) -> None:
        locale = locale_of(interaction)

        async def work(session: AsyncSession) -> tuple[str, bool]:
            fan = await target_fan(self.bot, session, member, query, create=False)
            removed = fan is not None and await remove_topic(session, fan.id, topic, source="staff")
            key = "staff.untagged" if removed else "staff.tag_not_there"
            return t(f"discord.{key}", locale, name=_name(fan) if fan else "?", topic=topic), False

        await self._run(interaction, work)

    @tier.command(name="pin", description=text("cmd.tier_pin"))
    @app_commands.describe(tier=text("cmd.tier_tier"), member=text("cmd.target_member"),
                           query=text("cmd.target_query"))
    async def tier_pin(self, interaction: discord.Interaction[SuperfanBot], tier: str,
                       member: discord.Member | None = None, query: str | None = None) -> None:
        await self._pin(interaction, tier, member, query)

    @tier_pin.autocomplete("tier")
    async def tier_names(self, interaction: discord.Interaction[SuperfanBot],
                         current: str) -> list[app_commands.Choice[str]]:
        locale = locale_of(interaction)
        return [app_commands.Choice(name=tier.name(locale), value=tier.key) for tier in self.bot.settings.tiers.tiers
                if current.casefold() in (tier.key + tier.name(locale)).casefold()][:25]

    @tier.command(name="unpin", description=text("cmd.tier_unpin"))
    @app_commands.describe(member=text("cmd.target_member"), query=text("cmd.target_query"))
    async def tier_unpin(self, interaction: discord.Interaction[SuperfanBot], member: discord.Member | None = None,
                         query: str | None = None) -> None:
        await self._pin(interaction, None, member, query)

    async def _pin(self, interaction: discord.Interaction[Any], tier: str | None, member: discord.Member | None,
                   query: str | None) -> None:
        locale, rules = locale_of(interaction), self.bot.settings.tiers
        key = rules.resolve(tier) if tier is not None else None

        async def work(session: AsyncSession) -> tuple[str, bool]:
            fan = await target_fan(self.bot, session, member, query, create=key is not None)
            if fan is None:
                return t("discord.staff.no_record", locale), False
            move = await pin(session, self.bot.settings, fan.id, key, by=author(interaction), now=self.bot.now())
            await session.refresh(fan)
            now_tier = rules.name(fan.tier, locale)
            if key is None:
                return t("discord.staff.unpinned", locale, name=_name(fan), tier=now_tier), move is not None
            return t("discord.staff.pinned", locale, name=_name(fan), tier=now_tier), move is not None

        await self._run(interaction, work)

    @app_commands.command(name="log", description=text("cmd.log"))
    @app_commands.guild_only()
    @app_commands.describe(member=text("cmd.log_member"), kind=text("cmd.log_kind"), amount=text("cmd.log_amount"),
                           currency=text("cmd.log_currency"), note=text("cmd.log_note"))
    @app_commands.choices(kind=[app_commands.Choice(name=text(f"kind.{k}"), value=k) for k in LOG_KINDS])
    async def log_(self, interaction: discord.Interaction[SuperfanBot], member: discord.Member, kind: str,
                  amount: app_commands.Range[float, 0.0, 1e9] | None = None,
                  currency: app_commands.Range[str, 3, 3] | None = None,
                  note: app_commands.Range[str, 1, 200] | None = None) -> None:
        locale, now = locale_of(interaction), self.bot.now()
        money = Decimal(str(amount)) if amount is not None else None
        cur = (currency or self.bot.settings.goal.currency).upper() if money is not None else None

        async def work(session: AsyncSession) -> tuple[str, bool]:
            await target_fan(self.bot, session, member, None, create=True)
            eid = f"log:{interaction.id}"
            if kind == "checkin":
                result = await checkin(session, self.bot.settings, platform=PLATFORM, external_id=external_id(member),
                                       display_name=member.display_name, at=now, now=now, source_event_id=eid)
                status, moved = ("stored" if result.status == "checked_in" else result.status), True
            else:
                item = interaction_in(member, kind, now, eid, text=note, amount=money, currency=cur)
                recorded = await record_many(session, [item], self.bot.settings, now)
                status, moved = recorded.results[0].status, bool(recorded.tier_moves)
            what = t(f"discord.kind.{kind}", locale) + (f" {amount:g} {cur}" if money is not None else "")
            return t(f"discord.staff.logged_{status}", locale, what=what, member=member.mention), moved

        await self._run(interaction, work)


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Staff(bot), guild=bot.command_guild)
