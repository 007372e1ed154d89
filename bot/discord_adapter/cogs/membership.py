"""Members joining (credited to whoever invited them) and leaving.

A join is a ``follow`` and a leave an ``unfollow`` (worth no points by default; they date a fan's
membership). Discord does not say which invite a member used, so the bot remembers each invite's
use count and, on a join, looks for the one invite whose count went up.

The choice, documented for creators: the inviter earns one ``referral`` **when the joiner joins**
(not when they first post: joining is what the inviter caused, and waiting would never credit
invites of people who read but do not talk). It is credited once per joiner ever (leaving and
rejoining earns nothing), never for bots or for inviting oneself, never when the joiner opted out
or is not new (the same rule as ``/ref use``), and not at all when two invites moved at once or
the bot cannot read invites (it needs Manage Server; without it joins are still recorded). The
credit goes through :func:`crm.fan_actions.redeem_referral`, so a joiner credited to an inviter
cannot also redeem somebody's ``/ref`` code.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import discord
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.cogs._common import PLATFORM, event_id, existing_fan, interaction_in
from bot.writer import Action
from crm.errors import BadInput
from crm.fan_actions import ensure_fan, redeem_referral, referral_code
from crm.ingest import record_many

log = logging.getLogger(__name__)
InviteUses = dict[str, tuple[int, int | None]]


class Membership(commands.Cog):
    """Joins with invite attribution, and leaves."""

    def __init__(self, bot: SuperfanBot) -> None:
        self.bot = bot
        self._uses: dict[int, InviteUses] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._warned: set[int] = set()

    def tracking_invites(self, guild_id: int) -> bool:
        """Whether joins to this server can be attributed yet (the first snapshot is taken)."""
        return guild_id in self._uses

    async def _snapshot(self, guild: discord.Guild) -> InviteUses | None:
        try:
            invites = await guild.invites()
        except discord.Forbidden:
            if guild.id not in self._warned:
                self._warned.add(guild.id)
                log.warning("cannot read the invites of server %s: give the bot Manage Server so inviters "
                            "are credited", guild.id)
            return None
        except discord.HTTPException as exc:
            log.warning("could not read invites of server %s (HTTP %s)", guild.id, exc.status)
            return None
        return {i.code: (i.uses or 0, i.inviter.id if i.inviter else None) for i in invites}

    async def _inviter(self, guild: discord.Guild) -> int | None:
        """Whose invite just went up by one; None when unknown or ambiguous."""
        async with self._locks.setdefault(guild.id, asyncio.Lock()):
            before = self._uses.get(guild.id)
            after = await self._snapshot(guild)
            if after is None:
                return None
            self._uses[guild.id] = after
        if before is None:
            return None
        grown = [inviter for code, (uses, inviter) in after.items() if uses > before.get(code, (0, None))[0]]
        if len(grown) != 1:
            log.debug("join in %s: %d invites moved, no attribution", guild.id, len(grown))
            return None
        return grown[0]

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        if self.bot.in_scope(guild.id):
            snapshot = await self._snapshot(guild)
            if snapshot is not None:
                self._uses[guild.id] = snapshot

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.on_guild_available(guild)

    @commands.Cog.listener()
    async def on_invite_create(self, invite: discord.Invite) -> None:
        if invite.guild is not None and invite.guild.id in self._uses:
            self._uses[invite.guild.id][invite.code] = (invite.uses or 0, invite.inviter.id if invite.inviter else None)

    @commands.Cog.listener()
    async def on_invite_delete(self, invite: discord.Invite) -> None:
        if invite.guild is not None:
            self._uses.get(invite.guild.id, {}).pop(invite.code, None)

    @commands.Cog.listener()
    async def on_member_join(self, member: discord.Member) -> None:
        if not self.bot.in_scope(member.guild.id):
            return
        inviter_id = await self._inviter(member.guild)  # also for bots: their join moved a count too
        if member.bot:
            return
        inviter = member.guild.get_member(inviter_id) if inviter_id else None
        if inviter_id == member.id or (inviter is not None and inviter.bot):
            inviter_id = None
        joined = member.joined_at or self.bot.now()
        follow = interaction_in(member, "follow", joined,
                                event_id("join", member.guild.id, member.id, int(joined.timestamp() * 1000)))

        async def work(session: AsyncSession, now: datetime) -> bool:
            result = await record_many(session, [follow], self.bot.settings, now)
            if inviter_id is None or result.results[0].status == "opted_out":
                return bool(result.tier_moves)
            owner = await ensure_fan(session, self.bot.settings, platform=PLATFORM, external_id=str(inviter_id),
                                     display_name=inviter.display_name if inviter else None, now=now)
            code = await referral_code(session, owner)
            try:
                await redeem_referral(session, self.bot.settings, code, platform=PLATFORM,
                                      external_id=str(member.id), display_name=member.display_name, at=joined,
                                      now=now, source_event_id=event_id("invite", member.guild.id, member.id))
            except BadInput as exc:
                log.debug("no invite credit for member %s: %s", member.id, exc)
                return bool(result.tier_moves)
            log.info("member %s joined via an invite of %s: referral credited", member.id, inviter_id)
            return True

        await self.bot.intake(Action("discord join", work))  # tier moves wake the role sync

    @commands.Cog.listener()
    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        user = payload.user
        if user.bot or not self.bot.in_scope(payload.guild_id):
            return
        now = self.bot.now()
        joined = getattr(user, "joined_at", None)
        stamp = int(joined.timestamp() * 1000) if joined else int((now - timedelta(seconds=now.second)).timestamp())
        unfollow = interaction_in(user, "unfollow", now, event_id("leave", payload.guild_id, user.id, stamp))

        async def work(session: AsyncSession, now: datetime) -> None:
            if await existing_fan(session, user) is not None:
                await record_many(session, [unfollow], self.bot.settings, now)

        await self.bot.intake(Action("discord leave", work))


async def setup(bot: SuperfanBot) -> None:
    await bot.add_cog(Membership(bot))
