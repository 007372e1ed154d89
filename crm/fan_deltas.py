"""How a batch's new score terms and last-seen times reach the fans table, set-based.

:func:`crm.ingest.record_many` sums each fan's new score terms and keeps each fan's newest time;
this writes them in one or two statements however many fans a batch touched.
"""

from __future__ import annotations

import asyncio
import sqlite3

import orjson
from sqlalchemy import bindparam, case, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import sqlite_driver
from crm.models import Fan, table

fans_t = table(Fan)
#: ``->>`` arrived in SQLite 3.38; older libraries take the ``executemany`` form.
JSON_ARROWS = sqlite3.sqlite_version_info >= (3, 38)


# Rows are (delta, last seen, fan id) and (last seen, fan id). Last-seen is kept to the minute: a
# burst (a live chat) rewrites a fan once a minute.
_MANY_DELTAS = (
    "UPDATE fans SET score_base = score_base + ?1, "
    "last_seen_at = CASE WHEN last_seen_at < ?2 THEN ?2 ELSE last_seen_at END WHERE id = ?3",
    "UPDATE fans SET last_seen_at = ?1 WHERE id = ?2 AND substr(last_seen_at, 1, 16) < substr(?1, 1, 16)",
)
# The same as one statement each over a JSON array: ``executemany`` steps once per row and takes
# the GIL back after every step, which under a busy event loop waits a switch interval each time.
_JSON_DELTAS = (
    "UPDATE fans SET score_base = score_base + (j.value ->> 0), last_seen_at = CASE WHEN fans.last_seen_at < "
    "(j.value ->> 1) THEN j.value ->> 1 ELSE fans.last_seen_at END FROM json_each(?1) AS j "
    "WHERE fans.id = j.value ->> 2",
    "UPDATE fans SET last_seen_at = j.value ->> 0 FROM json_each(?1) AS j "
    "WHERE fans.id = j.value ->> 1 AND substr(fans.last_seen_at, 1, 16) < substr(j.value ->> 0, 1, 16)",
)


async def apply_deltas(session: AsyncSession, delta: dict[int, float], last_seen: dict[int, object]) -> None:
    """Add each fan's new score terms and move last-seen forward (never back), set-based.

    ``last_seen`` holds times as the driver takes them (:func:`crm.db.datetime_encoder`).
    """
    if not delta:
        return
    if session.get_bind().dialect.name == "sqlite":
        driver = await sqlite_driver(session)
        assert driver is not None
        # Past their cap, most of a chatty batch earns nothing: those fans only move last-seen,
        # which leaves the score index alone. The statements share one trip.
        scored = [(d, last_seen[fid], fid) for fid, d in delta.items() if d]
        seen = [(last_seen[fid], fid) for fid, d in delta.items() if not d]
        as_json = JSON_ARROWS
        await asyncio.gather(*(
            driver.execute(sql, (orjson.dumps(rows).decode(),)) if as_json else driver.executemany(sql, rows)
            for sql, rows in zip(_JSON_DELTAS if as_json else _MANY_DELTAS, (scored, seen), strict=True) if rows))
        return
    await session.execute(
        update(fans_t)
        .where(fans_t.c.id == bindparam("fid"))
        .values(
            score_base=fans_t.c.score_base + bindparam("delta"),
            last_seen_at=case((fans_t.c.last_seen_at < bindparam("seen"), bindparam("seen")),
                              else_=fans_t.c.last_seen_at),
        ),
        [{"fid": fid, "delta": d, "seen": last_seen[fid]} for fid, d in delta.items()],
    )


def later_minute(new: object, stored: object) -> bool:
    """Whether a fan's last-seen time must move to ``new``: on SQLite, whose times are text, only
    to a later minute (as the update itself checks), so a fan writing all through a burst is not
    rewritten with every group; elsewhere the update decides."""
    if isinstance(new, str) and isinstance(stored, str):
        return new[:16] > stored[:16]
    return True
