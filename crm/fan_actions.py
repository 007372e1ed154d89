"""What fans do themselves on any platform: check in, link accounts, refer friends.

Adapters (LINE keywords, Discord slash commands) call these with the platform identity; each
function resolves the fan, applies the rule and records the interaction through ``record_many``
so points, dedupe and tiers work exactly as for every other event.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import BadInput
from crm.identity import resolve_identities
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.merge import merge_fans
from crm.models import Event, Fan, Identity, Interaction, LinkCode
from crm.settings import CrmSettings

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud and retyped
NEW_FAN_DAYS = 14


@dataclass(frozen=True)
class CheckinResult:
    status: str  # checked_in | already | unknown_code | opted_out
    fan_id: int
    streak: int = 0
    event_name: str | None = None


def normalise_code(code: str) -> str:
    return unicodedata.normalize("NFKC", code).strip().upper()


def new_code(length: int = 6) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


async def ensure_fan(session: AsyncSession, settings: CrmSettings, *, platform: str, external_id: str,
                     display_name: str | None, now: datetime) -> int:
    """The fan behind a platform identity, created on first sight."""
    key = (platform, external_id)
    refs = await resolve_identities(session, {key: display_name}, {key: (now, now)}, settings, now)
    return refs[key].fan_id


async def _fan(session: AsyncSession, fan_id: int) -> Fan:
    fan = await session.get(Fan, fan_id)
    if fan is None:
        raise BadInput(f"no fan #{fan_id}", code="fan.unknown_id", fan_id=fan_id)
    return fan


async def checkin(
    session: AsyncSession, settings: CrmSettings, *, platform: str, external_id: str, display_name: str | None,
    at: datetime, now: datetime, source_event_id: str, code: str | None = None,
) -> CheckinResult:
    """One check-in per fan per local day (creator's timezone), or once per event with a code.

    The stored event id is derived from the fan and the day (or event), so a check-in repeated on
    the same day — from either platform, or raced — is stored once.
    """
    fan_id = await ensure_fan(session, settings, platform=platform, external_id=external_id,
                              display_name=display_name, now=now)
    if (await _fan(session, fan_id)).opted_out:
        return CheckinResult("opted_out", fan_id)
    if code:
        event = (await session.execute(select(Event).where(Event.code == normalise_code(code)))).scalar_one_or_none()
        if event is None or not (event.starts_at - timedelta(hours=12) <= at <= event.ends_at + timedelta(hours=12)):
            return CheckinResult("unknown_code", fan_id)
        eid = f"event:{event.code}:{fan_id}"
        done = await _exists(session, fan_id, "event_checkin", eid)
        if not done:
            await record_many(session, [InteractionIn(platform, external_id, "event_checkin", at, eid, display_name)],
                              settings, now)
        return CheckinResult("already" if done else "checked_in", fan_id, await streak(session, settings, fan_id, at),
                             event.name)
    day = settings.scoring.local_day(at)
    eid = f"checkin:{fan_id}:{day.isoformat()}"
    done = await _exists(session, fan_id, "checkin", eid)
    if not done:
        await record_many(session, [InteractionIn(platform, external_id, "checkin", at, eid, display_name)],
                          settings, now)
    return CheckinResult("already" if done else "checked_in", fan_id, await streak(session, settings, fan_id, at))


async def _exists(session: AsyncSession, fan_id: int, kind: str, eid: str) -> bool:
    row = await session.execute(select(Interaction.id).where(
        Interaction.fan_id == fan_id, Interaction.kind == kind, Interaction.source_event_id == eid).limit(1))
    return row.first() is not None


async def streak(session: AsyncSession, settings: CrmSettings, fan_id: int, at: datetime) -> int:
    """Consecutive local days with a check-in, ending on the day of ``at``."""
    rows = await session.execute(select(Interaction.occurred_at).where(
        Interaction.fan_id == fan_id, Interaction.kind == "checkin",
        Interaction.occurred_at >= at - timedelta(days=400), Interaction.occurred_at <= at + timedelta(days=1)))
    days = {settings.scoring.local_day(t) for t in rows.scalars()}
    day, count = settings.scoring.local_day(at), 0
    while day in days:
        count += 1
        day -= timedelta(days=1)
    return count


async def create_event(session: AsyncSession, *, code: str, name: str, starts_at: datetime,
                       ends_at: datetime, now: datetime | None = None) -> Event:
    """A meetup fans check in to with ``code`` between ``starts_at`` and ``ends_at`` (±12 h)."""
    norm = normalise_code(code)
    if not norm or len(norm) > 32 or ends_at < starts_at:
        raise BadInput("an event needs a code of 1–32 characters and an end after its start", code="event.bad",
                       max=32)
    if (await session.execute(select(Event.id).where(Event.code == norm))).first():
        raise BadInput(f"event code {norm} is already used", code="event.code_taken", event_code=norm)
    event = Event(code=norm, name=name.strip()[:200] or norm, starts_at=starts_at, ends_at=ends_at,
                  created_at=now or starts_at)
    session.add(event)
    await session.flush()
    return event


async def issue_link_code(session: AsyncSession, fan_id: int, *, platform: str, now: datetime,
                          ttl: timedelta = timedelta(minutes=10)) -> str:
    """A one-time code the fan sends from their other account to merge the two records."""
    await _fan(session, fan_id)
    code = new_code()
    session.add(LinkCode(code=code, fan_id=fan_id, platform=platform, created_at=now, expires_at=now + ttl))
    await session.flush()
    return code


async def redeem_link_code(session: AsyncSession, settings: CrmSettings, code: str, *, platform: str,
                           external_id: str, display_name: str | None, now: datetime) -> int:
    """Merge the sender's record into the record that asked for ``code``; returns the kept fan id."""
    link = await session.get(LinkCode, normalise_code(code))
    if link is None:
        raise BadInput("unknown link code", code="link.unknown")
    if link.used_at is not None:
        raise BadInput("this link code was already used", code="link.used")
    if link.expires_at < now:
        raise BadInput("this link code has expired; ask for a new one", code="link.expired")
    if link.platform == platform:
        raise BadInput(f"send the code from your other account, not from {platform}", code="link.same_platform",
                       platform=platform)
    sender = await ensure_fan(session, settings, platform=platform, external_id=external_id,
                              display_name=display_name, now=now)
    keep = link.fan_id
    link.used_at = now
    await session.flush()
    if sender != keep:
        await merge_fans(session, settings, keep, sender, now=now)
    return keep


async def referral_code(session: AsyncSession, fan_id: int) -> str:
    """The fan's personal referral code, created on first ask."""
    fan = await _fan(session, fan_id)
    while fan.referral_code is None:
        code = new_code()
        if not (await session.execute(select(Fan.id).where(Fan.referral_code == code))).first():
            fan.referral_code = code
            await session.flush()
    return fan.referral_code


async def fan_by_referral_code(session: AsyncSession, code: str) -> int | None:
    """The fan whose personal referral code is ``code`` (typed in any case or width), or None."""
    norm = normalise_code(code)
    if not norm:
        return None
    return (await session.execute(select(Fan.id).where(Fan.referral_code == norm))).scalar_one_or_none()


async def primary_identity(session: AsyncSession, fan_id: int) -> tuple[str, str] | None:
    """The fan's oldest identity as (platform, external_id): where an interaction credited to the
    fan as a whole (a referral, a purchase by referral code) is recorded. None for an unknown fan."""
    row = (await session.execute(
        select(Identity.platform, Identity.external_id).where(Identity.fan_id == fan_id)
        .order_by(Identity.id).limit(1)
    )).first()
    return None if row is None else (row.platform, row.external_id)


async def redeem_referral(session: AsyncSession, settings: CrmSettings, code: str, *, platform: str,
                          external_id: str, display_name: str | None, at: datetime, now: datetime,
                          source_event_id: str) -> int:
    """Credit the code's owner with one ``referral`` for this new fan; returns the owner's fan id."""
    owner = await fan_by_referral_code(session, code)
    owner_identity = await primary_identity(session, owner) if owner is not None else None
    if owner is None or owner_identity is None:
        raise BadInput("unknown referral code", code="referral.unknown")
    fan_id = await ensure_fan(session, settings, platform=platform, external_id=external_id,
                              display_name=display_name, now=now)
    if fan_id == owner:
        raise BadInput("you cannot use your own referral code", code="referral.self")
    fan = await _fan(session, fan_id)
    if fan.referred_by is not None:
        raise BadInput("you have already used a referral code", code="referral.already_used")
    if fan.first_seen_at < now - timedelta(days=NEW_FAN_DAYS):
        raise BadInput(f"referral codes are for new fans (first seen within {NEW_FAN_DAYS} days)",
                       code="referral.not_new", days=NEW_FAN_DAYS)
    fan.referred_by = owner
    await session.flush()
    owner_platform, owner_external_id = owner_identity
    await record_many(session, [InteractionIn(owner_platform, owner_external_id, "referral", at,
                                              f"referral:{fan_id}", None, text=None)], settings, now)
    return owner
