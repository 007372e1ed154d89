"""Recording interactions as they arrive (webhooks, Discord, commands), in plain SQLAlchemy Core.

:func:`record_many` takes one group of events and runs a fixed handful of statements whatever its
size, the same on SQLite and PostgreSQL:

1. which of the events are stored already (``SELECT`` by event id);
2. each sender's fan (``SELECT``; fans and identities seen for the first time are created with
   ``INSERT … RETURNING``) — only for events that will be stored, so a replayed event id never
   creates a fan;
3. what those fans already earned inside the window that caps and cooldowns look at (``SELECT``);
4. the new interactions (``INSERT … ON CONFLICT DO NOTHING RETURNING``: where a concurrent writer
   stored the same event first, its row wins and ours is reported as a duplicate);
5. each fan's score and last-seen time (one ``UPDATE`` executed for many rows);
6. the tier changes the new points cause.

The caller owns the transaction. The bulk loader behind ``superfan import`` (10^5 rows at a time)
is :mod:`crm.bulk_ingest`; the two agree on every outcome (a test holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.column_types import UTCDateTime
from crm.conversations import Inbound, note_inbound_many
from crm.db import insert_ignore
from crm.fan_kind_scores import KindTotals, add_totals
from crm.identity import FanRef, Key, refresh_seen_names
from crm.interaction import InteractionIn, validate_many
from crm.models import Fan, Identity, Interaction, table
from crm.names import clean_display_name, name_key
from crm.scoring import DAY_SECONDS, Allowance, current_epoch, term_function
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, apply_moves

#: Ids per ``IN (…)`` list: well under SQLite's and asyncpg's parameter limits.
CHUNK = 500
#: A fan's last-seen time is rewritten only when it moves on by this much (or the score changes):
#: a fan chatting through a live stream is not rewritten with every group.
LAST_SEEN_STEP = timedelta(minutes=1)

_fans, _identities, _interactions = table(Fan), table(Identity), table(Interaction)
_f, _i, _x = _fans.c, _identities.c, _interactions.c

_STORED = select(_x.platform, _x.source_event_id).where(_x.source_event_id.in_(bindparam("ids", expanding=True)))
_SENDERS = (
    select(_i.platform, _i.external_id, _f.id, _f.opted_out, _i.id, _i.display_name, _f.display_name,
           _f.tier, _f.tier_pinned, _f.score_base, _f.last_seen_at)
    .select_from(_identities.join(_fans, _f.id == _i.fan_id))
    .where(_i.platform == bindparam("platform"), _i.external_id.in_(bindparam("ids", expanding=True)))
)
_AWARDED = select(_x.fan_id, _x.kind, _x.occurred_at, _x.points).where(
    _x.fan_id.in_(bindparam("fans", expanding=True)), _x.kind.in_(bindparam("kinds", expanding=True)),
    _x.occurred_at >= bindparam("lo"), _x.occurred_at < bindparam("hi"), _x.points > 0)
_NEW_FAN = insert(_fans).returning(_f.id, sort_by_parameter_order=True)
_seen = bindparam("seen", type_=UTCDateTime())
_SCORE = (
    update(_fans).where(_f.id == bindparam("fan"))
    .values(score_base=_f.score_base + bindparam("delta"),
            last_seen_at=case((_f.last_seen_at < _seen, _seen), else_=_f.last_seen_at))
)


class Recorded(NamedTuple):
    """What happened to one interaction: ``stored``, ``duplicate`` or ``opted_out``."""

    status: str
    fan_id: int
    points: float = 0.0
    new_fan: bool = False


@dataclass
class Recording:
    """What :func:`record_many` (or the bulk loader) did, per item in the order given.

    Kept as parallel lists (an import of 200k rows should not build 200k objects it never reads);
    :attr:`results` builds the :class:`Recorded` view on demand.
    """

    statuses: list[str] = field(default_factory=list)
    fan_ids: list[int] = field(default_factory=list)
    points: list[float] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    tier_moves: list[TierMove] = field(default_factory=list)

    @property
    def results(self) -> list[Recorded]:
        return [Recorded(*r) for r in zip(self.statuses, self.fan_ids, self.points, self.new, strict=True)]

    def count(self, status: str) -> int:
        return self.statuses.count(status)

    @property
    def stored(self) -> int:
        return self.count("stored")

    @property
    def duplicates(self) -> int:
        return self.count("duplicate")

    @property
    def new_fans(self) -> int:
        return len({f for f, new in zip(self.fan_ids, self.new, strict=True) if new})


async def record(session: AsyncSession, item: InteractionIn, settings: CrmSettings, now: datetime) -> Recorded:
    """Record one interaction (see :func:`record_many`)."""
    return (await record_many(session, [item], settings, now)).results[0]


async def record_many(session: AsyncSession, items: Sequence[InteractionIn], settings: CrmSettings,
                      now: datetime) -> Recording:
    """Store interactions once each, create fans on first sight, award points, move tiers.

    A repeated ``(platform, event id)`` — earlier in ``items`` or already stored — is a
    ``duplicate`` and changes nothing; interactions of opted-out fans are not stored. Raises
    :class:`~crm.errors.BadInput` when an item is invalid (nothing is written then).
    """
    clean = validate_many(items)
    keys = [(i.platform, i.event_id()) for i in clean]
    taken = await _stored_events(session, keys)
    fresh: list[int] = []
    for n, key in enumerate(keys):
        if key not in taken:
            taken.add(key)
            fresh.append(n)
    creatable = {(clean[n].platform, clean[n].external_id) for n in fresh}
    senders, newcomers = await _senders(session, clean, creatable)
    # Senders seen for the first time get a stand-in id (negative) until their fans are created,
    # after their points are known: a new fan is inserted with its score, not updated after.
    lowest = settings.tiers.lowest
    for stand_in, key in enumerate(newcomers.keys, start=1):
        senders[key] = FanRef(-stand_in, False, True, None, newcomers.names[key], None, lowest, None, 0.0,
                              newcomers.last[key])

    results = [Recorded("duplicate", ref.fan_id if ref else 0)
               for ref in (senders.get((i.platform, i.external_id)) for i in clean)]
    kept = []
    for n in fresh:
        ref = senders[(clean[n].platform, clean[n].external_id)]
        if ref.opted_out:
            results[n] = Recorded("opted_out", ref.fan_id)
        else:
            kept.append(n)
    # Caps and cooldowns depend on what came before: each fan's rows in time order.
    kept.sort(key=lambda n: (senders[(clean[n].platform, clean[n].external_id)].fan_id, clean[n].occurred_at))
    epoch, half_life = await current_epoch(session, settings.scoring)
    allowance = await _allowance(session, [clean[n] for n in kept], senders, settings)
    term = term_function(epoch, half_life)
    summary = _summariser(settings)
    rows: list[dict[str, Any]] = []
    awards: dict[Key, tuple[int, FanRef, float, float]] = {}
    for n in kept:
        item = clean[n]
        ref = senders[(item.platform, item.external_id)]
        ts = item.occurred_at.timestamp()
        base = settings.scoring.base_points(item.kind, item.amount, item.currency)
        points = allowance.award(ref.fan_id, item.kind, ts, base)
        awards[keys[n]] = (n, ref, points, term(points, ts))
        rows.append({"fan_id": ref.fan_id, "platform": item.platform, "kind": item.kind,
                     "occurred_at": item.occurred_at, "recorded_at": now, "points": points,
                     "amount_cents": _cents(item.amount), "currency": item.currency,
                     "summary": summary(item.text) if item.text else None,
                     "source_event_id": keys[n][1], "message_ref": item.message_ref})
    opening: dict[Key, float] = {}
    for _, ref, _, contribution in awards.values():
        if ref.fan_id < 0:
            key = newcomers.keys[-ref.fan_id - 1]
            opening[key] = opening.get(key, 0.0) + contribution
    made = await _create_fans(session, newcomers, opening, settings, now) if newcomers.keys else {}
    real = {-n: made[key] for n, key in enumerate(newcomers.keys, start=1) if key in made}
    for row in rows:
        if row["fan_id"] < 0:
            row["fan_id"] = real[row["fan_id"]].fan_id
    awards = {k: (n, real.get(ref.fan_id, ref), points, c) for k, (n, ref, points, c) in awards.items()}
    results = [Recorded(r.status, real[r.fan_id].fan_id) if r.fan_id < 0 else r for r in results]
    inserted = await _insert_interactions(session, rows)

    delta: dict[int, float] = {}
    newest: dict[int, datetime] = {}
    refs: dict[int, FanRef] = {}
    by_kind = KindTotals()
    for key, (n, ref, points, contribution) in awards.items():
        if key not in inserted:  # a concurrent writer stored it first (PostgreSQL)
            results[n] = Recorded("duplicate", ref.fan_id)
            if ref.new:  # its points went into the new fan's opening score: take them back
                delta[ref.fan_id] = delta.get(ref.fan_id, 0.0) - contribution
                refs[ref.fan_id] = ref
            continue
        results[n] = Recorded("stored", ref.fan_id, points, ref.new)
        refs[ref.fan_id] = ref
        at = clean[n].occurred_at
        newest[ref.fan_id] = max(at, newest.get(ref.fan_id, at))
        delta[ref.fan_id] = delta.get(ref.fan_id, 0.0) + (0.0 if ref.new else contribution)
        by_kind.add(ref.fan_id, clean[n].kind, points, contribution)
    moves = _tier_moves(delta, refs, settings, now, epoch, half_life)
    await _update_fans(session, {f: d for f, d in delta.items() if d or not refs[f].new}, newest, refs)
    await add_totals(session, by_kind)
    await apply_moves(session, moves, now, actor=None)
    dms = [Inbound(ref.fan_id, clean[n].platform, clean[n].occurred_at, clean[n].text, ref.new)
           for key, (n, ref, _, _) in awards.items() if key in inserted and clean[n].kind == "dm_in"]
    if dms:  # a fan's DM opens or joins their conversation (the reply promise's clock)
        await note_inbound_many(session, settings, dms, now)
    return Recording([r.status for r in results], [r.fan_id for r in results], [r.points for r in results],
                     [r.new_fan for r in results], moves)


async def _stored_events(session: AsyncSession, keys: Sequence[Key]) -> set[Key]:
    """Which ``(platform, event id)`` pairs are stored already (the unique index leads with the id)."""
    ids = sorted({event_id for _, event_id in keys})
    wanted = set(keys)
    found: set[Key] = set()
    for start in range(0, len(ids), CHUNK):
        rows = await session.execute(_STORED, {"ids": ids[start : start + CHUNK]})
        found.update(key for key in ((p, e) for p, e in rows) if key in wanted)
    return found


@dataclass
class _Newcomers:
    """Senders of events to be stored who have no fan yet: created once their points are known."""

    keys: list[Key]
    names: dict[Key, str | None]
    first: dict[Key, datetime]
    last: dict[Key, datetime]


async def _senders(session: AsyncSession, items: Sequence[InteractionIn],
                   creatable: set[Key]) -> tuple[dict[Key, FanRef], _Newcomers]:
    """Each known sender's fan, and the senders in ``creatable`` (of events to be stored) who have
    none yet. Known senders' display names are kept fresh from their newest item."""
    names: dict[Key, str | None] = {}
    first: dict[Key, datetime] = {}
    last: dict[Key, datetime] = {}
    for item in sorted(items, key=lambda i: i.occurred_at):
        key = (item.platform, item.external_id)
        first.setdefault(key, item.occurred_at)
        last[key] = item.occurred_at
        if item.display_name or key not in names:
            names[key] = item.display_name or names.get(key)
    found = await _look_up(session, list(names))
    missing = [key for key in names if key not in found and key in creatable]
    known: dict[Key, str | None] = {key: name for key, name in names.items() if name and key in found}
    await refresh_seen_names(session, known, found)
    return found, _Newcomers(missing, names, first, last)


