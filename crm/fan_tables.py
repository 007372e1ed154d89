"""The one list of tables that hold rows about a fan: merge, erasure and export all walk it.

Three operations must each touch every row that belongs to a fan: merging two records of one
person (nothing may stay behind on the record that goes), erasing a fan (nothing may survive),
and exporting what is stored (nothing may be withheld). When each kept its own list, a new table
could be forgotten by one of them. So a table with a foreign key to ``fans.id`` is declared here
once, with what a merge does with its rows; ``tests/crm/test_merge_privacy.py`` fails when a table
in ``crm.models`` points at a fan and is missing from :data:`FAN_TABLES`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm.models import (
    Base,
    Conversation,
    ConversationWait,
    Delivery,
    Fan,
    FanKindScore,
    FanTopic,
    Identity,
    Interaction,
    LinkCode,
    Note,
    Outbox,
    TierChange,
)
from crm.models import table as table_of

CHUNK = 500


class OnMerge(enum.Enum):
    """What a merge does with the rows of the record that goes away."""

    MOVE = "move"  # every row moves to the record that stays
    DEDUPE = "dedupe"  # rows move, except those the staying record already has (same unique key)
    ADD = "add"  # rows are sums: where both records have a row (same unique key) they are added up


@dataclass(frozen=True)
class FanTable:
    """A table with a ``fan_id`` column pointing at ``fans.id``.

    ``unique`` names the columns that, with ``fan_id``, must stay unique (``OnMerge.DEDUPE`` and
    ``OnMerge.ADD``); ``summed`` the columns ``OnMerge.ADD`` adds up.
    ``in_fan_document`` is true when the fan record of the JSON export (crm.profiles) already
    carries the table's content; the rows of every other table are exported as they are stored.
    """

    model: type[Base]
    on_merge: OnMerge = OnMerge.MOVE
    unique: tuple[str, ...] = ()
    summed: tuple[str, ...] = ()
    in_fan_document: bool = False

    @property
    def name(self) -> str:
        return str(self.model.__tablename__)

    @property
    def fan_column(self) -> Any:
        return self.model.fan_id  # type: ignore[attr-defined]


#: Every table that holds a row about a fan, children first (the order erasure deletes in).
FAN_TABLES: tuple[FanTable, ...] = (
    FanTable(FanKindScore, OnMerge.ADD, unique=("kind",), summed=("awarded", "points", "score_base"),
             in_fan_document=True),  # the fan document's score_explained
    FanTable(Delivery, OnMerge.DEDUPE, unique=("drop_id", "platform")),
    FanTable(LinkCode),
    FanTable(Conversation),
    FanTable(ConversationWait),
    FanTable(Outbox),  # pending messages to or about the fan: erased with them, never exported stale
    FanTable(TierChange),
    FanTable(Note, in_fan_document=True),
    FanTable(FanTopic, OnMerge.DEDUPE, unique=("topic", "source"), in_fan_document=True),
    FanTable(Interaction, in_fan_document=True),
    FanTable(Identity, in_fan_document=True),
)

#: Columns of ``fans`` itself that point at another fan: a merge repoints them at the record that
#: stays, erasure empties them (the other fan's row stays; only the pointer goes).
FAN_REFERENCES: tuple[Any, ...] = (Fan.referred_by,)


async def move_rows(session: AsyncSession, keep_id: int, other_id: int) -> None:
    """Move every fan-owned row of ``other_id`` onto ``keep_id`` (see :class:`OnMerge`)."""
    for entry in FAN_TABLES:
        model = entry.model
        column = entry.fan_column
        if entry.on_merge is not OnMerge.MOVE:
            twin = aliased(model)
            same_key = [getattr(twin, name) == getattr(model, name) for name in entry.unique]
            if entry.on_merge is OnMerge.ADD:
                theirs = twin.fan_id == other_id  # type: ignore[attr-defined]
                await session.execute(
                    update(model).where(column == keep_id, exists().where(and_(theirs, *same_key)))
                    .values({name: getattr(model, name) + select(getattr(twin, name)).where(theirs, *same_key)
                             .scalar_subquery() for name in entry.summed})
                    .execution_options(synchronize_session=False))
            kept = twin.fan_id == keep_id  # type: ignore[attr-defined]
            await session.execute(delete(model).where(column == other_id, exists().where(and_(kept, *same_key))))
        await session.execute(update(model).where(column == other_id).values(fan_id=keep_id)
                              .execution_options(synchronize_session=False))
    for reference in FAN_REFERENCES:
        await session.execute(update(Fan).where(reference == other_id).values({reference.key: keep_id})
                              .execution_options(synchronize_session=False))


async def delete_rows(session: AsyncSession, fan_id: int) -> int:
    """Delete every fan-owned row of ``fan_id`` and clear pointers to it; returns the rows deleted."""
    removed = 0
    for entry in FAN_TABLES:
        result = await session.execute(delete(entry.model).where(entry.fan_column == fan_id)
                                       .execution_options(synchronize_session=False))
        removed += int(getattr(result, "rowcount", 0) or 0)
    for reference in FAN_REFERENCES:
        await session.execute(update(Fan).where(reference == fan_id).values({reference.key: None})
                              .execution_options(synchronize_session=False))
    return removed


async def stored_rows(session: AsyncSession, fan_ids: Sequence[int]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """For each fan, the rows of every table the fan document does not already carry, as stored.

    The JSON export adds them to each fan's record, so an export shows everything kept about a
    fan (tier history, conversations, deliveries, link codes, and any table added later).
    """
    out: dict[int, dict[str, list[dict[str, Any]]]] = {fid: {} for fid in fan_ids}
    for entry in FAN_TABLES:
        if entry.in_fan_document:
            continue
        table = table_of(entry.model)
        columns: list[Column[Any]] = list(table.columns)
        for fid in fan_ids:
            out[fid][entry.name] = []
        for start in range(0, len(fan_ids), CHUNK):
            rows = await session.execute(
                select(*columns).where(entry.fan_column.in_(fan_ids[start : start + CHUNK]))
                .order_by(*table.primary_key.columns))
            for row in rows:
                record = {c.key: _plain(value) for c, value in zip(columns, row, strict=True)}
                out[int(record["fan_id"])][entry.name].append(record)
    return out


def _plain(value: Any) -> Any:
    """A value JSON can carry: times as ISO-8601 with offset, everything else as stored."""
    return value.isoformat() if isinstance(value, datetime) else value
