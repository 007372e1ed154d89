"""``superfan import``: CSV or JSONL of interactions and purchases → the CRM, all or nothing.

The one documented format (README "Import format"): columns ``platform, external_id,
display_name, kind, occurred_at, amount, currency, event_id, text`` and an optional ``fan`` that
groups rows of one person across platforms (``superfan export`` writes it).

A file of millions of rows is read and checked :data:`CHUNK_ROWS` rows at a time into a staging
table, then recorded from it in chunks of whole identities, all inside the caller's one
transaction (a bad row anywhere rolls everything back): memory holds one chunk, not the file.
"""

from __future__ import annotations

import csv
import io
import json
import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from sys import intern
from typing import Any, NamedTuple, TextIO

from sqlalchemy.ext.asyncio import AsyncSession

from bot.bulk_mode import bulk_mode
from bot.import_columns import plain_columns
from crm.bulk_ingest import SLICE, bulk_record, no_interactions
from crm.clock import parse_iso
from crm.errors import BadInput, CrmError
from crm.identity import fan_by_identity
from crm.import_staging import ImportRows, Staging, parts_for
from crm.ingest import Recording
from crm.interaction import InteractionIn, validate
from crm.interaction_sink import build_late_indexes, drop_late_indexes
from crm.merge import merge_fans
from crm.settings import CrmSettings

COLUMNS = ("platform", "external_id", "display_name", "kind", "occurred_at", "amount", "currency",
           "event_id", "text")
REQUIRED = ("platform", "external_id", "kind", "occurred_at")


#: Every field of a row, in the order :func:`parse_fields` takes them (``fan`` is optional).
FIELDS = (*COLUMNS, "fan")
#: How often (in rows) :func:`read_file` reports how far into the file it is.
PROGRESS_EVERY = 4096
#: Rows parsed and checked at a time (and the most recorded at once from a file of one chunk);
#: a larger file is recorded in batches of half as many. A chunk and the bulk loader's working
#: lists for a batch are most of an import's memory, whatever the size of the file.
CHUNK_ROWS = 100_000
#: A file larger than this (about 10^4 rows) is imported in :func:`bot.bulk_mode.bulk_mode` throughout.
BULK_FILE_BYTES = 1 << 20
#: Kinds superfan itself records (adapters, commands, the purchase hook); with the scoring
#: rules' kinds, what an import accepts without ``--allow-new-kinds``.
RECORDED_KINDS = frozenset({"message", "dm_in", "reaction", "share", "referral", "checkin", "event_checkin",
                            "purchase", "membership", "membership_left", "follow", "unfollow", "postback"})


def known_kinds(settings: CrmSettings) -> tuple[str, ...]:
    """The kinds an import takes as they are: those superfan records and those the rules score."""
    rules = settings.scoring
    return tuple(sorted(RECORDED_KINDS | set(rules.weights) | set(rules.daily_caps) | set(rules.cooldown_seconds)))


class ImportRow(NamedTuple):
    """One parsed row (a tuple: a large import holds 10^5 of them)."""

    line: int
    item: InteractionIn
    fan_ref: str | None


def _records(path: Path, progress: Callable[[int], None] | None) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(line number, FIELDS values as text)`` of each row, not yet stripped (a chunk strips them
    column by column); ``progress`` gets the bytes read so far."""
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson", ".json")
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None if jsonl else "") as fh:
        rows = _jsonl_rows(path, fh) if jsonl else _csv_rows(path, fh)
        for count, record in enumerate(rows, start=1):
            if progress and not count % PROGRESS_EVERY:
                progress(raw.tell())  # the text layer cannot tell while it is iterated
            yield record


def _jsonl_rows(path: Path, fh: TextIO) -> Iterator[tuple[int, tuple[str, ...]]]:
    for n, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{n}: not valid JSON ({exc.msg})", code="import.bad_json",
                           where=f"{path}:{n}") from None
        if not isinstance(obj, dict):
            raise BadInput(f"{path}:{n}: each line must be a JSON object", code="import.not_object",
                           where=f"{path}:{n}")
        yield n, _cleaned(obj)


def _csv_rows(path: Path, fh: TextIO) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Rows by column position: one ``itemgetter`` call picks a row's fields (a ``csv.DictReader``
    and a Python call per field took most of a 200k-row file's parse time). As with ``DictReader``: blank lines are skipped, a later column of the
    same name wins, missing trailing values are empty and extra ones are ignored."""
    reader = csv.reader(fh)
    header = next(reader, [])
    if not any(h.strip() for h in header):
        raise BadInput(f"{path}: the file is empty; its first line must name the columns, at least "
                       f"{', '.join(REQUIRED)}", code="import.empty_file", path=str(path), required=list(REQUIRED))
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise BadInput(f"{path}:1: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}",
                       code="import.missing_columns", where=f"{path}:1", missing=missing, expected=list(COLUMNS))
    width = len(header)
    position = {name: i for i, name in enumerate(header)}
    pick = operator.itemgetter(*(position.get(f, width) for f in FIELDS))  # ``width``: an empty value after the row
    needed = max(position[c] for c in REQUIRED) + 1  # a shorter row lacks a required value
    for values in reader:
        if len(values) != width:
            if not values:
                continue
            if len(values) < needed:
                where = f"{path}:{reader.line_num}"
                cut = [c for c in REQUIRED if position[c] >= len(values)]
                raise BadInput(f"{where}: the row is short: {len(values)} of {width} values (no {', '.join(cut)})",
                               code="import.short_row", where=where, values=len(values), columns=width,
                               missing=cut)
            values = (values + [""] * width)[:width]
        values.append("")
        yield reader.line_num, pick(values)


