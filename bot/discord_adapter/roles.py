"""Tier → Discord role sync: drain the tier-change outbox, and reconcile after downtime.

Every tier change is a ``tier_changes`` row with ``roles_synced_at`` NULL until a sync has acted
on it, whoever made it (a Discord message, a LINE purchase, an import, the decay job, a merge).
:func:`sync_pending_roles` applies the fans' *current* tier (never a stale ``to_tier``), so
replaying a change is harmless, and marks the rows. :func:`reconcile_roles` compares every member
of the server with the CRM and fixes whatever drifted (roles changed by hand, changes made while
the bot was down, fans erased).

The two run side by side, and a reconcile walks the server for minutes with tiers read at its
start, so it never applies a tier it read earlier than the sync loop did: a member whose roles
differ from that snapshot has their tier read again right before the change, and one member's
roles are changed by one of them at a time (:func:`role_lock`). A tier changed after the sync
loop read it keeps its row unmarked, so the loop applies it on its next pass.

superfan owns the configured tier roles: a member holds exactly the role of their tier (and the
lower tiers' with ``cumulative_tier_roles``); a member without a fan record holds none. A missing
permission is logged and counted, never raised: the next reconcile repairs it once fixed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

import discord
from sqlalchemy.ext.asyncio import AsyncSession

from bot.writer import Action
from crm import role_outbox
from crm.tiers import TierRules

if TYPE_CHECKING:
    from bot.app import Crm
    from bot.config import DiscordConfig

log = logging.getLogger(__name__)
PLATFORM = "discord"
CHUNK = 500
PERMISSION_HINT = "give the bot Manage Roles and move its role above the tier roles"
_locks: weakref.WeakKeyDictionary[discord.Client, asyncio.Lock] = weakref.WeakKeyDictionary()


@dataclass
class RoleReport:
    """What a sync or reconcile did, for logs and tests."""

    members: int = 0
    added: int = 0
    removed: int = 0
    failed: int = 0
    marked: int = 0


def target_guild(client: discord.Client, guild_id: int, role_ids: Iterable[int]) -> discord.Guild | None:
    """The configured server, or (``guild_id`` 0) the first server that has one of the tier roles."""
    if guild_id:
        return client.get_guild(guild_id)
    wanted = set(role_ids)
    return next((g for g in client.guilds if any(g.get_role(r) for r in wanted)), None)


def tier_roles(guild: discord.Guild, role_ids: Mapping[str, int], rules: TierRules) -> dict[str, discord.Role]:
    """Configured tier key → role of ``guild``; unknown tiers and deleted roles are logged and skipped."""
    out: dict[str, discord.Role] = {}
    for key, role_id in role_ids.items():
        role = guild.get_role(role_id)
        if key not in rules.keys:
            log.warning("[discord] tier_role_ids has %r, which is not a tier (tiers: %s)", key, ", ".join(rules.keys))
        elif role is None:
            log.warning("[discord] tier_role_ids.%s = %s is not a role of server %s", key, role_id, guild.id)
        else:
            out[key] = role
    return out


def role_lock(client: discord.Client) -> asyncio.Lock:
    """Held while reading a member's tier and changing their roles, so two passes cannot cross."""
    lock = _locks.get(client)
    if lock is None:
        lock = _locks[client] = asyncio.Lock()
    return lock


def wanted_roles(tier: str | None, roles: Mapping[str, discord.Role], rules: TierRules,
                 cumulative: bool) -> set[discord.Role]:
    if tier is None:
        return set()
    if cumulative:
        return {role for key, role in roles.items() if rules.rank(key) <= rules.rank(tier)}
    return {roles[tier]} if tier in roles else set()


async def apply_tier(member: discord.Member, tier: str | None, roles: Mapping[str, discord.Role],
                     rules: TierRules, *, cumulative: bool, report: RoleReport) -> bool:
    """Add/remove only what differs (idempotent). False means "try again later" (not a 403/404)."""
    managed = set(roles.values())
    want = wanted_roles(tier, roles, rules, cumulative)
    have = {role for role in member.roles if role in managed}
    add, remove = sorted(want - have), sorted(have - want)
    reason = f"superfan tier: {tier or 'none'}"
    try:
        if add:
            await member.add_roles(*add, reason=reason)
            report.added += len(add)
        if remove:
            await member.remove_roles(*remove, reason=reason)
            report.removed += len(remove)
    except discord.Forbidden as exc:
        report.failed += 1
        log.warning("cannot change tier roles of member %s (%s): %s", member.id, exc.text or exc.status,
                    PERMISSION_HINT)
    except discord.NotFound:
        log.info("member %s or a tier role disappeared during role sync", member.id)
    except discord.HTTPException as exc:
        report.failed += 1
        log.warning("Discord refused a tier role change for member %s (HTTP %s); will retry", member.id, exc.status)
        return False
    return True


async def _write(client: discord.Client, crm: Crm, name: str,
                 work: Callable[[AsyncSession], Awaitable[int | None]]) -> int | None:
    """A role-sync write on the bot's writer when it has one: a second writer beside it would wait
    for SQLite's lock, and during a burst of messages past its busy timeout. Else a transaction."""
    run_action = getattr(client, "run_action", None)
    if run_action is not None:
        return cast("int | None", await run_action(Action(name, lambda session, _now: work(session))))
    async with crm.sessions.begin() as session:
        return await work(session)


