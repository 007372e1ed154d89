"""The staging table of a large ``superfan import``: the file's rows, read back a part (a set of
whole identities) at a time.

An import file comes in no useful order. Fed to :func:`crm.bulk_ingest.bulk_record` a chunk at a
time as it is, each chunk would read back what every earlier chunk stored for its fans (caps
count per fan and day), ever more as the import goes on: a 3M-row file took minutes per chunk
near its end and a gigabyte. Staged first, the rows come back in batches of whole identities that
find little stored for their fans.

How it is staged (each step measured on the 3M-row ``bench_import`` file, CPU seconds):

* Each row's identity picks its *part* (a hash of ``(platform, external_id)``, so a fan's rows
  all land in one part without a table of identities in memory). A chunk of rows is written as
  one row per part: that part's rows as columns, packed with :mod:`marshal`. Rows one by one
  through an 11-column insert, an index over every column and 3M rows read back one by one cost
  34 s; packed parts cost 14 s (8 to pick and pack each part's values, which touches every value
  once; 6 to unpack them and build the interactions).
* Repeated event ids (of which the first in the file is kept) are found from a 64-bit hash of
  each row's ``(platform, event id)``: when no hash repeats, no event id does (most files), and
  nothing more is done. Only rows whose hash repeats are compared by their event ids (a pass over
  the staged rows). The ``DELETE … GROUP BY`` this replaces took 3.8 s; the hashes 0.4 s.

The packed parts are written and read by this process within one transaction (a temporary
table), never shared: :mod:`marshal` is the fastest way to pack lists of strings and ints.
"""

from __future__ import annotations

import marshal
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, chain, compress, repeat
from operator import add, floordiv, sub
from typing import NamedTuple

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateTable, DropTable

from crm.db import fetch_rows, insert_rows, sqlite_driver
from crm.interaction import InteractionIn

_staging = Table(
    "import_staging", MetaData(),
    Column("part", Integer, primary_key=True),  # which identities: read back part by part
    Column("chunk", Integer, primary_key=True),  # which chunk of the file: read back in file order
    Column("rows", LargeBinary),  # the part's rows of the chunk, as marshalled columns
    prefixes=["TEMPORARY"],
)
_STAGED = ("part", "chunk", "rows")
_PART = select(_staging.c.rows).where(_staging.c.part == bindparam("part")).order_by(_staging.c.chunk)
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
#: Groups the staged rows' key hashes are checked for repeats in.
KEY_GROUPS = 16
_MICROSECOND = timedelta(microseconds=1)


class ImportRows(NamedTuple):
    """Parsed, checked rows of an import file as columns: row ``i`` is index ``i`` of each list
    (lists of 10^5 values cost less to build, keep and pack than 10^5 tuples)."""

    line: list[int]  # the row's line in the file: of repeated event ids, the first is kept
    platform: list[str]
    external_id: list[str]
    kind: list[str]
    at_us: list[int]  # ``occurred_at`` in UTC microseconds since 1970: exact, and cheap both ways
    event_id: list[str | None]  # as the file has it (none: the row's digest stands in when staged)
    display_name: list[str | None]
    amount: list[str | None]  # decimal text as ``Decimal`` writes it
    currency: list[str | None]
    text: list[str | None]
    fan_ref: list[str | None]  # the row's ``fan`` grouping key

    @classmethod
    def of(cls, rows: Iterable[tuple[int, InteractionIn, str | None]]) -> ImportRows:
        """Columns of ``(line, interaction, fan key)`` rows."""
        columns = tuple(zip(*((line, i.platform, i.external_id, i.kind, (i.occurred_at - _UNIX) // _MICROSECOND,
                               i.source_event_id, i.display_name, None if i.amount is None else str(i.amount),
                               i.currency, i.text, ref) for line, i, ref in rows), strict=True))
        return cls(*map(list, columns)) if columns else cls(*([] for _ in cls._fields))

    def size(self) -> int:
        return len(self.line)

    def items(self) -> list[InteractionIn]:
        """The rows as interactions (for :func:`crm.bulk_ingest.bulk_record`)."""
        times = map(add, repeat(_UNIX), map(timedelta, repeat(0), repeat(0), self.at_us))
        amounts = [None if a is None else Decimal(a) for a in self.amount] if any(self.amount) else self.amount
        return list(map(InteractionIn, self.platform, self.external_id, self.kind, times, self.event_id,
                        self.display_name, amounts, self.currency, self.text))

    def select(self, keep: Sequence[int]) -> ImportRows:
        """The rows at positions ``keep``, in that order."""
        return ImportRows._make([column[n] for n in keep] for column in self)

    def with_event_ids(self) -> ImportRows:
        """The rows with the digest of each row that has no event id standing in for it (as
        :meth:`InteractionIn.event_id` works it out; the database stores that)."""
        if all(self.event_id):
            return self
        missing = [n for n, e in enumerate(self.event_id) if not e]
        items = self.select(missing).items()
        ids = list(self.event_id)
        for n, item in zip(missing, items, strict=True):
            ids[n] = item.event_id()
        return self._replace(event_id=ids)


def microseconds(times: Iterable[datetime]) -> list[int]:
    """Aware datetimes as UTC microseconds since 1970 (C-level maps: 0.3 µs a value)."""
    return list(map(floordiv, map(sub, times, repeat(_UNIX)), repeat(_MICROSECOND)))


