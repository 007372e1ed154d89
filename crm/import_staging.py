"""The staging table of a large ``superfan import``: the file's rows, read back identity by identity.

An import file comes in no useful order. Fed to :func:`crm.bulk_ingest.bulk_record` a chunk at a
time as it is, each chunk would read back what every earlier chunk stored for its fans (caps
count per fan and day), ever more as the import goes on: a 3M-row file took minutes per chunk
near its end and a gigabyte. Staged first, the rows come back in chunks of whole identities that
find little stored for their fans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from crm.db import fetch_rows, insert_rows, sqlite_driver
from crm.interaction import InteractionIn

_staging = Table(
    "import_staging", MetaData(),
    Column("n", Integer),  # the row's place in the file: of repeated event ids, the first is kept
    Column("platform", String), Column("external_id", String), Column("kind", String),
    Column("at_us", BigInteger),  # UTC microseconds since 1970: exact, and cheap both ways
    Column("event_id", String), Column("display_name", String), Column("amount", String),
    Column("currency", String), Column("text", String), Column("fan_ref", String),
    prefixes=["TEMPORARY"],
)
# On SQLite the index holds every column: read back in its order, a row is then where the last
# one was (the table itself is in file order, and each row a random read of the temporary file).
# PostgreSQL's index entries have a size limit that long texts would pass.
_staging_identity = Index("ix_import_staging_identity", _staging.c.platform, _staging.c.external_id)
_staging_sorted = Index("ix_import_staging_sorted", *(c for c in _staging.c if c.name != "n"))
_STAGED = tuple(c.name for c in _staging.c)
_s = _staging.c
_STAGED_COLUMNS = tuple(c for c in _staging.c if c.name != "n")
# A row value, so that SQLite seeks the index (the same test written with OR scans it from the start).
_STAGED_AFTER = select(*_STAGED_COLUMNS).where(
    tuple_(_s.platform, _s.external_id) > tuple_(bindparam("p"), bindparam("e")),
).order_by(_s.platform, _s.external_id).limit(bindparam("n"))
_STAGED_IDENTITY = select(*_STAGED_COLUMNS).where(_s.platform == bindparam("p"), _s.external_id == bindparam("e"))
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
Staged = tuple[InteractionIn, str | None]  # an interaction and its import row's ``fan`` grouping key


class Staging:
    """The rows of one large import, held in a temporary table of the import's transaction.

    An import file comes in no useful order: fed to :func:`bulk_record` a chunk at a time as it
    is, each chunk would read back what every earlier chunk stored for its fans (caps count per
    fan and day), ever more as the import goes on. Staged first, the rows come back identity by
    identity, so each chunk holds whole fans and finds little stored for them. The table lives
    and dies with the transaction (a failed import leaves nothing); on SQLite it is kept in a
    temporary file rather than in memory.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._indexed = False
        self._rows = 0

    @classmethod
    async def open(cls, session: AsyncSession) -> Staging:
        driver = await sqlite_driver(session)
        if driver is not None:
            await driver.execute("PRAGMA temp_store=FILE")  # millions of rows: on disk, not in memory
        await session.execute(CreateTable(_staging))  # its index is built once the rows are in
        return cls(session)

    async def put(self, rows: Sequence[Staged]) -> None:
        """Stage rows (validated); each gets its event id (the row's digest where it has none)."""
        start = self._rows
        self._rows += len(rows)
        await insert_rows(self._session, _staging, _STAGED, [
            (n, i.platform, i.external_id, i.kind, (i.occurred_at - _UNIX) // _MICROSECOND,
             i.source_event_id or i.event_id(), i.display_name, None if i.amount is None else str(i.amount),
             i.currency, i.text, ref)
            for n, (i, ref) in enumerate(rows, start=start)])

    async def drop_repeats(self) -> int:
        """Remove rows whose ``(platform, event id)`` came earlier in the file; how many."""
        result = await self._session.execute(delete(_staging).where(_s.n.not_in(
            select(func.min(_s.n)).group_by(_s.platform, _s.event_id).scalar_subquery())))
        return int(getattr(result, "rowcount", 0) or 0)

    async def batches(self, size: int) -> AsyncIterator[list[Staged]]:
        """The staged rows, about ``size`` at a time, each identity's rows in one batch."""
        if not self._indexed:
            sqlite = await sqlite_driver(self._session) is not None
            await self._session.execute(CreateIndex(_staging_sorted if sqlite else _staging_identity))
            self._indexed = True
        after = ("", "")
        while True:
            got = await fetch_rows(self._session, _STAGED_AFTER, {"p": after[0], "e": after[1], "n": size})
            if not got:
                return
            last = (got[-1][0], got[-1][1])
            if len(got) == size:  # the last identity may go on: take all of its rows
                while got and (got[-1][0], got[-1][1]) == last:
                    got.pop()
                got.extend(await fetch_rows(self._session, _STAGED_IDENTITY, {"p": last[0], "e": last[1]}))
            after = last
            batch = [(InteractionIn(p, e, k, _UNIX + us * _MICROSECOND, ev, name, None if a is None else Decimal(a),
                                    cur, text), ref) for p, e, k, us, ev, name, a, cur, text, ref in got]
            del got  # not kept alive (in this suspended frame) beside the batch while it is recorded
            yield batch
            del batch

    async def close(self) -> None:
        """Drop the table (before the transaction commits; a rollback drops it too). SQLite keeps
        this connection's temporary storage in a file: it cannot change inside a transaction."""
        await self._session.execute(DropTable(_staging))