async def _look_up(session: AsyncSession, keys: Sequence[Key]) -> dict[Key, FanRef]:
    by_platform: dict[str, list[str]] = {}
    for platform, external_id in keys:
        by_platform.setdefault(platform, []).append(external_id)
    out: dict[Key, FanRef] = {}
    for platform, ids in by_platform.items():
        for start in range(0, len(ids), CHUNK):
            rows = await session.execute(_SENDERS, {"platform": platform, "ids": ids[start : start + CHUNK]})
            for plat, ext, fan_id, opted_out, ident_id, ident_name, fan_name, tier, pinned, base, seen in rows:
                out[(plat, ext)] = FanRef(fan_id, bool(opted_out), False, ident_id, ident_name, fan_name, tier,
                                          pinned, float(base), seen)
    return out


async def _create_fans(session: AsyncSession, newcomers: _Newcomers, opening: dict[Key, float],
                       settings: CrmSettings, now: datetime) -> dict[Key, FanRef]:
    """A fan (with its ``opening`` score terms) and an identity for each newcomer; where a
    concurrent writer created the identity first (PostgreSQL), its fan is used and the one made
    here is deleted (the caller then adds the points to that fan)."""
    keys, names, first, last = newcomers.keys, newcomers.names, newcomers.first, newcomers.last
    lowest = settings.tiers.lowest
    displays = {key: clean_display_name(names[key], f"{key[0]}:{key[1][-6:]}") for key in keys}
    fan_ids: list[int] = []
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        result = await session.execute(_NEW_FAN, [
            {"display_name": displays[k], "name_key": name_key(displays[k]), "opted_out": False,
             "score_base": opening.get(k, 0.0), "tier": lowest, "first_seen_at": first[k], "last_seen_at": last[k]} for k in part])
        fan_ids.extend(result.scalars())
    made = dict(zip(keys, fan_ids, strict=True))
    claimed: set[Key] = set()
    stmt = insert_ignore(session, _identities, "platform", "external_id").returning(_i.platform, _i.external_id)
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        result = await session.execute(stmt, [
            {"fan_id": made[k], "platform": k[0], "external_id": k[1], "display_name": name,
             "name_key": name_key(name) if name else None, "created_at": now}
            for k in part for name in (names[k],)])
        claimed.update((p, e) for p, e in result)
    out = {k: FanRef(made[k], False, True, None, names[k], displays[k], lowest, None, opening.get(k, 0.0), last[k])
           for k in keys if k in claimed}
    lost = [k for k in keys if k not in claimed]
    if lost:
        await session.execute(delete(_fans).where(_f.id.in_([made[k] for k in lost])))
        out.update(await _look_up(session, lost))
    return out