def _cleaned(obj: dict[str, Any]) -> tuple[str, ...]:
    """A JSON object's ``FIELDS`` as text, stripped ("" when absent or null; numbers as written)."""
    return tuple("" if v is None else str(v).strip() for v in map(obj.get, FIELDS))


def parse_row(obj: dict[str, Any]) -> tuple[InteractionIn, str | None]:
    """A row given as a mapping of column names (a JSONL object)."""
    return parse_fields(_cleaned(obj))


def parse_fields(fields: Sequence[str]) -> tuple[InteractionIn, str | None]:
    """The interaction of one row and its ``fan`` grouping key, validated. ``fields``: the
    ``FIELDS`` values as stripped text, "" where empty."""
    platform, external_id, display_name, kind, occurred_at, amount, currency, event_id, text, fan = fields
    if not (platform and external_id and kind and occurred_at):
        empty = next(k for k, v in zip(REQUIRED, (platform, external_id, kind, occurred_at), strict=True) if not v)
        raise BadInput(f"{empty} is empty", code="import.empty", column=empty)
    try:
        at = parse_iso(occurred_at)
    except ValueError as exc:
        raise BadInput(f"occurred_at {occurred_at!r} is not an ISO-8601 time with offset ({exc})",
                       code="import.bad_time", value=occurred_at) from None
    amount_text = amount.replace(",", "")
    try:
        value = Decimal(amount_text) if amount_text else None
    except InvalidOperation:
        raise BadInput(f"amount {amount_text!r} is not a number", code="import.bad_amount", amount=amount_text) from None
    # Interned: a fan's id and name repeat on every row of theirs, and a large import holds all
    # rows at once (200k rows: 85 MB instead of 140).
    item = InteractionIn(intern(platform.lower()), intern(external_id), intern(kind.lower()), at, event_id or None,
                         intern(display_name) if display_name else None, value, currency or None, text or None)
    return validate(item), fan or None


def read_chunks(path: Path, progress: Callable[[int], None] | None = None, *,
                known: Collection[str] | None = None, chunk_rows: int = CHUNK_ROWS) -> Iterator[ImportRows]:
    """The file's rows, parsed and validated, ``chunk_rows`` at a time (as columns); the first bad
    row raises naming file and line (after the chunks before it were handed out: the caller's
    transaction makes the import all or nothing).

    ``known``, if given, lists the kinds accepted (a row of another kind is refused, naming them);
    ``progress`` is told now and then how many bytes of the file have been read.
    """
    if path.is_dir():
        raise BadInput(f"{path}: is a folder, not a CSV or JSONL file", code="import.is_directory", path=str(path))
    if not path.exists():
        raise BadInput(f"{path}: file not found", code="import.file_not_found", path=str(path))
    accepted = None if known is None else frozenset(known)
    any_rows = False
    records: list[tuple[int, tuple[str, ...]]] = []
    try:
        for record in _records(path, progress):
            records.append(record)
            if len(records) >= chunk_rows:
                any_rows = True
                yield _checked(path, records, accepted)
                records = []
    except UnicodeDecodeError:
        _checked(path, records, accepted)  # a bad row before the bad bytes is the one to name
        raise BadInput(f"{path}: not UTF-8 text (save the CSV as UTF-8)", code="import.not_utf8",
                       path=str(path)) from None
    except BadInput:
        _checked(path, records, accepted)  # likewise before a short row or a line that is not JSON
        raise
    if records:
        yield _checked(path, records, accepted)
    elif not any_rows and _blank(path):
        raise BadInput(f"{path}: the file is empty; its first line must name the columns, at least "
                       f"{', '.join(REQUIRED)}", code="import.empty_file", path=str(path), required=list(REQUIRED))


