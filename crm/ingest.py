"""Recording interactions: identity resolution, dedupe, points and the score, set-based.

``record_many`` is the one path every event takes (a webhook batch, a Discord event, an import of
100k rows); ``record`` is its one-item form. Each batch costs a fixed number of statements per
chunk, never one ORM object per row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import NamedTuple, cast

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import as_utc
from crm.db import datetime_encoder, fetch_rows, insert_rows, sqlite_driver
from crm.errors import BadInput
from crm.identity import FanRef, resolve_identities
from crm.models import Fan, Interaction, table
from crm.scoring import DAY_SECONDS, Allowance, current_epoch, term_function
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, apply_moves

fans_t = table(Fan)
_ic = table(Interaction).c
_STORED_EVENT_IDS = select(_ic.source_event_id).where(
    _ic.platform == bindparam("platform"), _ic.source_event_id.in_(bindparam("ids", expanding=True)))
_AWARDED = select(_ic.fan_id, _ic.kind, _ic.occurred_at, _ic.points).where(
    _ic.fan_id.in_(bindparam("fans", expanding=True)), _ic.occurred_at >= bindparam("lo"),
    _ic.occurred_at < bindparam("hi"), _ic.kind.in_(bindparam("kinds", expanding=True)), _ic.points > 0)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_AMOUNT = Decimal("1e12")
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_GOOD_IDENTS: set[str] = set()
CHUNK = 500
ID_CHUNK = 5000
ROW_COLUMNS = ("fan_id", "platform", "kind", "occurred_at", "recorded_at", "points", "amount_cents", "currency",
               "summary", "source_event_id")


@dataclass(frozen=True)
class InteractionIn:
    """One fan interaction as an adapter or an import sees it (platform-neutral)."""

    platform: str
    external_id: str
    kind: str
    occurred_at: datetime
    source_event_id: str | None = None
    display_name: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    text: str | None = None

    def event_id(self) -> str:
        """The source event id, or a stable digest of the row when the source has none."""
        if self.source_event_id:
            return self.source_event_id
        raw = "|".join(
            str(x)
            for x in (self.platform, self.external_id, self.kind, as_utc(self.occurred_at).isoformat(),
                      self.amount, self.currency, self.text)
        )
        return "h:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


class Recorded(NamedTuple):
    status: str  # stored | duplicate | opted_out
    fan_id: int
    points: float = 0.0
    new_fan: bool = False


@dataclass
class BulkResult:
    results: list[Recorded] = field(default_factory=list)
    tier_moves: list[TierMove] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def stored(self) -> int:
        return self.count("stored")

    @property
    def duplicates(self) -> int:
        return self.count("duplicate")

    @property
    def new_fans(self) -> int:
        return len({r.fan_id for r in self.results if r.new_fan})


def _is_ident(text: str | None) -> bool:
    if text in _GOOD_IDENTS:
        return True
    if not text or not _IDENT.match(text):
        return False
    if len(_GOOD_IDENTS) < 4096:
        _GOOD_IDENTS.add(text)
    return True


def validate(item: InteractionIn) -> InteractionIn:
    """Check one interaction; returns it normalised or raises :class:`BadInput` naming the problem."""
    if not _is_ident(item.platform):
        raise BadInput(f"bad platform {item.platform!r} (lowercase letters, e.g. line, discord)",
                       code="platform.bad", platform=item.platform)
    if not item.external_id or len(item.external_id) > 128:
        raise BadInput("external_id is empty or longer than 128 characters", code="external_id.bad", max=128)
    if not _is_ident(item.kind):
        raise BadInput(f"bad kind {item.kind!r} (e.g. message, purchase, checkin)", code="kind.bad",
                       kind=item.kind)
    if item.occurred_at.tzinfo is None:
        raise BadInput("occurred_at needs a UTC offset", code="time.no_offset")
    if item.source_event_id is not None and len(item.source_event_id) > 128:
        raise BadInput("event id longer than 128 characters", code="event_id.too_long", max=128)
    amount = item.amount
    if amount is not None and not isinstance(amount, Decimal):
        try:
            amount = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError):
            raise BadInput(f"bad amount {item.amount!r}", code="amount.bad", amount=str(item.amount)) from None
    if amount is not None:
        if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
            raise BadInput(f"amount {item.amount} out of range", code="amount.out_of_range",
                           amount=str(item.amount))
    currency = item.currency.strip().upper() if item.currency else None
    if currency and not _CURRENCY.match(currency):
        raise BadInput(f"bad currency {item.currency!r} (ISO 4217, e.g. TWD)", code="currency.bad",
                       currency=item.currency)
    if item.kind == "purchase" and amount is not None and not currency:
        raise BadInput("a purchase amount needs a currency", code="currency.missing")
    external_id = item.external_id.strip()
    at = item.occurred_at if item.occurred_at.tzinfo is UTC else as_utc(item.occurred_at)
    if (external_id == item.external_id and at is item.occurred_at and amount is item.amount
            and currency == item.currency):
        return item
    return replace(item, external_id=external_id, occurred_at=at, amount=amount, currency=currency)


async def record(session: AsyncSession, item: InteractionIn, settings: CrmSettings, now: datetime) -> Recorded:
    """Record one interaction (see :func:`record_many`)."""
    return (await record_many(session, [item], settings, now)).results[0]


async def record_many(
    session: AsyncSession,
    items: Sequence[InteractionIn],
    settings: CrmSettings,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
) -> BulkResult:
    """Store interactions once each, create fans on first sight, award points, move tiers.

    A repeated ``(platform, source_event_id)`` — in the batch or already stored — is reported as
    ``duplicate`` and changes nothing. Interactions of opted-out fans are not stored. The caller
    owns the transaction: nothing is committed here.
    """
    clean = [validate(i) for i in items]
    epoch, half_life = await current_epoch(session, settings.scoring)
    term = term_function(epoch, half_life)
    enc = datetime_encoder(session)
    recorded_at = enc(now)
    event_ids = [i.event_id() for i in clean]
    seen = await _existing_event_ids(session, clean, event_ids)

    order = sorted(range(len(clean)), key=lambda n: clean[n].occurred_at)
    latest_name: dict[tuple[str, str], str | None] = {}
    first: dict[tuple[str, str], datetime] = {}
    last: dict[tuple[str, str], datetime] = {}
    for item in clean:
        key = (item.platform, item.external_id)
        if item.display_name:
            latest_name[key] = item.display_name
        else:
            latest_name.setdefault(key, None)
    for n in order:
        item = clean[n]
        key = (item.platform, item.external_id)
        first.setdefault(key, item.occurred_at)
        last[key] = item.occurred_at
    span = {key: (first[key], last[key]) for key in first}
    fans = await resolve_identities(session, latest_name, span, settings, now)

    allowance = Allowance(settings.scoring)
    await _load_allowance(session, allowance, clean, fans, settings)

    rows: list[tuple[object, ...]] = []
    stored_at: list[tuple[int, float]] = []  # per row: its result index and score term
    results: list[Recorded | None] = [None] * len(clean)
    delta: dict[int, float] = {}
    last_seen: dict[int, datetime] = {}
    for n in order:
        item, eid = clean[n], event_ids[n]
        fan = fans[(item.platform, item.external_id)]
        if fan.opted_out:
            results[n] = Recorded("opted_out", fan.fan_id)
            continue
        if (item.platform, eid) in seen:
            results[n] = Recorded("duplicate", fan.fan_id)
            continue
        seen.add((item.platform, eid))
        ts = item.occurred_at.timestamp()
        points = allowance.award(fan.fan_id, item.kind, ts,
                                 settings.scoring.base_points(item.kind, item.amount, item.currency))
        rows.append((
            fan.fan_id, item.platform, item.kind, enc(item.occurred_at), recorded_at, points,
            None if item.amount is None else int((item.amount * 100).to_integral_value()),
            item.currency, _summary(item.text, settings), eid,
        ))
        contribution = term(points, ts)
        stored_at.append((n, contribution))
        delta[fan.fan_id] = delta.get(fan.fan_id, 0.0) + contribution
        if fan.fan_id not in last_seen or last_seen[fan.fan_id] < item.occurred_at:
            last_seen[fan.fan_id] = item.occurred_at
        results[n] = Recorded("stored", fan.fan_id, points, fan.new)

    step = CHUNK * 4
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        inserted = await insert_rows(session, table(Interaction), ROW_COLUMNS, chunk,
                                     ignore_conflicts_on=("platform", "source_event_id"))
        if inserted is not None and len(inserted) < len(chunk):
            _lost_races(chunk, stored_at[start : start + step], inserted, results, delta)
        if progress:
            progress(len(chunk))
    await _apply_deltas(session, delta, last_seen)
    refs = {ref.fan_id: ref for ref in fans.values()}
    divisor = 2.0 ** ((now.timestamp() - epoch.timestamp()) / (half_life * DAY_SECONDS))
    moves = []
    for fan_id, d in delta.items():
        ref = refs[fan_id]
        current = ref.tier or settings.tiers.lowest
        target = settings.tiers.evaluate(current, (ref.score_base + d) / divisor, ref.tier_pinned)
        if target != current:
            moves.append(TierMove(fan_id, current, target, "score"))
    await apply_moves(session, moves, now, actor=None)
    return BulkResult([r for r in results if r is not None], moves)


def _lost_races(chunk: list[tuple[object, ...]], meta: list[tuple[int, float]], inserted: set[tuple[object, ...]],
                results: list[Recorded | None], delta: dict[int, float]) -> None:
    """Rows a concurrent writer stored first (PostgreSQL): report them as duplicates, take back points."""
    for row, (n, contribution) in zip(chunk, meta, strict=True):
        if (row[1], row[9]) not in inserted:
            fan_id = cast(int, row[0])
            results[n] = Recorded("duplicate", fan_id)
            delta[fan_id] = delta.get(fan_id, 0.0) - contribution


async def _apply_deltas(session: AsyncSession, delta: dict[int, float], last_seen: dict[int, datetime]) -> None:
    """Add each fan's new score terms and move last-seen forward (never back), set-based."""
    if not delta:
        return
    if session.get_bind().dialect.name == "sqlite":
        enc = datetime_encoder(session)
        driver = await sqlite_driver(session)
        assert driver is not None
        await driver.executemany(
            "UPDATE fans SET score_base = score_base + ?, "
            "last_seen_at = CASE WHEN last_seen_at < ? THEN ? ELSE last_seen_at END WHERE id = ?",
            [(d, enc(last_seen[fid]), enc(last_seen[fid]), fid) for fid, d in delta.items()],
        )
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


