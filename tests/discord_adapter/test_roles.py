"""Tier → role sync: tier changes from anywhere reach Discord, reconcile repairs drift, 403s don't crash."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from sqlalchemy import select, update

from bot.app import Crm
from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.roles import reconcile_roles, sync_pending_roles
from bot.sandbox.discord_emulator import DiscordEmulator
from crm import role_outbox
from crm.clock import utcnow
from crm.fan_actions import ensure_fan
from crm.models import TierChange
from crm.tiers_service import pin
from tests.discord_adapter.conftest import (
    CLOSE_FRIEND_ROLE,
    FAN,
    FAN2,
    FAN_TIER_ROLE,
    GUILD,
    MOD,
    MOD_ROLE,
    STAFF,
    STAFF_ROLE,
    SUPERFAN_ROLE,
    eventually,
    running,
    slash,
)


async def _pin(crm: Crm, user: int, tier: str | None) -> int:
    """A tier change made outside Discord (the CLI, a LINE purchase, the decay job)."""
    async with crm.sessions.begin() as session:
        fan_id = await ensure_fan(session, crm.settings, platform="discord", external_id=str(user),
                                  display_name=None, now=utcnow())
        await pin(session, crm.settings, fan_id, tier, by="cli", now=utcnow())
    return fan_id


async def _unsynced(crm: Crm) -> list[int]:
    async with crm.sessions() as session:
        return list((await session.execute(select(TierChange.id).where(TierChange.roles_synced_at.is_(None))))
                    .scalars())


async def _roles_are(emu: DiscordEmulator, user: int, expected: list[int]) -> bool:
    return emu.member_roles(GUILD, user) == expected


@pytest.mark.parametrize("discord_overrides", [{"role_sync_seconds": 0.1}])
async def test_tier_changes_made_elsewhere_reach_roles_and_are_marked(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    await _pin(crm, FAN, "superfan")
    await eventually(lambda: _roles_are(emu, FAN, [SUPERFAN_ROLE]))
    await eventually(lambda: _none(crm))
    await _pin(crm, FAN, "fan")
    await eventually(lambda: _roles_are(emu, FAN, [FAN_TIER_ROLE]))
    puts = [r for r in emu.requests if r.method == "PUT" and "/roles/" in r.path]
    assert len(puts) == 2


async def _none(crm: Crm) -> bool:
    return await _unsynced(crm) == []


async def test_reconcile_repairs_drift_after_downtime_and_is_idempotent(emu: DiscordEmulator, crm: Crm) -> None:
    emu.world.guilds[GUILD].members[FAN].roles.append(CLOSE_FRIEND_ROLE)  # given by hand, not the fan's tier
    emu.world.guilds[GUILD].members[MOD].roles.append(SUPERFAN_ROLE)  # MOD has no fan record at all
    await _pin(crm, FAN, "fan")
    await _pin(crm, FAN2, "superfan")
    async with crm.sessions.begin() as session:  # as if synced long ago, then drifted while the bot was down
        await session.execute(update(TierChange).values(roles_synced_at=utcnow()))

    async with running(crm) as handle:
        report = await handle.reconcile_roles()
        assert (report.added, report.removed, report.failed) == (2, 2, 0)
        assert emu.member_roles(GUILD, FAN) == [FAN_TIER_ROLE]
        assert emu.member_roles(GUILD, FAN2) == [SUPERFAN_ROLE]
        assert emu.member_roles(GUILD, MOD) == [MOD_ROLE]
        assert emu.member_roles(GUILD, STAFF) == [STAFF_ROLE]
        await eventually(lambda: _cache_caught_up(handle.client))
        before = len(emu.requests)
        again = await handle.reconcile_roles()
        assert (again.added, again.removed) == (0, 0)
        assert not [r for r in emu.requests[before:] if "/roles/" in r.path]


async def test_role_sync_reads_a_snapshot_while_another_writer_holds_the_lock(emu: DiscordEmulator, crm: Crm) -> None:
    """Reading which roles to give takes no write lock: with SQLite's lock held elsewhere (the
    group writer in a commit, a CLI import) the roles still change (through the reconcile or the
    outbox drain the bot runs at start, both reads); only marking them synced waits."""
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    await _pin(crm, FAN, "fan")
    await _pin(crm, FAN2, "superfan")
    async with running(crm) as handle:
        holder = sqlite3.connect(crm.engine.url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            reconciling = asyncio.create_task(handle.reconcile_roles())
            await eventually(lambda: _roles_are(emu, FAN2, [SUPERFAN_ROLE]))
            assert emu.member_roles(GUILD, FAN) == [FAN_TIER_ROLE]
            assert not reconciling.done()  # marking the changes synced does wait for the lock
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await asyncio.wait_for(reconciling, 10)
        # marked by the reconcile or by the drain the bot ran at start, whichever got the lock first
        await eventually(lambda: _none(crm))


async def _cache_caught_up(bot: SuperfanBot) -> bool:
    member = bot.get_guild(GUILD).get_member(FAN)
    return [r.id for r in member.roles[1:]] == [FAN_TIER_ROLE]


async def test_missing_permission_is_logged_not_a_crash(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bot.discord_adapter.roles")
    emu.fail_next("PUT", "/roles/", 403)
    pinned = await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="superfan")
    assert "pinned" in pinned["content"]
    await eventually(lambda: _warned(caplog))
    assert emu.member_roles(GUILD, FAN) == []
    await eventually(lambda: _none(crm))
    assert "checked in" in (await slash(emu, "checkin", FAN2))["content"].lower()
    fixed = await reconcile_roles(bot, crm)  # once the creator fixed the bot's permissions
    assert fixed.added == 1 and emu.member_roles(GUILD, FAN) == [SUPERFAN_ROLE]


async def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    return any("Manage Roles" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("discord_overrides", [{"cumulative_tier_roles": True}])
async def test_cumulative_roles_give_every_tier_up_to_the_fans(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm
) -> None:
    await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="close_friend")
    await eventually(lambda: _roles_are(emu, FAN, [FAN_TIER_ROLE, SUPERFAN_ROLE, CLOSE_FRIEND_ROLE]))
    assert emu.member_roles(GUILD, FAN) == [FAN_TIER_ROLE, SUPERFAN_ROLE, CLOSE_FRIEND_ROLE]
    await slash(emu, "tier", STAFF, subcommand="pin", member=FAN, tier="fan")
    await eventually(lambda: _roles_are(emu, FAN, [FAN_TIER_ROLE]))
    assert emu.member_roles(GUILD, FAN) == [FAN_TIER_ROLE]


def _cached_roles(bot: SuperfanBot, user: int) -> list[int]:
    member = bot.get_guild(GUILD).get_member(user)
    return [r.id for r in member.roles[1:]]


@pytest.mark.parametrize("discord_overrides", [{"role_sync_seconds": 3600}])
async def test_reconcile_never_reverts_a_tier_changed_after_its_snapshot(
    emu: DiscordEmulator, bot: SuperfanBot, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 9: the hourly reconcile reads every member's tier once, then walks the server; a
    promotion committed meanwhile, already given by the sync loop, must not be taken back."""
    await _pin(crm, FAN, "fan")
    await sync_pending_roles(bot, crm)
    await eventually(lambda: _roles_are(emu, FAN, [FAN_TIER_ROLE]))
    real = role_outbox.platform_tiers
    promoted = False

    async def snapshot_then_promote(session, platform, **keys):  # type: ignore[no-untyped-def]
        nonlocal promoted
        rows = await real(session, platform, **keys)
        if keys.get("external_ids") is not None and not promoted:  # the reconcile's snapshot
            promoted = True
            await _pin(crm, FAN, "superfan")  # committed after the snapshot, before the walk
            await sync_pending_roles(bot, crm)  # the sync loop gives the new role at once
            await eventually(lambda: _cache_is(bot, FAN, [SUPERFAN_ROLE]))
        return rows

    monkeypatch.setattr(role_outbox, "platform_tiers", snapshot_then_promote)
    await reconcile_roles(bot, crm)
    assert promoted
    assert emu.member_roles(GUILD, FAN) == [SUPERFAN_ROLE]
    assert await _unsynced(crm) == []


async def _cache_is(bot: SuperfanBot, user: int, roles: list[int]) -> bool:
    return _cached_roles(bot, user) == roles
