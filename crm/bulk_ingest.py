"""The bulk loader behind ``superfan import``: 10^5 interactions at a time, set-based.

Same outcomes as :func:`crm.ingest.record_many` (the live path; a test holds the two to it), but
built for size: per-row work is done column by column (:class:`crm.interaction_rows.RowBuilder`)
on slices, and on SQLite the rows go straight to the driver in the background while the next
slice is built (:class:`crm.interaction_sink.InteractionSink`). Together that is several times
faster than the plain path on a large import (``benchmarks/bench_import.py``); nothing but the
import command (and its benchmark) calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from itertools import compress

from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import datetime_encoder, fetch_rows, posix_time, sqlite_driver
from crm.fan_deltas import apply_deltas, later_minute
from crm.fan_kind_scores import KindTotals, add_totals
from crm.identity import FanRef, Key, resolve_identities
from crm.ingest import Recording
from crm.interaction import InteractionIn, validate_many
from crm.interaction_rows import RowBuilder
from crm.interaction_sink import Columns, InteractionSink
from crm.models import Identity, Interaction, table
from crm.scoring import DAY_SECONDS, Allowance, ScoringRules, current_epoch, term_function
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, apply_moves

_ic = table(Interaction).c
_STORED_EVENT_IDS = select(_ic.source_event_id).where(
    _ic.platform == bindparam("platform"), _ic.source_event_id.in_(bindparam("ids", expanding=True)))
_ANY_ON_PLATFORM = select(_ic.id).where(_ic.platform == bindparam("platform")).limit(1)
_ANY_INTERACTION = select(_ic.id).limit(1)
_idc = table(Identity).c
_AWARDED = (
    select(_idc.external_id, _ic.id, _ic.kind, _ic.occurred_at, _ic.points)
    .select_from(table(Identity).join(table(Interaction), _ic.fan_id == _idc.fan_id))
    .where(_idc.platform == bindparam("platform"), _idc.external_id.in_(bindparam("ids", expanding=True)),
           _ic.occurred_at >= bindparam("lo"), _ic.occurred_at < bindparam("hi"),
           _ic.kind.in_(bindparam("kinds", expanding=True)),
           _ic.points > literal_column("0"))  # a literal, so SQLite can prove the partial index applies
)
CHUNK = 500
ID_CHUNK = 5000
SLICE = 4000  # rows built (and, on SQLite, inserted in the background) at a time


async def bulk_record(
    session: AsyncSession,
    items: Sequence[InteractionIn],
    settings: CrmSettings,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    fresh: bool = False,
    checked: bool = False,
) -> Recording:
    """Store interactions once each, create fans on first sight, award points, move tiers.

    A repeated ``(platform, source_event_id)`` — in the batch or already stored — is reported as
    ``duplicate`` and changes nothing. Interactions of opted-out fans are not stored. The caller
    owns the transaction: nothing is committed here.

    This runs per row for imports of hundreds of thousands of rows, so the per-row work is done
    column by column (:class:`crm.interaction_rows.RowBuilder`) on slices, each inserted in the
    background while the next is built. Rows go in fan by fan, each fan's in time order: caps and
    cooldowns need each fan's rows in time order, and the ``(fan_id, occurred_at)`` indexes then
    grow at one place per fan rather than at 10^5 random ones.

    ``fresh``: one batch of an import into an empty table, in whole identities, its event ids
    unique across the import (:class:`crm.import_staging.Staging`), with the late indexes off
    (:func:`crm.interaction_sink.drop_late_indexes`): nothing stored can repeat it or count
    against its caps, so nothing is looked up.

    ``checked``: every item is as :func:`crm.interaction.validate` returns it (an import checks
    each row as it reads it): not checked again (1.5 µs a row).
    """
    return await _bulk_record(session, items, settings, now, progress, fresh, checked)


async def _bulk_record(session: AsyncSession, items: Sequence[InteractionIn], settings: CrmSettings, now: datetime,
                       progress: Callable[[int], None] | None, fresh: bool = False, checked: bool = False
                       ) -> Recording:
    # The batch's working lists (10^5 entries each in an import) die with _queue_rows: freeing
    # them takes tens of milliseconds, which now pass while SQLite inserts the last slices.
    sink, result, delta, last_seen, by_kind = await _queue_rows(session, items, settings, now, progress, fresh,
                                                                checked)
    try:
        await apply_deltas(session, delta, last_seen)
        await add_totals(session, by_kind)
    except BaseException:
        await sink.abandon()
        raise
    await sink.close()
    await apply_moves(session, result.tier_moves, now, actor=None)
    return result


async def _queue_rows(session: AsyncSession, items: Sequence[InteractionIn], settings: CrmSettings, now: datetime,
                      progress: Callable[[int], None] | None, fresh: bool = False, checked: bool = False
                      ) -> tuple[InteractionSink, Recording, dict[int, float], dict[int, object], KindTotals]:
    """Resolve fans, work out every row (points, caps, times) and queue the inserts; with the
    sink to wait on, the result, each fan's score delta and newest time, and the totals per kind."""
    # The transaction begins (a trip to the database) while the batch is prepared in Python.
    connecting = asyncio.ensure_future(session.connection())
    try:
        clean = items if checked else validate_many(items)
        size = len(clean)
        stamps = [i.occurred_at.timestamp() for i in clean]
        order = sorted(range(size), key=stamps.__getitem__)
        event_ids = [i.source_event_id or i.event_id() for i in clean]
        slots, identities, names, span = _identities_seen(clean, order)
    finally:
        await connecting
    rules = settings.scoring
    epoch, half_life = await current_epoch(session, rules)
    enc = datetime_encoder(session)
    allowance = Allowance(rules)
    # A first import: nothing stored can be a duplicate or count against a cap.
    first = fresh or (size >= ID_CHUNK and not await fetch_rows(session, _ANY_INTERACTION))
    sink = await InteractionSink.open(session, enc(now), empty_table=first, indexes_off=fresh)
    try:
        seen: set[tuple[str, str]]
        if first:
            seen, fans = set(), await resolve_identities(session, names, span, settings, now, queue=sink)
        else:
            seen, fans = await _look_up(session, clean, event_ids, names, span, allowance, settings, now, sink)
        refs = list(map([fans[key] for key in identities].__getitem__, slots))

        statuses = ["stored"] * size
        result = Recording(statuses, [r.fan_id for r in refs], [0.0] * size, [r.new for r in refs])
        rows = RowBuilder(clean, stamps, event_ids, refs, result, allowance, term_function(epoch, half_life),
                          _summariser(settings), enc)
        # Screening per row is needed only when something can be left out.
        screen = bool(seen) or any(r.opted_out for r in fans.values()) or len(set(event_ids)) < size
        if screen:
            rows.seen = seen

        order.sort(key=result.fan_ids.__getitem__)  # stable: each fan's rows stay in time order
        for start in range(0, size, SLICE):
            indexes = order[start : start + SLICE]
            stored, columns, contributions = rows.build(indexes, as_sqlite=sink.sqlite)
            inserted = await sink.put(columns, more=start + SLICE < size)
            if inserted is not None and len(inserted) < len(stored):
                _lost_races(columns, contributions, inserted, result, stored, rows.delta, rows.by_kind)
            if progress:
                progress(len(indexes))
        delta = rows.delta
        stored_seen = {ref.fan_id: ref.last_seen for ref in fans.values()}
        for fan_id, seen_at in rows.last_seen.items():
            if fan_id not in delta and later_minute(seen_at, stored_seen.get(fan_id)):
                delta[fan_id] = 0.0  # last-seen moves even where no points were earned
        # Worked out while SQLite may still be inserting the last slices (they need no database).
        result.tier_moves = _tier_moves(delta, fans.values(), settings, now, epoch, half_life)
    except BaseException:
        await sink.abandon()
        raise
    return sink, result, delta, rows.last_seen, rows.by_kind