async def _mark(client: discord.Client, crm: Crm, ids: list[int], now: datetime) -> None:
    await _write(client, crm, "tier roles synced", lambda session: role_outbox.mark_synced(session, ids, now))


async def _member(guild: discord.Guild, user_id: int) -> discord.Member | None:
    member = guild.get_member(user_id)
    if member is not None or guild.chunked:
        return member
    try:
        return await guild.fetch_member(user_id)
    except discord.NotFound:
        return None


def _role_context(
    client: discord.Client, crm: Crm, what: str
) -> tuple[discord.Guild, dict[str, discord.Role], DiscordConfig, TierRules] | None:
    """Target server, its tier roles, config and rules; None (logged as ``what``) when there's nothing to do."""
    config, rules = crm.config.discord, crm.settings.tiers
    if not config.tier_role_ids:
        return None
    guild = target_guild(client, config.guild_id, config.tier_role_ids.values())
    if guild is None:
        log.warning("%s: the bot is not in a server with the configured tier roles", what)
        return None
    return guild, tier_roles(guild, config.tier_role_ids, rules), config, rules


async def sync_pending_roles(client: discord.Client, crm: Crm, *, now: datetime | None = None) -> RoleReport:
    """Apply tier changes not yet reflected in roles, then mark them (the outbox drain)."""
    report = RoleReport()
    context = _role_context(client, crm, "tier role sync")
    if context is None:
        return report
    guild, roles, config, rules = context
    after = 0
    while True:
        async with crm.read() as session:  # a snapshot: never waits for, or holds up, the writer
            changes = await role_outbox.pending_changes(session, after=after, limit=CHUNK)
            if not changes:
                break
            after = changes[-1][0]
            fan_ids = sorted({fid for _, fid in changes})
            idents = await role_outbox.platform_tiers(session, PLATFORM, fan_ids=fan_ids)
        retry: set[int] = set()
        for fan_id, external_id, tier in idents:
            member = await _member(guild, int(external_id)) if str(external_id).isdigit() else None
            if member is None or member.bot:
                continue
            report.members += 1
            async with role_lock(client):
                ok = await apply_tier(member, tier, roles, rules, cumulative=config.cumulative_tier_roles,
                                      report=report)
            if not ok:
                retry.add(int(fan_id))
        done = [cid for cid, fid in changes if fid not in retry]
        await _mark(client, crm, done, now or client_now(client))
        report.marked += len(done)
    return report


async def reconcile_roles(client: discord.Client, crm: Crm, *, now: datetime | None = None) -> RoleReport:
    """Make every member's tier roles match the CRM; marks the tier changes it covered as synced."""
    report = RoleReport()
    context = _role_context(client, crm, "role reconcile")
    if context is None:
        return report
    guild, roles, config, rules = context
    if not guild.chunked:
        await guild.chunk()
    members = [m for m in guild.members if not m.bot]
    tiers: dict[str, str] = {}
    async with crm.read() as session:  # one snapshot: the tiers as of change ``high``
        high = await role_outbox.latest_change_id(session)
        rows = await role_outbox.platform_tiers(session, PLATFORM, external_ids=[str(m.id) for m in members])
        tiers.update({eid: tier for _, eid, tier in rows})
    for member in members:
        report.members += 1
        async with role_lock(client):
            tier = tiers.get(str(member.id))
            managed = set(roles.values())
            if wanted_roles(tier, roles, rules, config.cumulative_tier_roles) != managed.intersection(member.roles):
                tier = await _current_tier(crm, member.id)  # the snapshot may be older than the sync loop's
            await apply_tier(member, tier, roles, rules, cumulative=config.cumulative_tier_roles, report=report)
    if high is not None:
        at = now or client_now(client)
        report.marked = await _write(client, crm, "tier roles reconciled",
                                     lambda session: role_outbox.mark_synced_through(session, high, at)) or 0
    log.info("tier roles reconciled: %d members, %d added, %d removed, %d failed",
             report.members, report.added, report.removed, report.failed)
    return report


async def _current_tier(crm: Crm, user_id: int) -> str | None:
    """The member's tier as committed now (None: no fan record)."""
    async with crm.read() as session:
        rows = await role_outbox.platform_tiers(session, PLATFORM, external_ids=[str(user_id)])
    return rows[0][2] if rows else None


async def clear_roles(member: discord.Member, crm: Crm) -> RoleReport:
    """Remove every tier role from a member whose fan record is gone (``/forget-me``)."""
    report = RoleReport()
    config = crm.config.discord
    if config.tier_role_ids and member.guild is not None:
        roles = tier_roles(member.guild, config.tier_role_ids, crm.settings.tiers)
        await apply_tier(member, None, roles, crm.settings.tiers, cumulative=False, report=report)
    return report


def client_now(client: discord.Client) -> datetime:
    """The bot's clock when it has one (tests inject it), else the wall clock."""
    clock = getattr(client, "clock", None)
    if clock is not None:
        return clock()
    from crm.clock import utcnow

    return utcnow()