def _summary(text: str | None, settings: CrmSettings) -> str | None:
    if not text or not settings.store_text:
        return None
    text = " ".join(text.split())
    limit = settings.summary_chars
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _existing_event_ids(
    session: AsyncSession, items: Sequence[InteractionIn], event_ids: Sequence[str]
) -> set[tuple[str, str]]:
    by_platform: dict[str, set[str]] = {}
    for item, eid in zip(items, event_ids, strict=True):
        by_platform.setdefault(item.platform, set()).add(eid)
    found: set[tuple[str, str]] = set()
    for platform, ids in by_platform.items():
        if len(ids) >= ID_CHUNK:  # a bulk import: one probe may save many lookups
            stored = await session.execute(select(Interaction.id).where(Interaction.platform == platform).limit(1))
            if stored.first() is None:
                continue  # nothing stored on this platform yet: nothing can be a duplicate
        ordered = sorted(ids)
        for start in range(0, len(ordered), ID_CHUNK):
            rows = await fetch_rows(session, _STORED_EVENT_IDS,
                                    {"platform": platform, "ids": ordered[start : start + ID_CHUNK]})
            found.update((platform, e) for (e,) in rows)
    return found


async def _load_allowance(session: AsyncSession, allowance: Allowance, items: Sequence[InteractionIn],
                          fans: dict[tuple[str, str], FanRef], settings: CrmSettings) -> None:
    """Feed caps and cooldowns with what existing fans already earned on the batch's local days.

    Caps count per local day and cooldowns are shorter than a day, so the window is the batch's
    local days (plus the longest cooldown at either end); only awarded rows matter, and a cap
    bounds how many there are per fan and day.
    """
    kinds = allowance.window_kinds & {i.kind for i in items}
    relevant = [i for i in items if i.kind in kinds and not fans[(i.platform, i.external_id)].new]
    if not relevant:
        return
    known = sorted({fans[(i.platform, i.external_id)].fan_id for i in relevant})
    tz = settings.scoring.tz
    margin = timedelta(seconds=max(settings.scoring.cooldown_seconds.values(), default=0.0))
    first_day = min(i.occurred_at for i in relevant).astimezone(tz).replace(hour=0, minute=0, second=0,
                                                                             microsecond=0)
    last_day = max(i.occurred_at for i in relevant).astimezone(tz).replace(hour=0, minute=0, second=0,
                                                                            microsecond=0)
    lo = first_day - margin
    hi = last_day + timedelta(days=1) + margin
    for start in range(0, len(known), CHUNK):
        rows = await fetch_rows(session, _AWARDED, {"fans": known[start : start + CHUNK], "lo": lo, "hi": hi,
                                                    "kinds": sorted(kinds)}, datetime_columns=(2,))
        for fan_id, kind, at, points in rows:
            allowance.note_existing(fan_id, kind, at.timestamp(), points)
