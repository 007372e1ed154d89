"""The bulk path of record_many: slices, background inserts, index rebuild, and the executemany fallback.

A batch recorded in one call must leave exactly the history that recording the same interactions
one at a time leaves: same rows, same points (caps and cooldowns), same times, same scores.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import inspect, select

import crm.ingest as ingest
import crm.interaction_sink as sink_module
from crm.ingest import record, record_many
from crm.interaction import InteractionIn
from crm.interaction_sink import InteractionSink
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


@pytest.mark.parametrize(("values_rows", "json_insert"), [(3, True), (10**9, True), (10**9, False)],
                         ids=["multi-row-values", "json-slices", "executemany"])
async def test_one_bulk_call_leaves_the_history_of_one_at_a_time(sessions, settings, now, monkeypatch,
                                                                  values_rows, json_insert):
    monkeypatch.setattr(ingest, "SLICE", 7)
    monkeypatch.setattr(ingest, "ID_CHUNK", 10)  # a "large" first import: the reads of stored rows are skipped
    monkeypatch.setattr(sink_module, "BULK_ROWS", 10)
    monkeypatch.setattr(sink_module, "VALUES_ROWS", values_rows)
    monkeypatch.setattr(sink_module, "JSON_INSERT", json_insert)
    done: list[int] = []
    async with sessions.begin() as s:
        result = await record_many(s, history("line", now), settings, now, progress=done.append)
    assert sum(done) == 121 and result.stored == 120 and result.duplicates == 1 and result.new_fans == 3
    first_import = await stored(sessions, "line")
    async with sessions.begin() as s:  # the same file again: every row is already there
        again = await record_many(s, history("line", now), settings, now)
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


async def test_the_cap_index_is_back_after_a_bulk_rebuild(sessions, settings, now, monkeypatch, engine):
    monkeypatch.setattr(ingest, "SLICE", 7)
    monkeypatch.setattr(sink_module, "BULK_ROWS", 10)
    async with sessions.begin() as s:
        await record_many(s, history("line", now), settings, now)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("interactions")})
    assert {i.name for i in Interaction.__table__.indexes if not i.unique} <= names


class FailingDriver:
    """Stands in for the aiosqlite connection: the second insert fails, after a delay for the first."""

    def __init__(self) -> None:
        self.calls = 0
        self.done: list[int] = []

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        n, self.calls = self.calls, self.calls + 1
        await asyncio.sleep(0.01 * (3 - n))
        self.done.append(n)
        if n == 1:
            raise RuntimeError("disk I/O error")


async def test_close_waits_for_every_queued_insert_then_raises_the_failure(monkeypatch):
    monkeypatch.setattr(sink_module, "JSON_INSERT", True)
    driver = FailingDriver()
    sink = InteractionSink(None, driver, "2026-01-01 00:00:00.000000", rebuild=False)  # type: ignore[arg-type]
    for n in range(3):
        await sink.put([(1, "line", "message", "2026-01-01 00:00:00.000000", 0.1, None, None, None, f"e{n}")])
    with pytest.raises(RuntimeError, match="disk I/O"):
        await sink.close()
    assert sorted(driver.done) == [0, 1, 2]  # nothing still running when the caller rolls back



async def test_abandon_waits_for_queued_inserts_so_none_runs_after_the_rollback(monkeypatch):
    monkeypatch.setattr(sink_module, "JSON_INSERT", True)
    driver = FailingDriver()
    sink = InteractionSink(None, driver, "2026-01-01 00:00:00.000000", rebuild=False)  # type: ignore[arg-type]
    await sink.put([(1, "line", "message", "2026-01-01 00:00:00.000000", 0.1, None, None, None, "e0")])
    await sink.abandon()  # no error: the caller is already failing
    assert driver.done == [0]
