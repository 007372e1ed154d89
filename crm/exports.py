"""Every stored interaction as import-format rows (``superfan export`` csv/jsonl), streamed in time order.

At creator scale (10M interactions) the export must not hold what it has written: rows come off
the ``occurred_at`` index a batch at a time. On SQLite, when the creator's timezone keeps one
offset over the exported span (Asia/Taipei always), SQLite itself formats every field and the
batches go from the driver to the writer untouched; otherwise (a zone with summer time,
PostgreSQL) each row is formatted here, its time by :class:`LocalTimes`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import String, func, literal, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import as_utc
from crm.db import fetch_rows, parse_sqlite_datetime, sqlite_driver
from crm.models import Identity, Interaction, table
from crm.profiles import amount_of

EXPORT_COLUMNS = ("fan", "platform", "external_id", "display_name", "kind", "occurred_at", "amount",
                  "currency", "event_id", "text")
_ic, _dc = table(Interaction).c, table(Identity).c
#: Identities that are not their fan's first on a platform (what merging two fans of one platform
#: leaves): the export joins each interaction to the first only, so no row is written twice.
_earlier = table(Identity).alias("earlier").c
_LATER_IDENTITIES = select(_dc.id).where(select(literal(1)).where(
    _earlier.fan_id == _dc.fan_id, _earlier.platform == _dc.platform, _earlier.id < _dc.id).exists())
_SPAN = select(func.min(_ic.occurred_at), func.max(_ic.occurred_at))


async def export_rows(session: AsyncSession, fan_id: int | None = None, batch: int = 5000, *,
                      tz: tzinfo = UTC) -> AsyncIterator[dict[str, Any]]:
    """Every stored interaction in the import format (``superfan import`` reads it back).

    ``fan`` groups the rows of one fan across platforms so that a re-import keeps merged fans
    merged; the identity's display name is the one stored for it. Times are in ``tz`` (the
    creator's timezone, as ``superfan fans`` shows them), with their offset.
    """
    async for rows in export_batches(session, fan_id, batch, tz=tz):
        for row in rows:
            yield dict(zip(EXPORT_COLUMNS, row, strict=True))


async def export_batches(session: AsyncSession, fan_id: int | None = None, batch: int = 5000, *,
                         tz: tzinfo = UTC, formatted_in_sql: bool = True) -> AsyncIterator[list[tuple[str, ...]]]:
    """:func:`export_rows` as batches of tuples in :data:`EXPORT_COLUMNS` order (what a CSV writer takes).

    Memory holds one batch (a set of every exported event id held 10M entries at creator scale).
    ``formatted_in_sql=False`` formats every row here even where SQLite could (for comparison).
    """
    later = [int(r[0]) for r in await fetch_rows(session, _LATER_IDENTITIES)]
    joined = (_dc.fan_id == _ic.fan_id) & (_dc.platform == _ic.platform)
    if later:
        joined &= _dc.id.not_in(later)
    where = [] if fan_id is None else [_ic.fan_id == fan_id]
    driver = await sqlite_driver(session)
    offset = await _one_offset(session, tz, where) if driver is not None and formatted_in_sql else None
    if driver is not None and offset is not None:
        stmt = (select(*_sqlite_fields(offset)).join_from(table(Interaction), table(Identity), joined).where(*where)
                .order_by(_ic.occurred_at, _ic.id))
        sql = str(stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}))
        cursor = await driver.execute(sql)
        # The next batch is read in SQLite's thread while the caller writes this one (sqlite3
        # lets go of the GIL while it steps): two cores at work instead of one at a time.
        pending = asyncio.ensure_future(cursor.fetchmany(batch))
        try:
            while rows := await pending:
                pending = asyncio.ensure_future(cursor.fetchmany(batch))
                yield rows
        finally:
            await asyncio.wait([pending])
            await cursor.close()
        return
    stmt = (select(_ic.fan_id, _ic.platform, _dc.external_id, _dc.display_name, _ic.kind,
                   type_coerce(_ic.occurred_at, String), _ic.amount_cents, _ic.currency, _ic.source_event_id,
                   _ic.summary)
            .join_from(table(Interaction), table(Identity), joined).where(*where).order_by(_ic.occurred_at, _ic.id))
    result = await session.stream(stmt.execution_options(yield_per=batch))
    local = LocalTimes(tz)
    async for part in result.partitions(batch):  # a batch per trip into the driver, not a row
        yield [(f"fan-{fid}", platform, external_id, display or "", kind, local.iso(at),
                "" if cents is None else str(amount_of(cents)), currency or "", eid, text or "")
               for fid, platform, external_id, display, kind, at, cents, currency, eid, text in part]


async def _one_offset(session: AsyncSession, tz: tzinfo, where: list[Any]) -> timedelta | None:
    """``tz``'s offset if it is one whole number of minutes over every exported time, else ``None``.

    Checked hour by hour over the span (a year is 8,760 look-ups): a zone with summer time, or
    one that changed its offset within the span, is formatted row by row instead.
    """
    first, last = (await fetch_rows(session, _SPAN.where(*where), datetime_columns=(0, 1)))[0]
    if first is None or last is None:
        return None
    offset = first.astimezone(tz).utcoffset()
    if offset is None or offset % timedelta(minutes=1):
        return None
    at = first.replace(minute=0, second=0, microsecond=0)
    while at <= last + timedelta(hours=1):
        if at.astimezone(tz).utcoffset() != offset:
            return None
        at += timedelta(hours=1)
    return offset


def _sqlite_fields(offset: timedelta) -> list[Any]:
    """The export's fields as SQLite formats them, exactly as the row-by-row path writes them
    (``datetime.isoformat`` in ``tz``; :func:`crm.profiles.amount_of` as text)."""
    seconds = int(offset.total_seconds())
    whole = abs(seconds)
    suffix = f"{'+' if seconds >= 0 else '-'}{whole // 3600:02d}:{whole % 3600 // 60:02d}"
    at = (f"strftime('%Y-%m-%dT%H:%M:%S', interactions.occurred_at, '{seconds:+d} seconds')"
          " || CASE WHEN substr(interactions.occurred_at, 21, 6) IN ('', '000000') THEN ''"
          " ELSE '.' || substr(interactions.occurred_at, 21, 6) END"
          f" || '{suffix}'")
    amount = ("CASE WHEN interactions.amount_cents IS NULL THEN ''"
              " WHEN interactions.amount_cents % 100 = 0 THEN CAST(interactions.amount_cents / 100 AS TEXT)"
              " WHEN interactions.amount_cents % 10 = 0"
              " THEN printf('%d.%d', interactions.amount_cents / 100, interactions.amount_cents % 100 / 10)"
              " ELSE printf('%d.%02d', interactions.amount_cents / 100, interactions.amount_cents % 100) END")
    return [literal_column("'fan-' || interactions.fan_id"), _ic.platform, _dc.external_id,
            func.coalesce(_dc.display_name, ""), _ic.kind, literal_column(at), literal_column(amount),
            func.coalesce(_ic.currency, ""), _ic.source_event_id, func.coalesce(_ic.summary, "")]


class LocalTimes:
    """Stored times as ISO-8601 in ``tz`` with the offset, for millions of rows in time order.

    SQLite hands the stored text (``2026-11-22 12:15:00.000000``, UTC). Where an hour has one
    offset of whole hours (Asia/Taipei always; elsewhere all but the hours a clock change falls
    in), the local date and hour and the offset are worked out once for that hour and minutes and
    seconds are copied from the text; other hours are worked out per minute. Other databases hand
    datetimes, converted one by one.
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._hour: dict[str, tuple[str, str] | None] = {}
        self._minute: dict[str, tuple[str, str]] = {}

    def iso(self, value: str | datetime) -> str:
        if not isinstance(value, str):
            return as_utc(value).astimezone(self.tz).isoformat()
        micro = value[20:26]
        fraction = "." + micro if micro and micro != "000000" else ""
        if value[:13] not in self._hour:
            self._hour[value[:13]] = self._whole_hour(value[:13])
        hour = self._hour[value[:13]]
        if hour is not None:
            return f"{hour[0]}{value[13:19]}{fraction}{hour[1]}"
        head = self._minute.get(value[:16])
        if head is None:
            local = parse_sqlite_datetime(value[:16] + ":00").astimezone(self.tz).isoformat()
            head = self._minute[value[:16]] = (local[:16], local[19:])
        return f"{head[0]}{value[16:19]}{fraction}{head[1]}"

    def _whole_hour(self, hour: str) -> tuple[str, str] | None:
        if len(self._hour) > 4096:
            self._hour.clear()
            self._minute.clear()
        start = parse_sqlite_datetime(hour + ":00:00").astimezone(self.tz)
        end = (start + timedelta(minutes=59, seconds=59)).astimezone(self.tz)
        offset = start.utcoffset()
        if offset is None or offset != end.utcoffset() or offset % timedelta(hours=1):
            return None
        local = start.isoformat()
        return local[:13], local[19:]