async def _look_up(session: AsyncSession, items: Sequence[InteractionIn], event_ids: Sequence[str],
                   names: dict[Key, str | None], span: dict[Key, tuple[datetime, datetime]], allowance: Allowance,
                   settings: CrmSettings, now: datetime, queue: InteractionSink
                   ) -> tuple[set[tuple[str, str]], dict[Key, FanRef]]:
    """What a batch needs from the database: which events are stored already, each identity's fan
    (created on first sight), and what those fans already earned today (fed to ``allowance``)."""
    stored = _existing_event_ids(session, [i.platform for i in items], event_ids)
    earned = _awarded(session, {i.kind for i in items}, span, allowance, settings.scoring)
    if await sqlite_driver(session) is not None:
        # The three reads share one trip round the event loop: the others wait in aiosqlite's
        # queue, not behind every other task. Elsewhere a session takes one operation at a time.
        stored_soon, earned_soon = asyncio.ensure_future(stored), asyncio.ensure_future(earned)
        fans = await resolve_identities(session, names, span, settings, now, queue=queue)
        seen, awarded = await stored_soon, await earned_soon
    else:
        seen, awarded = await stored, await earned
        fans = await resolve_identities(session, names, span, settings, now, queue=queue)
    counted: set[int] = set()  # a fan with two identities in the batch comes back twice
    for key, row_id, kind, ts, points in awarded:
        ref = fans[key]
        if not ref.new and row_id not in counted:
            counted.add(row_id)
            allowance.note_existing(ref.fan_id, kind, ts, points)
    return seen, fans


