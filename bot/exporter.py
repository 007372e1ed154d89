"""``superfan export``: everything stored, as re-importable rows (CSV, JSONL) or fan records (JSON).

The rows are the import format (``bot.importer``), so an export imports back into an empty
database as the same fans and interactions.
"""

from __future__ import annotations

import csv
import json
import operator
from datetime import datetime
from typing import Any, TextIO

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from crm.privacy import EXPORT_COLUMNS, export_rows
from crm.profiles import fan_documents, ranked_fans
from crm.settings import CrmSettings

FORMATS = ("csv", "jsonl", "json")


async def write_export(session: AsyncSession, settings: CrmSettings, fmt: str, sink: TextIO, now: datetime) -> int:
    """Write the export in ``fmt`` to ``sink``; returns how many interactions (csv, jsonl) or fans (json)."""
    if fmt == "json":
        docs = await fan_documents(session, await ranked_fans(session, settings, now), settings, now,
                                   interactions=10**9)
        _write_fans(sink, now.isoformat(), docs)
        return len(docs)
    writer = csv.writer(sink) if fmt == "csv" else None
    if writer:
        writer.writerow(EXPORT_COLUMNS)
    in_order = operator.itemgetter(*EXPORT_COLUMNS)
    as_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps would build one per row
    count = 0
    async for row in export_rows(session):
        if writer:
            writer.writerow(in_order(row))
        else:
            sink.write(as_json(row) + "\n")
        count += 1
    return count


def _write_fans(sink: TextIO, exported_at: str, docs: list[dict[str, Any]]) -> None:
    """``{"exported_at": …, "fans": [docs]}``, indented by two, written a fan at a time.

    orjson: the standard encoder runs in pure Python once it indents (10 s of a 200k-interaction
    export); one fan at a time: the whole document at once would hold the file's size twice more.
    """
    sink.write("{\n  " + orjson.dumps("exported_at").decode() + ": " + orjson.dumps(exported_at).decode()
               + ',\n  "fans": [')
    for n, doc in enumerate(docs):
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
        sink.write(("," if n else "") + "\n    " + text.replace("\n", "\n    "))
    sink.write("\n  ]\n}\n" if docs else "]\n}\n")
