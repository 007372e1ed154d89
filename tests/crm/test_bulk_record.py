"""The bulk loader (crm.bulk_ingest): slices fan by fan, background inserts, and the executemany fallback.

A batch recorded in one bulk call must leave exactly the history that recording the same interactions
one at a time through the live path (crm.ingest) leaves: same rows, same points (caps and cooldowns), same times, same scores.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

import crm.bulk_ingest as ingest
import crm.interaction_sink as sink_module
from crm.bulk_ingest import bulk_record
from crm.ingest import record
from crm.interaction import InteractionIn
from crm.interaction_sink import InteractionSink
from crm.merge import merge_fans
from crm.models import Fan, Identity, Interaction


def history(platform: str, now) -> list[InteractionIn]:
    """Three fans, 40 interactions each: chatty bursts (caps, cooldowns), purchases, texts, a repeat."""
    items = []
    for fan in range(3):
        start = now - timedelta(days=3, hours=fan)
        for n in range(40):
            at = start + timedelta(seconds=37 * n, microseconds=0 if n % 5 == 0 else 1000 * n + fan)
            kind = ("message", "reaction", "message", "purchase", "share")[n % 5]
            items.append(InteractionIn(
                platform, f"ext-{fan}", kind, at, f"e-{fan}-{n}", f"粉絲 {fan}",
                amount=Decimal("350.50") if kind == "purchase" else None,
                currency="TWD" if kind == "purchase" else None,
                text="  謝謝\n分享 😀 " if kind == "message" else None,
            ))
    items.append(items[7])  # the same event twice in one batch
    return items[::-1]  # newest first: the bulk path must sort by time itself


async def stored(sessions, platform: str) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
    async with sessions() as s:
        rows = (await s.execute(
            select(Interaction.source_event_id, Interaction.kind, Interaction.occurred_at, Interaction.points,
                   Interaction.amount_cents, Interaction.currency, Interaction.summary)
            .where(Interaction.platform == platform).order_by(Interaction.source_event_id))).all()
        scores = (await s.execute(
            select(Identity.external_id, Fan.score_base).join(Fan, Fan.id == Identity.fan_id)
            .where(Identity.platform == platform))).all()
    return [tuple(r) for r in rows], {ext: round(score, 9) for ext, score in scores}


@pytest.mark.parametrize(("values_rows", "values_insert"), [(3, True), (10**9, True), (3, False)],
                         ids=["several-statements-per-slice", "one-statement-per-slice", "executemany"])
async def test_one_bulk_call_leaves_the_history_of_one_at_a_time(sessions, settings, now, monkeypatch,
                                                                  values_rows, values_insert):
    monkeypatch.setattr(ingest, "SLICE", 7)
    monkeypatch.setattr(ingest, "ID_CHUNK", 10)  # a "large" first import: the reads of stored rows are skipped
    monkeypatch.setattr(sink_module, "VALUES_ROWS", values_rows)
    monkeypatch.setattr(sink_module, "VALUES_INSERT", values_insert)
    done: list[int] = []
    async with sessions.begin() as s:
        result = await bulk_record(s, history("line", now), settings, now, progress=done.append)
    assert sum(done) == 121 and result.stored == 120 and result.duplicates == 1 and result.new_fans == 3
    first_import = await stored(sessions, "line")
    async with sessions.begin() as s:  # the same file again: every row is already there
        again = await bulk_record(s, history("line", now), settings, now)
    assert again.duplicates == 121 and again.new_fans == 0 and set(again.points) == {0.0}
    assert await stored(sessions, "line") == first_import

    for item in sorted(history("discord", now), key=lambda i: i.occurred_at):
        async with sessions.begin() as s:
            await record(s, item, settings, now)

    bulk_rows, bulk_scores = await stored(sessions, "line")
    single_rows, single_scores = await stored(sessions, "discord")
    assert bulk_rows == single_rows
    assert bulk_scores == single_scores and all(score > 0 for score in bulk_scores.values())
    assert any(r[3] == 0 for r in bulk_rows) and any(r[2].microsecond == 0 for r in bulk_rows)
    assert {r[6] for r in bulk_rows if r[1] == "message"} == {"謝謝 分享 😀"}


async def event_id_index(sessions) -> list[str]:
    async with sessions() as s:
        conn = await s.connection()
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("interactions"))
    return [ix["name"] for ix in indexes if ix["unique"] and sorted(ix["column_names"]) == ["platform", "source_event_id"]]


@pytest.fixture
def small_first_import(monkeypatch):
    """Make a 121-row batch count as a first bulk import, in several slices and statements."""
    monkeypatch.setattr(ingest, "SLICE", 7)
    monkeypatch.setattr(ingest, "ID_CHUNK", 10)
    monkeypatch.setattr(sink_module, "VALUES_ROWS", 3)


async def test_a_first_import_leaves_event_ids_unique(sessions, settings, now, small_first_import):
    """On SQLite the unique index is built after the rows are in; it must be there afterwards."""
    assert await event_id_index(sessions) == ["uq_interactions_platform_source_event_id"]
    async with sessions.begin() as s:
        result = await bulk_record(s, history("line", now), settings, now)
    assert result.stored == 120 and result.duplicates == 1
    assert await event_id_index(sessions) == ["uq_interactions_platform_source_event_id"]
    row = {"fan_id": result.fan_ids[0], "platform": "line", "kind": "message", "occurred_at": now,
           "recorded_at": now, "points": 0.0, "source_event_id": "e-0-1"}
    with pytest.raises(IntegrityError):
        async with sessions.begin() as s:
            await s.execute(insert(Interaction).values(row))


async def test_a_failed_first_import_keeps_the_index_and_stores_nothing(sessions, settings, now, monkeypatch,
                                                                      small_first_import):
    async def fail(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "apply_deltas", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        async with sessions.begin() as s:
            await bulk_record(s, history("line", now), settings, now)
    assert await event_id_index(sessions) == ["uq_interactions_platform_source_event_id"]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Interaction)) == 0


@pytest.mark.parametrize("first_import", [True, False], ids=["first-import", "later-batch"])
async def test_a_batch_failing_after_its_new_fans_were_queued_leaves_no_fan_behind(
        sessions, settings, now, monkeypatch, small_first_import, first_import):
    """New fans' rows are queued to go in while the batch's rows are worked out; when the batch
    fails right after, none of them may outlive the rollback."""
    if not first_import:
        async with sessions.begin() as s:
            await record(s, InteractionIn("discord", "42", "join", now, "j1"), settings, now)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bad row")

    monkeypatch.setattr(ingest.RowBuilder, "build", fail)
    with pytest.raises(RuntimeError, match="bad row"):
        async with sessions.begin() as s:
            await bulk_record(s, history("line", now), settings, now)
    await asyncio.sleep(0.05)  # anything still queued would have run by now
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Identity).where(Identity.platform == "line")) == 0
        assert await s.scalar(select(func.count()).select_from(Fan)) == (0 if first_import else 1)
    assert await event_id_index(sessions) == ["uq_interactions_platform_source_event_id"]


class FailingDriver:
    """Stands in for the aiosqlite connection: the second insert fails, after a delay for the first."""

    def __init__(self) -> None:
        self.calls = 0
        self.done: list[int] = []
        self.sent: list[tuple[str, Any]] = []

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.sent.append((sql, params))
        n, self.calls = self.calls, self.calls + 1
        await asyncio.sleep(0.01 * (3 - n))
        self.done.append(n)
        if n == 1:
            raise RuntimeError("disk I/O error")


async def test_close_waits_for_every_queued_insert_then_raises_the_failure(monkeypatch):
    monkeypatch.setattr(sink_module, "VALUES_INSERT", True)
    driver = FailingDriver()
    sink = InteractionSink(None, driver, "2026-01-01 00:00:00.000000")  # type: ignore[arg-type]
    for n in range(3):
        await sink.put([(1, "line", "message", "2026-01-01 00:00:00.000000", 0.1, None, None, None, f"e{n}")])
    with pytest.raises(RuntimeError, match="disk I/O"):
        await sink.close()
    assert sorted(driver.done) == [0, 1, 2]  # nothing still running when the caller rolls back



async def test_abandon_waits_for_queued_inserts_so_none_runs_after_the_rollback(monkeypatch):
    monkeypatch.setattr(sink_module, "VALUES_INSERT", True)
    driver = FailingDriver()
    sink = InteractionSink(None, driver, "2026-01-01 00:00:00.000000")  # type: ignore[arg-type]
    await sink.put([(1, "line", "message", "2026-01-01 00:00:00.000000", 0.1, None, None, None, "e0")])
    await sink.abandon()  # no error: the caller is already failing
    assert driver.done == [0]


async def test_queued_fan_rows_go_in_bounded_statements_and_are_waited_for(monkeypatch):
    monkeypatch.setattr(sink_module, "VALUES_INSERT", True)
    monkeypatch.setattr(sink_module, "VALUES_PARAMS", 4)  # two 2-column rows per statement
    driver = FailingDriver()
    sink = InteractionSink(None, driver, "2026-01-01 00:00:00.000000")  # type: ignore[arg-type]
    assert await sink.queue_rows(Fan.__table__, ("id", "display_name"), [(1, "小慧"), (2, None), (3, "Mika")])
    assert [params for _sql, params in driver.sent] == [[1, "小慧", 2, None], [3, "Mika"]]
    assert driver.sent[0][0] == "INSERT INTO fans (id, display_name) VALUES (?, ?), (?, ?)"
    await sink.abandon()  # the second statement fails: the batch is failing anyway
    assert sorted(driver.done) == [0, 1]  # both finished before the caller may roll back


async def test_caps_run_in_time_order_across_a_linked_fans_accounts(sessions, settings, now):
    """One fan on LINE and Discord: the day's message cap goes to their first messages, whichever
    account wrote them (rows are grouped by fan, not by account)."""
    start = now - timedelta(days=1)
    async with sessions.begin() as s:
        line = await record(s, InteractionIn("line", "U-linked", "follow", start - timedelta(hours=1), "f1"), settings, now)
        discord = await record(s, InteractionIn("discord", "42", "join", start - timedelta(hours=1), "j1"),
                               settings, now)
        await merge_fans(s, settings, line.fan_id, discord.fan_id, now=now)
    chat = [("discord", "42", 0), ("line", "U-linked", 100), ("discord", "42", 200), ("line", "U-linked", 300)]
    items = [InteractionIn(p, ext, "message", start + timedelta(seconds=t), f"m{t}") for p, ext, t in chat]
    async with sessions.begin() as s:
        result = await bulk_record(s, items[::-1], settings, now)
    assert len(set(result.fan_ids)) == 1
    points = dict(zip((i.source_event_id for i in items[::-1]), result.points, strict=True))
    cap, weight = settings.scoring.daily_caps["message"], settings.scoring.weights["message"]
    assert [points[f"m{t}"] for _, _, t in chat] == pytest.approx([weight, weight, cap - 2 * weight, 0.0])