def _tier_moves(delta: dict[int, float], refs: Iterable[FanRef], settings: CrmSettings, now: datetime,
                epoch: datetime, half_life: float) -> list[TierMove]:
    """Tier changes the batch's new points cause (fans without new points wait for the hourly refresh)."""
    by_id = {ref.fan_id: ref for ref in refs}
    divisor = 2.0 ** ((now.timestamp() - epoch.timestamp()) / (half_life * DAY_SECONDS))
    tiers = settings.tiers
    moves = []
    for fan_id, d in delta.items():
        if not d:
            continue
        ref = by_id[fan_id]
        current = ref.tier or tiers.lowest
        target = tiers.evaluate(current, (ref.score_base + d) / divisor, ref.tier_pinned)
        if target != current:
            moves.append(TierMove(fan_id, current, target, "score"))
    return moves


def _identities_seen(
    items: Sequence[InteractionIn], order: Sequence[int]
) -> tuple[list[int], list[Key], dict[Key, str | None], dict[Key, tuple[datetime, datetime]]]:
    """Each item's identity as a small int (cheap keys for the per-row passes), the identities,
    the newest non-empty display name of each, and the first and last time each was seen.

    ``order`` lists the items in time order. Built from C-level passes: in ``dict(zip(…))`` later
    entries win, which gives the last occurrence (or, reversed, the first).
    """
    slot_of: dict[Key, int] = {}
    slots = [slot_of.setdefault((i.platform, i.external_id), len(slot_of)) for i in items]
    identities = list(slot_of)
    in_order = list(map(slots.__getitem__, order))
    first = dict(zip(reversed(in_order), reversed(order), strict=True))
    last = dict(zip(in_order, order, strict=True))
    names = {key: items[last[s]].display_name for s, key in enumerate(identities)}
    if not all(names.values()):  # some identity's latest item has no name: take its latest that has one
        shown = [items[n].display_name for n in order]
        newest = dict(zip(compress(in_order, shown), compress(shown, shown), strict=True))
        names = {key: newest.get(s) for s, key in enumerate(identities)}
    span = {identities[s]: (items[n].occurred_at, items[last[s]].occurred_at) for s, n in first.items()}
    return slots, identities, names, span