def _checked(path: Path, records: Sequence[tuple[int, tuple[str, ...]]], accepted: frozenset[str] | None
             ) -> ImportRows:
    """A chunk's records parsed and checked, as columns; the first bad row raises.

    Column by column where the chunk allows (:func:`bot.import_columns.plain_columns`), else row by row with
    :func:`parse_fields`, whose outcome (and error) the column path must equal: a test holds the
    two to each other."""
    plain = plain_columns(records, accepted)
    return plain if plain is not None else ImportRows.of(_parsed(path, r, accepted) for r in records)


def _parsed(path: Path, record: tuple[int, tuple[str, ...]], accepted: frozenset[str] | None
            ) -> tuple[int, InteractionIn, str | None]:
    """One record, row by row: :func:`parse_fields`, the kind checked, an error naming file and line."""
    line, fields = record
    try:
        item, ref = parse_fields(tuple(map(str.strip, fields)))
        if accepted is not None and item.kind not in accepted:
            raise BadInput(f"unknown kind {item.kind!r}; the kinds are {', '.join(sorted(accepted))} "
                           "(--allow-new-kinds takes others)", code="import.unknown_kind", kind=item.kind,
                           kinds=sorted(accepted))
    except CrmError as exc:
        raise BadInput(f"{path}:{line}: {exc}", code="import.row", where=f"{path}:{line}", reason=exc) from None
    return line, item, ref


def _blank(path: Path) -> bool:
    """Whether the file holds nothing but white space (a JSONL file with no object in it)."""
    with path.open("rb") as fh:
        return not fh.read(4096).decode("utf-8-sig", "replace").strip() and fh.read(1) == b""


def read_file(path: Path, progress: Callable[[int], None] | None = None, *,
              known: Collection[str] | None = None) -> list[ImportRow]:
    """Every row of the file at once (see :func:`read_chunks`; a large import goes chunk by chunk)."""
    out: list[ImportRow] = []
    for chunk in read_chunks(path, progress, known=known):
        out.extend(map(ImportRow, chunk.line, chunk.items(), chunk.fan_ref))
    return out


@dataclass
class ImportResult:
    """What an import did, summed over its chunks."""

    stored: int = 0
    duplicates: int = 0
    new_fans: int = 0
    tier_moves: int = 0
    merges: int = 0
    groups: dict[str, set[tuple[str, str]]] = field(default_factory=dict, repr=False)

    def add(self, recording: Recording, items: Sequence[InteractionIn], refs: Sequence[str | None]) -> None:
        self.stored += recording.stored
        self.duplicates += recording.duplicates
        self.new_fans += recording.new_fans
        self.tier_moves += len(recording.tier_moves)
        for item, ref in zip(items, refs, strict=True):
            if ref:
                self.groups.setdefault(ref, set()).add((item.platform, item.external_id))


