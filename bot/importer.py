"""``superfan import``: CSV or JSONL of interactions and purchases → the CRM, all or nothing.

The one documented format (README "Import format"): columns ``platform, external_id,
display_name, kind, occurred_at, amount, currency, event_id, text`` and an optional ``fan`` that
groups rows of one person across platforms (``superfan export`` writes it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import parse_iso
from crm.errors import BadInput, CrmError
from crm.identity import fan_by_identity
from crm.ingest import BulkResult, record_many
from crm.interaction import InteractionIn, validate
from crm.merge import merge_fans
from crm.settings import CrmSettings

COLUMNS = ("platform", "external_id", "display_name", "kind", "occurred_at", "amount", "currency",
           "event_id", "text")
REQUIRED = ("platform", "external_id", "kind", "occurred_at")


@dataclass(frozen=True)
class ImportRow:
    line: int
    item: InteractionIn
    fan_ref: str | None


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8-sig") as fh:
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
                yield n, obj
        return
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise BadInput(f"{path}:1: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}",
                           code="import.missing_columns", where=f"{path}:1", missing=missing, expected=list(COLUMNS))
        for row in reader:
            yield reader.line_num, row


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return "" if value is None else str(value).strip()


def parse_row(obj: dict[str, Any]) -> tuple[InteractionIn, str | None]:
    for key in REQUIRED:
        if not _text(obj, key):
            raise BadInput(f"{key} is empty", code="import.empty", column=key)
    try:
        at = parse_iso(_text(obj, "occurred_at"))
    except ValueError as exc:
        raise BadInput(f"occurred_at {obj.get('occurred_at')!r} is not an ISO-8601 time with offset ({exc})",
                       code="import.bad_time", value=_text(obj, "occurred_at")) from None
    amount_text = _text(obj, "amount").replace(",", "")
    try:
        amount = Decimal(amount_text) if amount_text else None
    except InvalidOperation:
        raise BadInput(f"amount {amount_text!r} is not a number", code="import.bad_amount", amount=amount_text) from None
    item = InteractionIn(
        platform=_text(obj, "platform").lower(), external_id=_text(obj, "external_id"),
        kind=_text(obj, "kind").lower(), occurred_at=at, source_event_id=_text(obj, "event_id") or None,
        display_name=_text(obj, "display_name") or None, amount=amount,
        currency=_text(obj, "currency") or None, text=_text(obj, "text") or None,
    )
    return validate(item), _text(obj, "fan") or None


def read_file(path: Path) -> list[ImportRow]:
    """Parse and validate the whole file first; the first bad row raises naming file and line."""
    if not path.exists():
        raise BadInput(f"{path}: file not found", code="import.file_not_found", path=str(path))
    rows: list[ImportRow] = []
    try:
        for line, obj in _records(path):
            try:
                item, ref = parse_row(obj)
            except CrmError as exc:
                raise BadInput(f"{path}:{line}: {exc}", code="import.row", where=f"{path}:{line}", reason=exc) from None
            rows.append(ImportRow(line, item, ref))
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text (save the CSV as UTF-8)", code="import.not_utf8",
                       path=str(path)) from None
    return rows


async def import_rows(
    session: AsyncSession, rows: list[ImportRow], settings: CrmSettings, now: datetime,
    progress: Callable[[int], None] | None = None,
) -> tuple[BulkResult, int]:
    """Record every row in the caller's transaction, then merge rows that share a ``fan`` value."""
    total = await record_many(session, [r.item for r in rows], settings, now, progress=progress)
    groups: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        if r.fan_ref:
            groups.setdefault(r.fan_ref, set()).add((r.item.platform, r.item.external_id))
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
    return total, merges
