"""What fans did with a drop's post in the tier channel on Discord: the reactions it gathered.

The post itself is recorded by ``crm.drops.record_post`` (``drops.post_channel_id``,
``post_message_id``). Nothing extra is stored to count its reactions: every reaction a fan adds in
the server is already an interaction (``kind = 'reaction'``, event id
``reaction:<message id>:<user id>:<emoji>``, written by the Discord intake), so the count is read
from there. It counts reactions as superfan saw them arrive: a reaction removed later still
counts (the intake keeps its row), the bot's own and other bots' never do.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.models import Drop, Interaction, Outbox

PLATFORM = "discord"


@dataclass(frozen=True)
class PostReactions:
    """The drop's post and what it gathered: reactions in all, and how many fans gave them."""

    channel_id: str
    message_id: str
    reactions: int
    fans: int


async def post_reactions(session: AsyncSession, drop_id: int) -> PostReactions | None:
    """Reactions on the drop's tier-channel post; None when the drop has not been posted (yet)."""
    posted = (await session.execute(
        select(Drop.post_channel_id, Drop.post_message_id, Drop.created_at).where(Drop.id == drop_id))).first()
    if posted is None or posted.post_message_id is None:
        return None
    # Reactions cannot predate the drop; the time bound lets the occurred_at index narrow the scan.
    counted = (await session.execute(
        select(func.count(), func.count(func.distinct(Interaction.fan_id)))
        .where(Interaction.platform == PLATFORM, Interaction.kind == "reaction",
               Interaction.occurred_at >= posted.created_at,
               Interaction.source_event_id.startswith(f"reaction:{posted.post_message_id}:", autoescape=True))
    )).one()
    return PostReactions(str(posted.post_channel_id or ""), posted.post_message_id, int(counted[0]),
                         int(counted[1]))


async def post_failure(session: AsyncSession, drop_id: int) -> str | None:
    """Why the drop's tier-channel post was given up (its outbox row, ``drop:D:post``), or None
    while it is pending, once it went out, or when the drop has no post."""
    row = (await session.execute(select(Outbox.status, Outbox.last_error)
                                 .where(Outbox.idempotency_key == f"drop:{drop_id}:post"))).first()
    if row is None or row.status != outbox.FAILED:
        return None
    return row.last_error or "failed"


async def post_reactions_many(session: AsyncSession, drop_ids: list[int]) -> dict[int, PostReactions]:
    """:func:`post_reactions` for several drops (a list or the digest), by drop id; unposted ones left out."""
    found: dict[int, PostReactions] = {}
    for drop_id in drop_ids:
        counted = await post_reactions(session, drop_id)
        if counted is not None:
            found[drop_id] = counted
    return found