async def import_file(
    session: AsyncSession, path: Path, settings: CrmSettings, now: datetime, *,
    allow_new_kinds: bool = False, progress: Callable[[float], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:
    """Record every row of ``path`` in the caller's transaction, then merge rows that share a
    ``fan`` value. A bad row raises and the caller rolls the whole file back.

    A file of one chunk (``chunk_rows``) is recorded as it is. A larger one is read and checked a
    chunk at a time into a staging table (:class:`crm.import_staging.Staging`), then recorded from
    it in batches of whole identities. Recording runs in :func:`bot.bulk_mode.bulk_mode` (the
    import is all this process does then). Unless
    ``allow_new_kinds``, a row whose kind is not in :func:`known_kinds` is a bad row.
    ``progress`` is told how far the import is, from 0 to 1 (reading is the first half).
    """
    size = _size(path)
    # Millions of rows: every object is freed by reference counting, and the collector's passes
    # (walking each chunk's 10^6 objects again and again) took a quarter of the time to read a file.
    with bulk_mode(size > BULK_FILE_BYTES):
        return await _import(session, path, settings, now, allow_new_kinds, progress, chunk_rows, size)


async def _import(session: AsyncSession, path: Path, settings: CrmSettings, now: datetime, allow_new_kinds: bool,
                  progress: Callable[[float], None] | None, chunk_rows: int, size: int) -> ImportResult:
    result = ImportResult()
    known = None if allow_new_kinds else known_kinds(settings)
    read = [0]  # bytes of the file read so far

    def reading(done: int) -> None:
        read[0] = done
        if progress:
            progress(done / size / 2)

    chunks = read_chunks(path, reading, known=known, chunk_rows=chunk_rows)
    first = next(chunks, None)
    more = next(chunks, None)
    if first is None or more is None:  # one chunk: recorded as it is, nothing to stage
        rows = first or ImportRows.of([])
        items = rows.items()
        with bulk_mode(len(items) > SLICE):
            recording = await bulk_record(session, items, settings, now, checked=True)
        result.add(recording, items, rows.fan_ref)
    else:
        so_far = first.size() + more.size()
        expected = so_far * size // read[0] if read[0] else so_far  # from the bytes a row takes so far
        batch = max(1, chunk_rows // 2)
        head = [first, more]
        del first, more  # handed on, not kept alive here through the whole import
        await _staged(session, _taking(head, chunks), settings, now, result, progress, batch,
                      parts_for(max(so_far, expected), batch // 4))
    if progress:
        progress(1.0)
    result.merges = await _merge_groups(session, result.groups, settings, now)
    return result


async def _staged(session: AsyncSession, chunks: Iterable[ImportRows], settings: CrmSettings, now: datetime,
                  result: ImportResult, progress: Callable[[float], None] | None, batch: int, parts: int) -> None:
    """A file of several chunks: staged in ``parts`` parts, then recorded in batches of whole
    identities of about ``batch`` rows (the bulk loader's working lists for a batch are what an
    import's memory peaks at)."""
    staging = await Staging.open(session, parts)
    staged = 0
    for chunk in chunks:
        await staging.put(chunk)
        staged += chunk.size()
        del chunk  # the next chunk is read without this one alive
    result.duplicates = await staging.drop_repeats()
    # Into an empty table (a first import), no row can repeat a stored one or count against a
    # stored cap: the late indexes stay off until every chunk is in (crm.interaction_sink).
    fresh = await no_interactions(session) and await drop_late_indexes(session)
    recorded = 0
    async for items, refs in staging.batches(batch):
        with bulk_mode(len(items) > SLICE):
            recording = await bulk_record(session, items, settings, now, fresh=fresh, checked=True)
        result.add(recording, items, refs)
        recorded += len(items)
        if progress:
            progress(0.5 + recorded / max(1, staged) / 2)
        del items, refs, recording
    if fresh:
        await build_late_indexes(session)
    await staging.close()


def _taking(head: list[ImportRows], rest: Iterable[ImportRows]) -> Iterator[ImportRows]:
    """``head``'s chunks (let go of as they are taken), then ``rest``."""
    while head:
        yield head.pop(0)
    yield from rest


def _size(path: Path) -> int:
    """The file's size in bytes (at least 1), for progress: 1 where it is not a file (refused later)."""
    return max(1, path.stat().st_size) if path.is_file() else 1


async def import_rows(
    session: AsyncSession, rows: list[ImportRow], settings: CrmSettings, now: datetime,
    progress: Callable[[int], None] | None = None,
) -> tuple[Recording, int]:
    """Record rows already read (a benchmark's community) in the caller's transaction, then merge
    rows that share a ``fan`` value; :func:`import_file` is the command's path."""
    with bulk_mode(len(rows) > SLICE):
        total = await bulk_record(session, [r.item for r in rows], settings, now, progress=progress)
    groups: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        if r.fan_ref:
            groups.setdefault(r.fan_ref, set()).add((r.item.platform, r.item.external_id))
    return total, await _merge_groups(session, groups, settings, now)


async def _merge_groups(session: AsyncSession, groups: dict[str, set[tuple[str, str]]], settings: CrmSettings,
                        now: datetime) -> int:
    """Merge the fans behind each group's identities into the first (by identity); how many merges."""
    merges = 0
    for keys in groups.values():
        if len(keys) < 2:
            continue
        fan_ids: list[int] = []
        for platform, external_id in sorted(keys):
            fan = await fan_by_identity(session, platform, external_id)
            if fan is not None and fan.id not in fan_ids:
                fan_ids.append(fan.id)
        for other in fan_ids[1:]:
            await merge_fans(session, settings, fan_ids[0], other, now=now)
            merges += 1
    return merges
