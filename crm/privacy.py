"""Privacy (Taiwan PDPA, GDPR): opt-out, erasure and export of everything stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import FanNotFound
from crm.fan_tables import delete_rows
from crm.identity import resolve_identities
from crm.models import Delivery, Fan, Identity, Interaction, table
from crm.profiles import amount_of
from crm.settings import CrmSettings

EXPORT_COLUMNS = ("fan", "platform", "external_id", "display_name", "kind", "occurred_at", "amount",
                  "currency", "event_id", "text")


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


async def export_rows(session: AsyncSession, fan_id: int | None = None,
                      batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
    """Every stored interaction in the import format (``superfan import`` reads it back).

    ``fan`` groups the rows of one fan across platforms so that a re-import keeps merged fans
    merged; the identity's display name is the one stored for it.
    """
    ic, dc = table(Interaction).c, table(Identity).c  # Core columns: no ORM loading per row
    stmt = (
        select(ic.fan_id, ic.platform, dc.external_id, dc.display_name, ic.kind, ic.occurred_at, ic.amount_cents,
               ic.currency, ic.source_event_id, ic.summary)
        .join_from(table(Interaction), table(Identity), (dc.fan_id == ic.fan_id) & (dc.platform == ic.platform))
        .order_by(ic.occurred_at, ic.id)
    )
    if fan_id is not None:
        stmt = stmt.where(ic.fan_id == fan_id)
    result = await session.stream(stmt.execution_options(yield_per=batch))
    seen: set[tuple[str, str]] = set()
    # A batch of rows per trip into the driver: fetched one at a time, every row was a greenlet
    # switch, more than half of exporting 200k rows.
    async for rows in result.partitions(batch):
        for fid, platform, external_id, display, kind, at, cents, currency, eid, text in rows:
            if (platform, eid) in seen:  # a fan with two identities on one platform: export once
                continue
            seen.add((platform, eid))
            yield {
                "fan": f"fan-{fid}", "platform": platform, "external_id": external_id,
                "display_name": display or "", "kind": kind, "occurred_at": at.isoformat(),
                "amount": "" if cents is None else str(amount_of(cents)), "currency": currency or "",
                "event_id": eid, "text": text or "",
            }