def parts_for(rows: int, part_rows: int) -> int:
    """How many parts to stage about ``rows`` rows in, for parts of about ``part_rows``."""
    return max(1, -(-rows // max(1, part_rows)))


class Staging:
    """The rows of one large import, held in a temporary table of the import's transaction.

    Rows are put in a chunk at a time (:meth:`put`), split into ``parts`` by identity; once all
    are in, :meth:`drop_repeats` finds repeated event ids and :meth:`batches` hands the rows back
    a few parts at a time, each identity's rows in one batch. The table lives and dies with the
    transaction (a failed import leaves nothing); on SQLite it is kept in a temporary file rather
    than in memory.
    """

    def __init__(self, session: AsyncSession, parts: int) -> None:
        self._session = session
        self._parts = parts
        self._chunks = 0
        # The hash of each staged row's (platform, event id) and the row's line, in KEY_GROUPS
        # groups by hash: each group is checked for repeats apart (a set of all 3M hashes at once
        # took 220 MB).
        self._keys = [array("q") for _ in range(KEY_GROUPS)]
        self._lines = [array("q") for _ in range(KEY_GROUPS)]
        self._dropped: frozenset[int] = frozenset()  # lines of rows that repeat an earlier event id

    @classmethod
    async def open(cls, session: AsyncSession, parts: int) -> Staging:
        """A staging table for rows to be read back in ``parts`` parts (see :func:`parts_for`)."""
        driver = await sqlite_driver(session)
        if driver is not None:
            await driver.execute("PRAGMA temp_store=FILE")  # millions of rows: on disk, not in memory
        await session.execute(CreateTable(_staging))
        return cls(session, max(1, parts))

    async def put(self, rows: ImportRows) -> None:
        """Stage a chunk of rows (parsed and checked), in file order after those staged before."""
        rows = rows.with_event_ids()
        for key, line in zip(map(hash, zip(rows.platform, rows.event_id, strict=True)), rows.line, strict=True):
            group = key % KEY_GROUPS
            self._keys[group].append(key)
            self._lines[group].append(line)
        # Sorted by part, each column in one C-level pass, then cut into parts (picking each
        # part's rows column by column in Python cost three times as long).
        part_of = [hash(key) % self._parts for key in zip(rows.platform, rows.external_id, strict=True)]
        order = sorted(range(len(part_of)), key=part_of.__getitem__)  # stable: file order within a part
        columns = [list(map(column.__getitem__, order)) for column in rows]
        counts = Counter(part_of)
        ends = list(accumulate(counts.get(part, 0) for part in range(self._parts)))
        chunk = self._chunks
        self._chunks += 1
        packed = [(part, chunk, marshal.dumps(tuple(column[start:end] for column in columns)))
                  for part, (start, end) in enumerate(zip([0, *ends], ends, strict=False)) if end > start]
        del part_of, order, columns, counts, rows
        await insert_rows(self._session, _staging, _STAGED, packed, chunk=64)

    async def drop_repeats(self) -> int:
        """Leave out rows whose ``(platform, event id)`` came earlier in the file; how many."""
        candidates: set[int] = set()  # lines of rows whose hash repeats
        for keys, lines in zip(self._keys, self._lines, strict=True):
            if len(set(keys)) < len(keys):
                repeated = {key for key, count in Counter(keys).items() if count > 1}
                candidates.update(compress(lines, (key in repeated for key in keys)))
        if not candidates:  # no hash repeats, so no event id does
            return 0
        first: dict[tuple[str, str | None], int] = {}
        later: set[int] = set()
        for part in range(self._parts):
            for rows in await self._part(part):
                for n in (n for n, line in enumerate(rows.line) if line in candidates):
                    key, line = (rows.platform[n], rows.event_id[n]), rows.line[n]
                    kept = first.setdefault(key, line)
                    if kept != line:  # parts come in file order within, not across: keep the earliest
                        later.add(max(kept, line))
                        first[key] = min(kept, line)
        self._dropped = frozenset(later)
        return len(later)

    async def batches(self, size: int) -> AsyncIterator[tuple[list[InteractionIn], list[str | None]]]:
        """The staged rows as interactions and their ``fan`` keys, about ``size`` at a time (whole
        parts), each identity's rows in one batch; rows :meth:`drop_repeats` found left out."""
        self._keys, self._lines = [], []  # not needed any more
        held: list[ImportRows] = []
        count = 0
        for part in range(self._parts):
            for rows in await self._part(part):
                if self._dropped:
                    rows = rows.select([n for n, line in enumerate(rows.line) if line not in self._dropped])
                held.append(rows)
                count += rows.size()
            if count >= size or part == self._parts - 1:
                whole = ImportRows._make(list(chain.from_iterable(rows[c] for rows in held)) for c in range(len(ImportRows._fields)))
                held, count = [], 0
                if whole.size():
                    items = whole.items()
                    refs = whole.fan_ref
                    del whole  # not kept alive (in this suspended frame) beside the batch while it is recorded
                    yield items, refs
                    del items, refs

    async def _part(self, part: int) -> list[ImportRows]:
        """A part's staged chunks, in file order."""
        return [ImportRows(*marshal.loads(packed)) for (packed,) in await fetch_rows(self._session, _PART, {"part": part})]

    async def close(self) -> None:
        """Drop the table (before the transaction commits; a rollback drops it too). SQLite keeps
        this connection's temporary storage in a file: it cannot change inside a transaction."""
        await self._session.execute(DropTable(_staging))
