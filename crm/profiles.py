"""Fans as the creator sees them: the fan card and ranked lists, in DESIGN.md's JSON shapes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Conversation, Fan, FanTopic, Identity, Interaction, Note, table
from crm.scoring import breakdown, current_scores
from crm.settings import CrmSettings
from crm.tiers import Evidence, Standing
from crm.tiers_service import tenure_days

CHUNK = 500
#: Up to this many fans, :func:`_recent` asks per fan.
FEW_FANS = 8
PREFERENCE_SOURCES = ("fan", "inferred")


def iso(at: datetime | None, tz: Any = None) -> str | None:
    """ISO-8601 with offset (in the creator's timezone when given)."""
    if at is None:
        return None
    return (at.astimezone(tz) if tz else at).isoformat(timespec="seconds")


def amount_of(cents: int | None) -> float | int | None:
    if cents is None:
        return None
    return cents // 100 if cents % 100 == 0 else cents / 100


async def _by_fan(session: AsyncSession, stmt: Any, column: Any, ids: Sequence[int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for start in range(0, len(ids), CHUNK):
        for row in await session.execute(stmt.where(column.in_(ids[start : start + CHUNK]))):
            out[int(row[0])].append(row)
    return out


async def fan_documents(
    session: AsyncSession,
    fans: Sequence[Fan],
    settings: CrmSettings,
    now: datetime,
    *,
    interactions: int | None = 20,
) -> list[dict[str, Any]]:
    """Fan objects (DESIGN.md "fan"), loading related rows in a few set-based queries.

    ``interactions=None`` leaves the ``interactions`` key out (lists); ``0`` or more bounds it.
    """
    state, divisor = await current_scores(session, settings.scoring, now)
    tz = settings.scoring.tz
    ids = [f.id for f in fans]
    idents = await _by_fan(session, select(Identity.fan_id, Identity.platform, Identity.external_id,
                                           Identity.display_name).order_by(Identity.id), Identity.fan_id, ids)
    topics = await _by_fan(session, select(FanTopic.fan_id, FanTopic.topic, FanTopic.source)
                           .order_by(FanTopic.topic), FanTopic.fan_id, ids)
    notes = await _by_fan(session, select(Note.fan_id, Note.text, Note.created_at, Note.author)
                          .order_by(Note.created_at.desc()), Note.fan_id, ids)
    points = await _by_fan(session, select(Interaction.fan_id, Interaction.kind, Interaction.points,
                                           Interaction.occurred_at).where(Interaction.points > 0),
                           Interaction.fan_id, ids)
    convs = await _by_fan(session, select(Conversation.fan_id, Conversation.waiting_since, Conversation.due_at,
                                          Conversation.platform)
                          .where(Conversation.status == "waiting"), Conversation.fan_id, ids)
    docs = []
    for fan in fans:
        explained = breakdown(((k, p, at) for _, k, p, at in points.get(fan.id, [])), now, state.half_life_days)
        standing = _standing(fan, points.get(fan.id, []), fan.score_base / divisor, settings, now,
                             state.half_life_days)
        doc: dict[str, Any] = {
            "id": fan.id,
            "display_name": fan.display_name,
            "tier": settings.tiers.name(fan.tier, settings.locale),
            "tier_key": fan.tier,
            "tier_pinned": fan.tier_pinned is not None,
            "score": round(fan.score_base / divisor, 2),
            "score_breakdown": {k: v["decayed"] for k, v in explained.items()},
            "score_explained": explained,
            "tier_standing": asdict(standing),  # why this tier, what the next one needs (crm.tiers.Standing)
            "opted_out": fan.opted_out,
            "first_seen": iso(fan.first_seen_at, tz),
            "last_seen": iso(fan.last_seen_at, tz),
            "identities": [{"platform": p, "external_id": e, "display_name": n}
                           for _, p, e, n in idents.get(fan.id, [])],
            "preferences": [t for _, t, s in topics.get(fan.id, []) if s in PREFERENCE_SOURCES],
            "tags": [t for _, t, s in topics.get(fan.id, []) if s == "staff"],
            "notes": [{"text": t, "at": iso(at, tz), "author": a} for _, t, at, a in notes.get(fan.id, [])],
            "open_conversation": None,
        }
        waiting = sorted(convs.get(fan.id, []), key=lambda r: r[1] or now)
        if waiting:
            _, since, due, platform = waiting[0]
            doc["open_conversation"] = {"waiting_since": iso(since, tz), "due_at": iso(due, tz),
                                        "overdue": bool(due and due < now), "platform": platform}
        docs.append(doc)
    if interactions is not None:
        recent = await _recent(session, ids, interactions)
        for doc in docs:
            doc["interactions"] = [
                {"kind": k, "platform": p, "at": iso(at, tz), "summary": s, "amount": amount_of(c), "currency": cur,
                 "points": round(pts, 2)} for _, k, p, at, s, c, cur, pts in recent.get(doc["id"], [])]
    return docs


def _standing(fan: Fan, awarded: list[Any], score: float, settings: CrmSettings, now: datetime,
              half_life_days: float) -> Standing:
    """The tier explanation from rows already loaded (points > 0): no extra query per card."""
    rules = settings.tiers
    since = now - timedelta(days=rules.commitment_days)
    commitments = sum(1 for _, kind, _, at in awarded if kind in rules.commitment_kinds and since < at <= now)
    evidence = Evidence(commitments, tenure_days(fan.first_seen_at, now), half_life_days)
    return rules.standing(fan.tier, score, fan.tier_pinned, evidence)


async def _recent(session: AsyncSession, ids: Sequence[int], limit: int) -> dict[int, list[Any]]:
    """Each fan's newest ``limit`` interactions, newest first.

    For a few fans (a fan card), a ``LIMIT`` query each: an index seek however long the fan's
    history (``row_number()`` ranks all of it: 0.1 s for a fan with 60k interactions). For more
    (an export of every fan's history, which took a query per fan, most of its time), a chunk of
    fans per query, ranked with ``row_number()``.
    """
    ic = table(Interaction).c
    columns = (ic.fan_id, ic.kind, ic.platform, ic.occurred_at, ic.summary, ic.amount_cents, ic.currency, ic.points)
    newest = (ic.occurred_at.desc(), ic.id.desc())
    out: dict[int, list[Any]] = defaultdict(list)
    if len(ids) <= FEW_FANS:
        for fan_id in ids:
            out[fan_id] = list(await session.execute(select(*columns).where(ic.fan_id == fan_id)
                                                     .order_by(*newest).limit(limit)))
        return out
    rank = func.row_number().over(partition_by=ic.fan_id, order_by=newest).label("n")
    for start in range(0, len(ids), CHUNK):
        ranked = select(*columns, rank).where(ic.fan_id.in_(ids[start : start + CHUNK])).subquery()
        stmt = (select(*(c for c in ranked.c if c.name != "n")).where(ranked.c.n <= limit)
                .order_by(ranked.c.fan_id, ranked.c.n))
        for row in await session.execute(stmt):
            out[int(row[0])].append(row)
    return out


async def ranked_fans(
    session: AsyncSession,
    settings: CrmSettings,
    now: datetime,
    *,
    tier: str | None = None,
    min_tier: str | None = None,
    top: int | None = None,
) -> list[Fan]:
    """Fans by today's score, best first (``score_base`` order is today's order: no recomputation)."""
    stmt = select(Fan).order_by(Fan.score_base.desc(), Fan.id)
    if tier is not None:
        stmt = stmt.where(Fan.tier == tier)
    if min_tier is not None:
        keys = settings.tiers.keys
        stmt = stmt.where(Fan.tier.in_(keys[settings.tiers.rank(min_tier):]))
    if top is not None:
        stmt = stmt.limit(top)
    return list((await session.execute(stmt)).scalars())
