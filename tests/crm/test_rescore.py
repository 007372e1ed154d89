"""``rescore`` in short transactions: webhooks keep being recorded while it runs (after a range is
worked out, between point updates, between score updates), and it ends where a rescore of a quiet
database would."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.db import make_engine, make_sessionmaker
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan, Interaction, TierChange
from crm.rescore import rescore
from crm.settings import CrmSettings


def _history(now: datetime) -> list[InteractionIn]:
    """Eight fans: chatty ones past the daily message cap, sharers, one buyer; rows of a day interleaved."""
    items = []
    for f in range(8):
        for day in range(1, 6):
            for n in range(3 + f):
                at = now - timedelta(days=day, minutes=7 * n + f)
                items.append(InteractionIn("line", f"U{f}", "message", at, f"m{f}-{day}-{n}", f"粉絲{f}"))
            if f % 3 == 0:
                items.append(InteractionIn("line", f"U{f}", "share", now - timedelta(days=day, hours=2), f"s{f}-{day}"))
    items.append(InteractionIn("line", "U7", "purchase", now - timedelta(days=3), "buy-7", amount=Decimal(1200),
                               currency="TWD"))
    return items


def _new_rules(settings: CrmSettings) -> CrmSettings:
    scoring = settings.scoring
    return replace(settings, scoring=replace(scoring, weights={**scoring.weights, "message": 0.3, "share": 9.0},
                                             daily_caps={**scoring.daily_caps, "message": 0.9},
                                             half_life_days=60.0))


async def _state(sessions: async_sessionmaker[AsyncSession]) -> tuple[dict[int, float], dict[int, str],
                                                                         dict[str, float]]:
    async with sessions() as s:
        fans = (await s.execute(select(Fan.id, Fan.score_base, Fan.tier))).all()
        points = (await s.execute(select(Interaction.source_event_id, Interaction.points))).all()
    return ({f: b for f, b, _ in fans}, {f: t for f, _, t in fans}, {e: p for e, p in points})


@pytest.mark.parametrize("held_points", [1_000_000, 5])  # all points kept to step 2, or written out as step 1 goes
async def test_events_recorded_between_and_inside_batches_end_as_a_quiet_rescore(sessions, settings, now, db_url,
                                                                                  held_points):
    async with sessions.begin() as s:
        await record_many(s, _history(now), settings, now - timedelta(hours=1))
    rules = _new_rules(settings)
    # The live writer: its own engine that gives up on the write lock after a quarter second,
    # so a rescore that held the lock across a pause would fail it ("database is locked").
    live_engine = make_engine(db_url, busy_timeout=0.25)
    live = make_sessionmaker(live_engine)
    arrivals: list[str] = []

    async def webhook(moment: str) -> None:
        n = len(arrivals)
        fan = f"U{(n * 3) % 9}"  # fans already rescored, in the batch being written, not reached yet, new (U8)
        arrivals.append(moment)
        items = [InteractionIn("line", fan, "message", now + timedelta(minutes=n, seconds=k), f"live{n}-{k}", "即時")
                 for k in range(3)]
        if n % 2:
            items.append(InteractionIn("line", fan, "share", now + timedelta(minutes=n, seconds=30), f"live-s{n}"))
        async with live.begin() as s:
            await record_many(s, items, rules, now + timedelta(minutes=n))

    try:
        async with sessions() as s:
            result = await rescore(s, rules, now, batch_rows=12, write_rows=25, pause_s=0, pause=webhook,
                                   held_points=held_points)
    finally:
        await live_engine.dispose()
    assert result.batches >= 6 and {"read", "points", "written"} <= set(arrivals)
    assert result.reread >= 1  # webhooks for a range's fans came between its reading and its scores
    last_read = len(arrivals) - 1 - arrivals[::-1].index("read")
    assert (arrivals.index("points") < last_read) == (held_points == 5)  # points written while step 1 went on
    bases, tiers, points = await _state(sessions)
    assert len(points) == len(_history(now)) + sum(4 if n % 2 else 3 for n in range(len(arrivals)))

    async with sessions() as s:
        quiet = await rescore(s, rules, now, pause_s=0)
    assert quiet.changed_points == 0 and quiet.tier_moves == []
    quiet_bases, quiet_tiers, quiet_points = await _state(sessions)
    assert quiet_points == points and quiet_tiers == tiers
    assert bases.keys() == quiet_bases.keys()
    for fan_id, base in quiet_bases.items():
        assert bases[fan_id] == pytest.approx(base, rel=1e-9)
    # The new rules reached history and live rows alike: messages worth 0.3 up to a 0.9 daily cap,
    # a share's 9 points cut to the 5-point daily cap.
    assert points["m1-5-3"] == 0.3 and points["m1-5-0"] == 0.0 and points["live1-0"] == 0.3 and points["s0-1"] == points["live-s1"] == 5.0


async def test_each_batch_records_its_tier_moves_and_fans_without_rows_lose_their_score(sessions, settings, now):
    scoring = settings.scoring
    cheap = replace(settings, scoring=replace(scoring, weights={**scoring.weights, "share": 0.2, "purchase": 0.1},
                                              purchase_per_unit={}))
    async with sessions.begin() as s:
        await record_many(s, _history(now), cheap, now)
        ghost = Fan(display_name="空", name_key="空", tier="superfan", score_base=123.0, first_seen_at=now,
                    last_seen_at=now)
        s.add(ghost)
    async with sessions() as s:
        assert set((await s.execute(select(Fan.tier).where(Fan.id != ghost.id))).scalars()) == {"passerby"}
    rules = _new_rules(settings)
    async with sessions() as s:
        result = await rescore(s, rules, now, batch_rows=20, pause_s=0)
    assert result.batches > 3
    async with sessions() as s:
        changes = (await s.execute(select(TierChange.fan_id, TierChange.from_tier, TierChange.to_tier,
                                          TierChange.reason))).all()
        stored = await s.get(Fan, ghost.id)
    assert sorted((m.fan_id, m.from_tier, m.to_tier, m.reason) for m in result.tier_moves) == sorted(changes)
    assert {reason for *_, reason in changes} == {"rescore"}
    assert (ghost.id, "superfan", "passerby", "rescore") in changes  # no rows left: its score is gone
    assert sum(to != "passerby" for _, _, to, _ in changes) >= 2  # the sharers and the buyer went up
    assert stored is not None and stored.score_base == 0.0 and stored.tier == "passerby"

    async with sessions() as s:
        whole = await rescore(s, rules, now, batch_rows=10_000, pause_s=0)  # one range: nothing left to change
    assert whole.batches == 1 and whole.changed_points == 0 and whole.tier_moves == []
