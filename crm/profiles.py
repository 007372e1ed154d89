"""Fans as the creator sees them: the fan card and ranked lists, in DESIGN.md's JSON shapes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from crm.db import fetch_rows
from crm.fan_kind_scores import kind_scores
from crm.models import Conversation, Fan, FanTopic, Identity, Interaction, Note, table
from crm.scoring import current_scores
from crm.settings import CrmSettings
from crm.tiers import Evidence
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


_ic, _dc, _tc, _nc, _cc = (table(m).c for m in (Interaction, Identity, FanTopic, Note, Conversation))
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_IDENTITIES = select(_dc.fan_id, _dc.platform, _dc.external_id, _dc.display_name).where(_dc.fan_id.in_(_IDS)) \
    .order_by(_dc.id)
_TOPICS = select(_tc.fan_id, _tc.topic, _tc.source).where(_tc.fan_id.in_(_IDS)).order_by(_tc.topic)
_NOTES = select(_nc.fan_id, _nc.text, _nc.created_at, _nc.author).where(_nc.fan_id.in_(_IDS)) \
    .order_by(_nc.created_at.desc())
#: Per fan, the commitment actions that earned points in the tiers' window (``ix_interactions_awarded``).
_COMMITMENTS = select(_ic.fan_id, func.count()).where(
    _ic.points > 0, _ic.fan_id.in_(_IDS), _ic.occurred_at > bindparam("since", type_=_ic.occurred_at.type),
    _ic.occurred_at <= bindparam("now", type_=_ic.occurred_at.type),
    _ic.kind.in_(bindparam("kinds", expanding=True))).group_by(_ic.fan_id)
_WAITING = select(_cc.fan_id, _cc.waiting_since, _cc.due_at, _cc.platform) \
    .where(_cc.status == "waiting", _cc.fan_id.in_(_IDS))
_RECENT_COLUMNS = (_ic.fan_id, _ic.kind, _ic.platform, _ic.occurred_at, _ic.summary, _ic.amount_cents, _ic.currency,
                   _ic.points)
_NEWEST = (_ic.occurred_at.desc(), _ic.id.desc())
_RECENT_ONE = select(*_RECENT_COLUMNS).where(_ic.fan_id == bindparam("fan_id")).order_by(*_NEWEST) \
    .limit(bindparam("n", type_=Integer))
#: The fields of a fan that a document shows (an ORM ``Fan`` or a row of these columns will do).
FAN_COLUMNS = (Fan.id, Fan.display_name, Fan.tier, Fan.tier_pinned, Fan.score_base, Fan.opted_out, Fan.first_seen_at,
               Fan.last_seen_at)


class FanFields(Protocol):
    id: int
    display_name: str
    tier: str
    tier_pinned: str | None
    score_base: float
    opted_out: bool
    first_seen_at: datetime
    last_seen_at: datetime


async def _by_fan(session: AsyncSession, stmt: Any, ids: Sequence[int], params: dict[str, Any] | None = None,
                  datetime_columns: Sequence[int] = ()) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for start in range(0, len(ids), CHUNK):
        for row in await fetch_rows(session, stmt, {**(params or {}), "ids": list(ids[start : start + CHUNK])},
                                    datetime_columns=datetime_columns):
            out[int(row[0])].append(row)
    return out


async def fan_documents(
    session: AsyncSession,
    fans: Sequence[FanFields],
    settings: CrmSettings,
    now: datetime,
    *,
    interactions: int | None = 20,
) -> list[dict[str, Any]]:
    """Fan objects (DESIGN.md "fan"), loading related rows in a few set-based queries.

    ``interactions=None`` leaves the ``interactions`` key out (lists); ``0`` or more bounds it.
    ``fans`` are ORM fans or rows of :data:`FAN_COLUMNS`. The score breakdown is the fan's rows of
    ``fan_kind_scores`` (crm.fan_kind_scores): a heavy fan's thousands of awarded rows are not read.
    """
    state, divisor = await current_scores(session, settings.scoring, now)
    tz = settings.scoring.tz
    rules = settings.tiers
    ids = [f.id for f in fans]
    idents = await _by_fan(session, _IDENTITIES, ids)
    topics = await _by_fan(session, _TOPICS, ids)
    notes = await _by_fan(session, _NOTES, ids, datetime_columns=(2,))
    by_kind = await kind_scores(session, ids)
    committed = await _by_fan(session, _COMMITMENTS, ids, {"now": now, "kinds": list(rules.commitment_kinds),
                                                          "since": now - timedelta(days=rules.commitment_days)})
    convs = await _by_fan(session, _WAITING, ids, datetime_columns=(1, 2))
    docs = []
    for fan in fans:
        explained = {kind: {"points": round(points, 2), "decayed": round(base / divisor, 2), "count": count}
                     for kind, count, points, base in by_kind.get(fan.id, [])}
        commitments = sum(int(n) for _, n in committed.get(fan.id, []))
        evidence = Evidence(commitments, tenure_days(fan.first_seen_at, now), state.half_life_days)
        standing = rules.standing(fan.tier, fan.score_base / divisor, fan.tier_pinned, evidence)
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
            "opted_out": bool(fan.opted_out),
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


async def _recent(session: AsyncSession, ids: Sequence[int], limit: int) -> dict[int, list[Any]]:
    """Each fan's newest ``limit`` interactions, newest first.

    For a few fans (a fan card), a ``LIMIT`` query each: an index seek however long the fan's
    history (``row_number()`` ranks all of it: 0.1 s for a fan with 60k interactions). For more
    (an export of every fan's history, which took a query per fan, most of its time), a chunk of
    fans per query, ranked with ``row_number()``.
    """
    out: dict[int, list[Any]] = defaultdict(list)
    if len(ids) <= FEW_FANS:
        for fan_id in ids:
            out[fan_id] = await fetch_rows(session, _RECENT_ONE, {"fan_id": fan_id, "n": limit}, datetime_columns=(3,))
        return out
    rank = func.row_number().over(partition_by=_ic.fan_id, order_by=_NEWEST).label("n")
    for start in range(0, len(ids), CHUNK):
        ranked = select(*_RECENT_COLUMNS, rank).where(_ic.fan_id.in_(ids[start : start + CHUNK])).subquery()
        stmt = (select(*(c for c in ranked.c if c.name != "n")).where(ranked.c.n <= limit)
                .order_by(ranked.c.fan_id, ranked.c.n))
        for row in await session.execute(stmt):
            out[int(row[0])].append(row)
    return out


def _ranked(columns: Sequence[Any], settings: CrmSettings, tier: str | None, min_tier: str | None,
            top: int | None) -> Any:
    stmt = select(*columns).order_by(Fan.score_base.desc(), Fan.id)
    if tier is not None:
        stmt = stmt.where(Fan.tier == tier)
    if min_tier is not None:
        keys = settings.tiers.keys
        stmt = stmt.where(Fan.tier.in_(keys[settings.tiers.rank(min_tier):]))
    return stmt if top is None else stmt.limit(top)


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
    return list((await session.execute(_ranked([Fan], settings, tier, min_tier, top))).scalars())


async def ranked_fan_chunks(
    session: AsyncSession,
    settings: CrmSettings,
    now: datetime,
    *,
    tier: str | None = None,
    min_tier: str | None = None,
    top: int | None = None,
    chunk: int = CHUNK,
) -> AsyncIterator[list[Any]]:
    """:func:`ranked_fans` as rows of :data:`FAN_COLUMNS`, ``chunk`` fans at a time, for lists of
    every fan (``fans --json``, the JSON export): memory holds the ranked ids and one chunk, not
    100k ORM fans (1.6 GB with their documents)."""
    ids = [int(r[0]) for r in await session.execute(_ranked([Fan.id], settings, tier, min_tier, top))]
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        rows = {int(r.id): r for r in await session.execute(select(*FAN_COLUMNS).where(Fan.id.in_(part)))}
        yield [rows[i] for i in part if i in rows]
