"""Each fan's score per kind (``fan_kind_scores``) stays what the stored interactions add up to,
whichever path changed them: the webhook path, an import, a merge, a rescore, a rebase of the
epoch, an erasure. A fan card's breakdown is read from it, so a drift would show the creator a
breakdown that no longer adds up to the fan's score."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.bulk_ingest import bulk_record
from crm.fan_kind_scores import kind_scores
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.merge import merge_fans
from crm.models import Fan, Interaction
from crm.privacy import forget_fan
from crm.profiles import fan_documents
from crm.rescore import rescore
from crm.scoring import base_term, forget_epoch, rebase_if_needed, score_state
from crm.settings import CrmSettings

Totals = dict[tuple[int, str], tuple[int, float, float]]


def _history(now: datetime, prefix: str, fans: int) -> list[InteractionIn]:
    """Chatty fans past the message cap, sharers, a buyer, across a week; some on Discord."""
    items = []
    for f in range(fans):
        platform = "discord" if f % 4 == 3 else "line"
        for day in range(1, 8):
            for n in range(2 + f % 5):
                at = now - timedelta(days=day, minutes=9 * n + f)
                items.append(InteractionIn(platform, f"{prefix}{f}", "message", at, f"{prefix}m{f}-{day}-{n}"))
            if f % 3 == 0:
                items.append(InteractionIn(platform, f"{prefix}{f}", "share", now - timedelta(days=day, hours=3),
                                           f"{prefix}s{f}-{day}"))
        if f % 5 == 0:
            items.append(InteractionIn(platform, f"{prefix}{f}", "purchase", now - timedelta(days=2),
                                       f"{prefix}buy{f}", amount=Decimal(800 + f), currency="TWD"))
    return items


async def _stored(s: AsyncSession) -> Totals:
    out: Totals = {}
    for fan_id, kind, n, points, base in await _table(s):
        out[(fan_id, kind)] = (n, points, base)
    return out


async def _table(s: AsyncSession) -> list[tuple[int, str, int, float, float]]:
    fans = [int(f) for f in (await s.execute(select(Fan.id))).scalars()]
    found = await kind_scores(s, fans)
    return [(f, kind, n, p, b) for f, rows in found.items() for kind, n, p, b in rows]


async def _expected(s: AsyncSession, rules: CrmSettings) -> Totals:
    """What the stored interactions add up to, summed here in Python from the rows themselves."""
    state = await score_state(s, rules.scoring)
    out: dict[tuple[int, str], list[float]] = {}
    for fan_id, kind, points, at in await s.execute(
            select(Interaction.fan_id, Interaction.kind, Interaction.points, Interaction.occurred_at)):
        if points <= 0:
            continue
        entry = out.setdefault((fan_id, kind), [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += points
        entry[2] += base_term(points, at, state.epoch, state.half_life_days)
    return {k: (int(n), p, b) for k, (n, p, b) in out.items()}


async def _check(sessions: async_sessionmaker[AsyncSession], settings: CrmSettings) -> Totals:
    async with sessions() as s:
        stored, expected = await _stored(s), await _expected(s, settings)
    assert stored.keys() == expected.keys()
    for key, (n, points, base) in expected.items():
        assert stored[key][0] == n, key
        assert stored[key][1] == pytest.approx(points, rel=1e-9), key
        assert stored[key][2] == pytest.approx(base, rel=1e-9), key
    return stored


async def test_every_write_path_keeps_the_kinds_adding_up_to_the_stored_rows(sessions, settings, now):
    forget_epoch()  # the test database is emptied between tests, its epoch row with it
    async with sessions.begin() as s:  # the webhook path: new fans and, in a second batch, known ones
        await record_many(s, _history(now, "U", 6)[:40], settings, now)
    async with sessions.begin() as s:
        await record_many(s, _history(now, "U", 6)[30:], settings, now)  # ten repeats, then new rows
    stored = await _check(sessions, settings)
    assert {kind for _, kind in stored} == {"message", "share", "purchase"}

    async with sessions.begin() as s:  # an import: new fans, known fans, repeats of stored events
        await bulk_record(s, _history(now, "U", 8) + _history(now, "I", 10), settings, now)
    await _check(sessions, settings)

    async with sessions() as s:
        ids = {(await s.execute(select(Fan.id).order_by(Fan.id))).scalars().all()[n] for n in (0, 3)}
    keep, other = sorted(ids)
    async with sessions.begin() as s:  # both have messages and shares: those rows add up
        await merge_fans(s, settings, keep, other, now=now)
    stored = await _check(sessions, settings)
    assert not any(f == other for f, _ in stored)

    async with sessions.begin() as s:
        await forget_fan(s, settings, keep, now)
    stored = await _check(sessions, settings)
    assert not any(f == keep for f, _ in stored)


async def test_a_rescore_and_a_rebase_leave_the_kinds_adding_up(sessions, settings, now):
    forget_epoch()
    async with sessions.begin() as s:
        await bulk_record(s, _history(now, "U", 12), settings, now)
    scoring = settings.scoring
    rules = replace(settings, scoring=replace(scoring, weights={**scoring.weights, "share": 7.0},
                                              daily_caps={**scoring.daily_caps, "message": 0.3},
                                              half_life_days=45.0))
    async with sessions() as s:
        before = await _stored(s)
    async with sessions() as s:
        await rescore(s, rules, now, batch_rows=25, write_rows=40, pause_s=0.0)
    after = await _check(sessions, rules)
    assert after != before

    later = now + timedelta(days=365 * 300)  # far enough for the epoch to move
    async with sessions.begin() as s:
        assert await rebase_if_needed(s, await score_state(s, rules.scoring), later)
    forget_epoch()
    await _check(sessions, rules)


async def test_a_fan_card_breakdown_adds_up_to_the_fan_score(sessions, settings, now):
    forget_epoch()
    async with sessions.begin() as s:
        await record_many(s, _history(now, "U", 6), settings, now)
    async with sessions() as s:
        fans = (await s.execute(select(Fan).order_by(Fan.score_base.desc()))).scalars().all()
        docs = await fan_documents(s, fans, settings, now + timedelta(days=10), interactions=None)
    buyer = next(d for d in docs if "purchase" in d["score_explained"])
    assert set(buyer["score_explained"]) == {"message", "share", "purchase"}
    assert buyer["score_explained"]["purchase"]["count"] == 1
    for doc in docs:
        assert sum(doc["score_breakdown"].values()) == pytest.approx(doc["score"], abs=0.01 * len(doc["score_breakdown"]))