def _lost_races(columns: Columns, contributions: list[float], inserted: set[tuple[object, ...]],
                result: Recording, indexes: list[int], delta: dict[int, float], by_kind: KindTotals) -> None:
    """Rows a concurrent writer stored first (PostgreSQL): report them as duplicates, take back points."""
    fan_ids, platforms, kinds, points, event_ids = columns[0], columns[1], columns[2], columns[4], columns[8]
    for j, n in enumerate(indexes):
        if (platforms[j], event_ids[j]) not in inserted:
            result.statuses[n], result.points[n], result.new[n] = "duplicate", 0.0, False
            delta[fan_ids[j]] = delta.get(fan_ids[j], 0.0) - contributions[j]
            by_kind.take_back(fan_ids[j], kinds[j], points[j], contributions[j])


def _summariser(settings: CrmSettings) -> Callable[[str], str | None]:
    """Stored text: whitespace collapsed, cut to ``summary_chars``; nothing when text is not stored."""
    limit = settings.summary_chars
    if not settings.store_text:
        return lambda _text: None

    def summary(text: str) -> str:
        if not (text.isprintable() and "  " not in text and text[:1] != " " != text[-1:]):
            text = " ".join(text.split())  # printable text has no whitespace but the space
        # Unchanged text stays the same object: the driver encodes a string to UTF-8 once.
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return summary


async def _existing_event_ids(
    session: AsyncSession, platforms: Sequence[str], event_ids: Sequence[str]
) -> set[tuple[str, str]]:
    by_platform: dict[str, set[str]] = {}
    for platform, eid in zip(platforms, event_ids, strict=True):
        by_platform.setdefault(platform, set()).add(eid)
    found: set[tuple[str, str]] = set()
    for platform, ids in by_platform.items():
        if len(ids) >= ID_CHUNK:  # a bulk import: one probe may save many lookups
            if not await fetch_rows(session, _ANY_ON_PLATFORM, {"platform": platform}):
                continue  # nothing stored on this platform yet: nothing can be a duplicate
        ordered = sorted(ids)
        for start in range(0, len(ordered), ID_CHUNK):
            rows = await fetch_rows(session, _STORED_EVENT_IDS,
                                    {"platform": platform, "ids": ordered[start : start + ID_CHUNK]})
            found.update((platform, e) for (e,) in rows)
    return found


async def _awarded(session: AsyncSession, batch_kinds: set[str], span: dict[Key, tuple[datetime, datetime]],
                   allowance: Allowance, rules: ScoringRules) -> list[tuple[Key, int, str, float, float]]:
    """What the fans behind the batch's identities already earned on the batch's local days.

    Caps count per local day and cooldowns are shorter than a day, so the window is the batch's
    local days (plus the longest cooldown at either end); only awarded rows matter, and a cap
    bounds how many there are per fan and day. Asked by identity (joined to the fan's rows), so it
    needs no resolved fan ids and can share a trip with the other reads. ``span`` gives each
    identity's first and last time in the batch. Rows come back as ``(identity, interaction id,
    kind, occurred_at as a POSIX timestamp, points)``.
    """
    kinds = allowance.window_kinds & batch_kinds
    if not kinds or not span:
        return []
    tz = rules.tz
    margin = timedelta(seconds=max(rules.cooldown_seconds.values(), default=0.0))
    first_day = _midnight(min(first for first, _ in span.values()).astimezone(tz))
    last_day = _midnight(max(last for _, last in span.values()).astimezone(tz))
    window = {"lo": first_day - margin, "hi": last_day + timedelta(days=1) + margin, "kinds": sorted(kinds)}
    by_platform: dict[str, list[str]] = {}
    for platform, external_id in span:
        by_platform.setdefault(platform, []).append(external_id)
    out: list[tuple[Key, int, str, float, float]] = []
    for platform, ids in by_platform.items():
        ids.sort()
        for start in range(0, len(ids), CHUNK):
            rows = await fetch_rows(session, _AWARDED, {**window, "platform": platform,
                                                        "ids": ids[start : start + CHUNK]})
            out.extend(((platform, ext), row_id, kind, posix_time(at), points)
                       for ext, row_id, kind, at, points in rows)
    return out


def _midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)



async def no_interactions(session: AsyncSession) -> bool:
    """Whether nothing is stored yet (an import into an empty table can take the fast path)."""
    return not await fetch_rows(session, _ANY_INTERACTION)