async def _allowance(session: AsyncSession, items: Sequence[InteractionIn], senders: dict[Key, FanRef],
                     settings: CrmSettings) -> Allowance:
    """Caps and cooldowns primed with what the group's known fans earned on the group's local days
    (plus the longest cooldown either side): a cap bounds how many such rows there are."""
    rules = settings.scoring
    allowance = Allowance(rules)
    capped = [i for i in items if i.kind in allowance.window_kinds]
    fans = sorted({senders[(i.platform, i.external_id)].fan_id for i in capped
                   if not senders[(i.platform, i.external_id)].new})
    if not fans:
        return allowance
    margin = timedelta(seconds=max(rules.cooldown_seconds.values(), default=0.0))
    days = [i.occurred_at.astimezone(rules.tz) for i in capped]
    lo = min(days).replace(hour=0, minute=0, second=0, microsecond=0) - margin
    hi = max(days).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) + margin
    kinds = sorted({i.kind for i in capped})
    for start in range(0, len(fans), CHUNK):
        rows = await session.execute(_AWARDED, {"fans": fans[start : start + CHUNK], "kinds": kinds,
                                                "lo": lo, "hi": hi})
        for fan_id, kind, at, points in rows:
            allowance.note_existing(fan_id, kind, at.timestamp(), points)
    return allowance


