"""Privacy (Taiwan PDPA, GDPR): opt-out, erasure and export of everything stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import FanNotFound
from crm.exports import EXPORT_COLUMNS, export_rows  # the export of everything stored, kept where it was
from crm.fan_tables import delete_rows
from crm.identity import resolve_identities
from crm.models import Delivery, Fan, Identity, Interaction
from crm.settings import CrmSettings


async def set_opt_out(session: AsyncSession, fan_id: int, opted_out: bool) -> None:
    """Stop (or resume) recording a fan's interactions; pending deliveries to them are cancelled."""
    fan = await session.get(Fan, fan_id)
    if fan is None:
        raise FanNotFound(f"#{fan_id}")
    fan.opted_out = opted_out
    if opted_out:
        await session.execute(
            update(Delivery).where(Delivery.fan_id == fan_id, Delivery.status == "pending")
            .values(status="cancelled", error="fan opted out")
            .execution_options(synchronize_session=False)
        )
    await session.flush()


async def redact_texts(session: AsyncSession, platform: str, event_ids: Sequence[str]) -> int:
    """Drop the stored text of interactions whose source message was deleted; the history row,
    its time and its points stay (a deleted message was still sent)."""
    redacted = 0
    for start in range(0, len(event_ids), 500):
        result = await session.execute(
            update(Interaction)
            .where(Interaction.platform == platform, Interaction.source_event_id.in_(event_ids[start : start + 500]),
                   Interaction.summary.is_not(None))
            .values(summary=None).execution_options(synchronize_session=False))
        redacted += int(getattr(result, "rowcount", 0) or 0)
    return redacted


class Forgotten(NamedTuple):
    rows: int  # rows erased
    kept_opt_out: bool  # the fan's accounts stay, alone, marked "do not record"


async def forget_fan(session: AsyncSession, settings: CrmSettings, fan_id: int, now: datetime) -> Forgotten:
    """Erase a fan at their own request (``/forget-me``, 刪除我的資料).

    A fan who had stopped tracking asked for two things: keep nothing, and record nothing more.
    Erasing alone would forget the second, so their accounts (platform and id, nothing else) come
    back as nameless records marked opted out; the fan is told, and opting back in lifts it.
    """
    fan = await session.get(Fan, fan_id)
    if fan is None:
        raise FanNotFound(f"#{fan_id}")
    accounts: list[tuple[str, str]] = []
    if fan.opted_out:
        rows = await session.execute(select(Identity.platform, Identity.external_id).where(Identity.fan_id == fan_id))
        accounts = [(platform, external_id) for platform, external_id in rows]
    removed = await erase_fan(session, fan_id)
    if accounts:
        refs = await resolve_identities(session, dict.fromkeys(accounts), dict.fromkeys(accounts, (now, now)),
                                        settings, now)
        for ref in refs.values():
            await set_opt_out(session, ref.fan_id, True)
    return Forgotten(removed, bool(accounts))


async def erase_fan(session: AsyncSession, fan_id: int) -> int:
    """Delete every row that identifies the fan; returns how many rows went. Irreversible."""
    if await session.get(Fan, fan_id) is None:
        raise FanNotFound(f"#{fan_id}")
    removed = await delete_rows(session, fan_id)  # every table of crm.fan_tables.FAN_TABLES
    await session.execute(delete(Fan).where(Fan.id == fan_id).execution_options(synchronize_session=False))
    session.expunge_all()
    return removed + 1


__all__ = ["EXPORT_COLUMNS", "Forgotten", "erase_fan", "export_rows", "forget_fan", "redact_texts", "set_opt_out"]
