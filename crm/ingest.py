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
from typing import NamedTuple

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.clock import as_utc
from crm.db import datetime_encoder, insert_rows
from crm.errors import BadInput
from crm.identity import resolve_identities
from crm.models import Fan, Interaction, table
from crm.scoring import Allowance, score_state, term_function
from crm.settings import CrmSettings
from crm.tiers_service import TierMove, reevaluate

fans_t = table(Fan)
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
        raise BadInput(f"bad platform {item.platform!r} (lowercase letters, e.g. line, discord)")
    if not item.external_id or len(item.external_id) > 128:
        raise BadInput("external_id is empty or longer than 128 characters")
    if not _is_ident(item.kind):
        raise BadInput(f"bad kind {item.kind!r} (e.g. message, purchase, checkin)")
    if item.occurred_at.tzinfo is None:
        raise BadInput("occurred_at needs a UTC offset")
    if item.source_event_id is not None and len(item.source_event_id) > 128:
        raise BadInput("event id longer than 128 characters")
    amount = item.amount
    if amount is not None and not isinstance(amount, Decimal):
        try:
            amount = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError):
            raise BadInput(f"bad amount {item.amount!r}") from None
    if amount is not None:
        if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
            raise BadInput(f"amount {item.amount} out of range")
    currency = item.currency.strip().upper() if item.currency else None
    if currency and not _CURRENCY.match(currency):
        raise BadInput(f"bad currency {item.currency!r} (ISO 4217, e.g. TWD)")
    if item.kind == "purchase" and amount is not None and not currency:
        raise BadInput("a purchase amount needs a currency")
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
    state = await score_state(session, settings.scoring)
    term = term_function(state.epoch, state.half_life_days)
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
    await _load_allowance(session, allowance, clean, fans)

    rows: list[tuple[object, ...]] = []
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
        delta[fan.fan_id] = delta.get(fan.fan_id, 0.0) + term(points, ts)
        if fan.fan_id not in last_seen or last_seen[fan.fan_id] < item.occurred_at:
            last_seen[fan.fan_id] = item.occurred_at
        results[n] = Recorded("stored", fan.fan_id, points, fan.new)

    step = CHUNK * 4
    for start in range(0, len(rows), step):
        await insert_rows(session, table(Interaction), ROW_COLUMNS, rows[start : start + step])
        if progress:
            progress(min(step, len(rows) - start))
    if delta:
        await session.execute(
            update(fans_t)
            .where(fans_t.c.id == bindparam("fid"))
            .values(
                score_base=fans_t.c.score_base + bindparam("delta"),
                last_seen_at=case(
                    (fans_t.c.last_seen_at < bindparam("seen"), bindparam("seen")), else_=fans_t.c.last_seen_at
                ),
            ),
            [{"fid": fid, "delta": d, "seen": last_seen[fid]} for fid, d in delta.items()],
        )
    moves = await reevaluate(session, settings, now, fan_ids=list(delta), reason="score")
    return BulkResult([r for r in results if r is not None], moves)


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
        stored = await session.execute(select(Interaction.id).where(Interaction.platform == platform).limit(1))
        if stored.first() is None:
            continue  # nothing stored on this platform yet (a first import): nothing can be a duplicate
        ordered = sorted(ids)
        for start in range(0, len(ordered), ID_CHUNK):
            rows = await session.execute(
                select(Interaction.source_event_id).where(
                    Interaction.platform == platform,
                    Interaction.source_event_id.in_(ordered[start : start + ID_CHUNK]),
                )
            )
            found.update((platform, e) for e in rows.scalars())
    return found


async def _load_allowance(session: AsyncSession, allowance: Allowance, items: Sequence[InteractionIn],
                          fans: dict) -> None:
    """Feed caps and cooldowns with what existing fans already earned around the batch's times."""
    kinds = allowance.window_kinds
    known = sorted({f.fan_id for f in fans.values() if not f.new})
    relevant = [i for i in items if i.kind in kinds]
    if not known or not relevant:
        return
    lo = min(i.occurred_at for i in relevant) - timedelta(days=2)
    hi = max(i.occurred_at for i in relevant) + timedelta(days=2)
    for start in range(0, len(known), CHUNK):
        rows = await session.execute(
            select(Interaction.fan_id, Interaction.kind, Interaction.occurred_at, Interaction.points).where(
                Interaction.fan_id.in_(known[start : start + CHUNK]),
                Interaction.kind.in_(sorted(kinds)),
                Interaction.points > 0,
                Interaction.occurred_at >= lo,
                Interaction.occurred_at <= hi,
            )
        )
        for fan_id, kind, at, points in rows:
            allowance.note_existing(fan_id, kind, at.timestamp(), points)