async def _insert_interactions(session: AsyncSession, rows: list[dict[str, Any]]) -> set[Key]:
    """Insert the rows, skipping any whose event a concurrent writer stored first; the keys inserted."""
    inserted: set[Key] = set()
    if not rows:
        return inserted
    stmt = insert_ignore(session, _interactions, "source_event_id", "platform").returning(
        _x.platform, _x.source_event_id)
    for start in range(0, len(rows), CHUNK):
        result = await session.execute(stmt, rows[start : start + CHUNK])
        inserted.update((p, e) for p, e in result)
    return inserted


async def _update_fans(session: AsyncSession, delta: dict[int, float], newest: dict[int, datetime],
                       refs: dict[int, FanRef]) -> None:
    """Add each fan's new score terms and move last-seen forward (never back)."""
    params = []
    for fan_id, d in delta.items():
        seen, stored = newest[fan_id], refs[fan_id].last_seen
        if d or stored is None or seen - stored >= LAST_SEEN_STEP:
            params.append({"fan": fan_id, "delta": d, "seen": seen})
    if params:
        await session.execute(_SCORE, params)


def _tier_moves(delta: dict[int, float], refs: dict[int, FanRef], settings: CrmSettings, now: datetime,
                epoch: datetime, half_life: float) -> list[TierMove]:
    """Tier changes the new points cause (fans without new points wait for the hourly refresh)."""
    divisor = 2.0 ** ((now.timestamp() - epoch.timestamp()) / (half_life * DAY_SECONDS))
    moves = []
    for fan_id, d in delta.items():
        ref = refs[fan_id]
        if not d and not ref.new:
            continue
        current = ref.tier or settings.tiers.lowest
        target = settings.tiers.evaluate(current, (ref.score_base + d) / divisor, ref.tier_pinned)
        if target != current:
            moves.append(TierMove(fan_id, current, target, "score"))
    return moves


def _cents(amount: Decimal | None) -> int | None:
    return None if amount is None else int((amount * 100).to_integral_value())


def _summariser(settings: CrmSettings) -> Callable[[str], str | None]:
    """Stored text: whitespace collapsed, cut to ``summary_chars``; nothing when text is not stored."""
    limit = settings.summary_chars
    if not settings.store_text:
        return lambda _text: None

    def summary(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return summary
