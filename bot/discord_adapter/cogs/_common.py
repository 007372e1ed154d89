"""Small helpers the cogs share: who a Discord user is to the CRM, and how an event is recorded."""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal

import discord
from sqlalchemy.ext.asyncio import AsyncSession

from bot.discord_adapter.client import SuperfanBot
from crm.fan_actions import ensure_fan
from crm.identity import fan_by_identity
from crm.ingest import Recorded
from crm.interaction import InteractionIn
from crm.models import Fan

PLATFORM = "discord"


def external_id(user: discord.abc.User | discord.Object) -> str:
    return str(user.id)


def event_id(*parts: object) -> str:
    """A stable source event id; long ones (odd emoji names) are hashed to fit the column."""
    raw = ":".join(str(p) for p in parts)
    return raw if len(raw) <= 128 else f"{parts[0]}:h:" + hashlib.sha256(raw.encode()).hexdigest()[:64]


async def record_event(bot: SuperfanBot, item: InteractionIn) -> Recorded | None:
    """Record one interaction (see :meth:`SuperfanBot.record`); None when it waits for storage."""
    return await bot.record(item)


def interaction_in(user: discord.abc.User, kind: str, at: datetime, source_event_id: str, *,
                   text: str | None = None, amount: Decimal | None = None,
                   currency: str | None = None) -> InteractionIn:
    return InteractionIn(platform=PLATFORM, external_id=external_id(user), kind=kind, occurred_at=at,
                         source_event_id=source_event_id, display_name=user.display_name,
                         amount=amount, currency=currency, text=text)


async def own_fan_id(bot: SuperfanBot, session: AsyncSession, user: discord.abc.User) -> int:
    """The fan record of the user running a fan command, created on first use."""
    return await ensure_fan(session, bot.settings, platform=PLATFORM, external_id=external_id(user),
                            display_name=user.display_name, now=bot.now())


async def existing_fan(session: AsyncSession, user: discord.abc.User | discord.Object) -> Fan | None:
    """The fan record of a Discord user, or None (never creates one: looking is not tracking)."""
    return await fan_by_identity(session, PLATFORM, external_id(user))
