"""A platform message that was unsent or edited after it was recorded.

Messages are found by the platform's message id (``interactions.message_ref``), which LINE's
``unsend`` and ``messageEdited`` events name instead of the original webhook event. The history
row, its time and its points stay either way: the message was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Interaction
from crm.settings import CrmSettings

_CHUNK = 500


async def redact_message(session: AsyncSession, platform: str, message_ids: Sequence[str]) -> int:
    """Drop the stored text of the given messages (the fan took them back); returns rows changed.

    Like a deleted Discord message (``crm.privacy.redact_texts``): what a fan unsent is not
    kept, though that they wrote is.
    """
    ids = [m for m in dict.fromkeys(message_ids) if m]
    redacted = 0
    for start in range(0, len(ids), _CHUNK):
        result = await session.execute(
            update(Interaction)
            .where(Interaction.platform == platform, Interaction.message_ref.in_(ids[start : start + _CHUNK]),
                   Interaction.message_ref.is_not(None), Interaction.summary.is_not(None))
            .values(summary=None).execution_options(synchronize_session=False))
        redacted += int(getattr(result, "rowcount", 0) or 0)
    return redacted


async def edit_message(session: AsyncSession, settings: CrmSettings, platform: str, message_id: str, text: str,
                       now: datetime) -> bool:
    """Replace the stored summary of a message with its edited text; False if no stored text changed.

    The summary follows the same rules as when the message arrived: nothing when message text is
    not stored (``[privacy] store_message_text``), else whitespace collapsed and cut to
    ``summary_chars``. A message whose text was unsent stays redacted. The row keeps the time the
    message was sent; ``now`` (when the edit is applied) is not stored today.
    """
    summary = summarise(settings, text)
    result = await session.execute(
        update(Interaction)
        .where(Interaction.platform == platform, Interaction.message_ref == message_id,
               Interaction.message_ref.is_not(None), Interaction.summary.is_not(None))
        .values(summary=summary).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def summarise(settings: CrmSettings, text: str) -> str | None:
    """The stored summary of a message text under ``settings`` (as ``crm.ingest`` builds it)."""
    if not settings.store_text:
        return None
    limit = settings.summary_chars
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
