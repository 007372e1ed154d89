"""Exclusive drops: preview, create (drop + deliveries + the outbox rows that carry them, one
transaction), what senders need, and each delivery's outcome.

How a drop goes out (the contract both platforms' senders build to):

* LINE: the LINE recipients in batches of at most :data:`LINE_BATCH` user ids, **one outbox row per
  batch** (kind ``drop_multicast``, payload ``{"drop_id", "to"}``, key ``drop:D:line:N``). The key
  becomes the batch's ``X-Line-Retry-Key``, stored before the first call, so a retry after a
  crash sends the same ids under the same key and LINE answers 409 instead of delivering twice.
* Discord: one ``drop_dm`` row per fan (key ``drop:D:discord:FAN``) and, when the tier has a
  channel (``[drops] tier_channel_ids``), one ``drop_post`` row (key ``drop:D:post``).
* ``--at``: the rows are due at that time; the drainers send nothing before it, so a scheduled
  drop fires once across restarts without a timer of its own.
* Evergreen: :func:`deliver_evergreen` adds a delivery and its row for a fan who reaches the tier
  later (keys ``drop:D:line:fan:FAN`` / ``drop:D:discord:FAN``: never twice).

Every delivery points at the row that carries it (``outbox_id``); the drainer calls
:func:`record_outcome` in the transaction that marks the row, so a delivery is ``sent`` exactly
when its row is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.db import insert_rows
from crm.drop_audience import Audience, Recipient, check_platforms, plan_audience
from crm.errors import BadInput, CrmError
from crm.models import Delivery, Drop, Identity, Outbox, table
from crm.settings import CrmSettings, DropRules

LINE_BATCH = 500
DROP_KINDS = frozenset({"drop_multicast", "drop_dm", "drop_post"})
SCHEDULED, SENDING, FINISHED = "scheduled", "sending", "finished"
MAX_TEXT = 4000  # LINE's 5,000 minus room for the disclosure and the link
SAMPLE = 5
#: Fans looked at per evergreen query (an IN list well below the databases' parameter limits).
EVERGREEN_CHUNK = 2000
_d = table(Delivery).c


class QuotaRefused(CrmError):
    """The drop needs more LINE messages than this month has left; nothing was created
    (params ``needed``, ``left``, ``quota``)."""


@dataclass(frozen=True)
class DropDraft:
    """What staff asked for (``superfan drop create`` or ``/drop``)."""

    text: str
    min_tier: str
    link: str | None = None
    image_url: str | None = None
    topic: str | None = None
    platforms: tuple[str, ...] = ("line", "discord")
    created_by: str | None = None
    scheduled_at: datetime | None = None
    sponsored: bool = False
    evergreen: bool = False


@dataclass
class Preview:
    """A dry run: who receives it where, who is left out and why, and the LINE quota it uses."""

    draft: DropDraft
    min_tier: str  # the tier key
    audience: Audience
    #: LINE messages it consumes: LINE counts one per recipient of a multicast.
    line_messages: int
    #: LINE messages left this month (None: unknown) and the monthly quota.
    quota_left: int | None
    quota: int | None
    post_channel_id: str | None
    sample: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.quota_left is None or self.line_messages <= self.quota_left

    def as_dict(self) -> dict[str, Any]:
        return {"min_tier": self.min_tier, "counts": self.audience.counts(),
                "recipients": len({r.fan_id for r in self.audience.recipients}),
                "left_out": {k: len(v) for k, v in self.audience.left_out.items()},
                "line_messages": self.line_messages, "quota_left": self.quota_left, "quota": self.quota,
                "fits": self.fits, "post_channel_id": self.post_channel_id, "sample": self.sample}


@dataclass(frozen=True)
class CreatedDrop:
    id: int
    preview: Preview
    line_batches: int
    discord_dms: int
    posted: bool


@dataclass(frozen=True)
class DropView:
    """A drop as its senders need it."""

    id: int
    text: str
    link: str | None
    image_url: str | None
    min_tier: str
    sponsored: bool
    aggregation_unit: str | None
    post_channel_id: str | None = None


def _check(draft: DropDraft) -> None:
    if not draft.text.strip():
        raise BadInput("a drop needs a text", code="drop.no_text")
    if len(draft.text) > MAX_TEXT:
        raise BadInput(f"the text is longer than {MAX_TEXT} characters", code="drop.text_too_long", max=MAX_TEXT)
    for what, url, schemes in (("link", draft.link, ("https://", "http://")), ("image", draft.image_url, ("https://",))):
        if url is not None and (not url.startswith(schemes) or len(url) > 500 or any(c.isspace() for c in url)):
            raise BadInput(f"bad {what} URL", code="drop.bad_url", what=what, url=url[:100])


async def preview_drop(session: AsyncSession, settings: CrmSettings, draft: DropDraft, *,
                       quota_left: int | None = None, quota: int | None = None) -> Preview:
    """The dry run of ``draft``: nothing is written."""
    _check(draft)
    key = settings.tiers.resolve(draft.min_tier)
    platforms = check_platforms(draft.platforms)
    audience = await plan_audience(session, settings, min_tier=key, platforms=platforms, topic=draft.topic)
    channel = settings.drops.tier_channel_ids.get(key) if "discord" in platforms else None
    names = list(dict.fromkeys(r.display_name for r in audience.recipients))
    return Preview(draft, key, audience, len(audience.on("line")), quota_left, quota,
                   str(channel) if channel else None, names[:SAMPLE])


async def create_drop(session: AsyncSession, settings: CrmSettings, draft: DropDraft, now: datetime, *,
                      quota_left: int | None = None, quota: int | None = None) -> CreatedDrop:
    """Write the drop, one delivery per recipient and the outbox rows that carry them, in the
    caller's transaction; raises :class:`QuotaRefused` (writing nothing) when the LINE part needs
    more than ``quota_left``."""
    preview = await preview_drop(session, settings, draft, quota_left=quota_left, quota=quota)
    if not preview.fits:
        needed, left = preview.line_messages, preview.quota_left or 0
        raise QuotaRefused(f"this drop needs {needed} LINE messages but only {left} are left this month; nothing "
                           "was created (send it on Discord only with --platform discord)",
                           code="drop.quota_exceeded", needed=needed, left=left,
                           quota=quota if quota is not None else "-")
    scheduled = draft.scheduled_at if draft.scheduled_at is not None and draft.scheduled_at > now else None
    drop = Drop(text=draft.text, link=draft.link, image_url=draft.image_url, min_tier=preview.min_tier,
                topic=draft.topic, platforms=",".join(check_platforms(draft.platforms)), created_by=draft.created_by,
                created_at=now, status=SCHEDULED if scheduled else SENDING, scheduled_at=draft.scheduled_at,
                sponsored=draft.sponsored, evergreen=draft.evergreen, post_channel_id=preview.post_channel_id,
                quota_used=0)
    session.add(drop)
    await session.flush()
    drop.aggregation_unit = f"superfan_drop_{drop.id}"
    due = scheduled or now
    rows: list[tuple[Any, ...]] = []
    line = sorted(preview.audience.on("line"), key=lambda r: r.fan_id)
    batches = [line[i : i + LINE_BATCH] for i in range(0, len(line), LINE_BATCH)]
    for n, batch in enumerate(batches):
        row = await outbox.enqueue(session, platform="line", kind="drop_multicast", recipient="multicast",
                                   payload={"drop_id": drop.id, "to": [r.external_id for r in batch]},
                                   key=f"drop:{drop.id}:line:{n}", now=now, not_before=due)
        rows += [_delivery(drop.id, r, row) for r in batch]
    dms = preview.audience.on("discord")
    for r in dms:
        row = await outbox.enqueue(session, platform="discord", kind="drop_dm", recipient=r.external_id,
                                   payload={"drop_id": drop.id}, key=f"drop:{drop.id}:discord:{r.fan_id}",
                                   now=now, not_before=due, fan_id=r.fan_id)
        rows.append(_delivery(drop.id, r, row))
    if preview.post_channel_id:
        await outbox.enqueue(session, platform="discord", kind="drop_post", recipient=preview.post_channel_id,
                             payload={"drop_id": drop.id}, key=f"drop:{drop.id}:post", now=now, not_before=due)
    await insert_rows(session, table(Delivery), _DELIVERY_COLUMNS, rows)
    if not rows:
        drop.status, drop.finished_at = FINISHED, now
    await session.flush()
    return CreatedDrop(drop.id, preview, len(batches), len(dms), bool(preview.post_channel_id))


_DELIVERY_COLUMNS = ("drop_id", "fan_id", "platform", "external_id", "status", "attempts", "outbox_id")


def _delivery(drop_id: int, r: Recipient, outbox_id: int | None) -> tuple[Any, ...]:
    return (drop_id, r.fan_id, r.platform, r.external_id, "pending", 0, outbox_id)


async def load_drop(session: AsyncSession, drop_id: int) -> DropView | None:
    """The drop as senders need it, or None (erased)."""
    d = await session.get(Drop, drop_id)
    if d is None:
        return None
    return DropView(d.id, d.text, d.link, d.image_url, d.min_tier, bool(d.sponsored), d.aggregation_unit,
                    d.post_channel_id)


def drop_text(view: DropView, settings: CrmSettings | DropRules) -> str:
    """The text as fans read it: a sponsored drop starts with the disclosure; the link ends it."""
    rules = settings.drops if isinstance(settings, CrmSettings) else settings
    parts = [rules.disclosure] if view.sponsored and rules.disclosure else []
    parts.append(view.text.strip())
    if view.link:
        parts.append(view.link)
    return "\n".join(parts)


async def record_outcome(session: AsyncSession, outbox_id: int, *, sent: bool, error: str | None,
                         now: datetime) -> None:
    """Mark every pending delivery carried by outbox row ``outbox_id`` sent or failed (``error``:
    why, short, no fan content), count LINE's quota, and finish the drop when nothing is pending."""
    done = await session.execute(
        update(table(Delivery)).where(_d.outbox_id == outbox_id, _d.status == "pending")
        .values(status="sent" if sent else "failed", sent_at=now if sent else None,
                error=None if sent else (error or "failed")[:500], attempts=_d.attempts + 1, next_attempt_at=None)
        .returning(_d.drop_id, _d.platform))
    rows = done.all()
    per_drop = Counter(int(drop_id) for drop_id, _ in rows)
    line = Counter(int(drop_id) for drop_id, platform in rows if platform == "line")
    if not rows:  # its fans were erased meanwhile: the drop may be done all the same
        carried = (await session.execute(select(Outbox.kind, Outbox.payload).where(Outbox.id == outbox_id))).first()
        if carried is not None and carried.kind in ("drop_multicast", "drop_dm"):
            per_drop[int(json.loads(carried.payload)["drop_id"])] = 0
    if per_drop:  # one outcome per drop at a time (PostgreSQL): else two batches finishing together
        # would each see the other's deliveries pending, and neither would finish the drop
        await session.execute(select(Drop.id).where(Drop.id.in_(sorted(per_drop))).order_by(Drop.id)
                              .with_for_update())
    for drop_id in sorted(per_drop):
        pending = exists().where(_d.drop_id == drop_id, _d.status == "pending")
        finished = not (await session.execute(select(pending))).scalar_one()
        values: dict[str, Any] = {"status": FINISHED if finished else SENDING}
        if finished:
            values["finished_at"] = func.coalesce(Drop.finished_at, now)
        if sent and line[drop_id]:
            values["quota_used"] = Drop.quota_used + line[drop_id]
        await session.execute(update(Drop).where(Drop.id == drop_id).values(**values))


async def record_retry(session: AsyncSession, outbox_id: int, *, error: str, at: datetime) -> None:
    """The row carrying these deliveries will be tried again at ``at`` (``drop show`` says why)."""
    await session.execute(update(table(Delivery)).where(_d.outbox_id == outbox_id, _d.status == "pending")
                          .values(attempts=_d.attempts + 1, error=error[:500], next_attempt_at=at))


async def record_post(session: AsyncSession, drop_id: int, channel_id: str, message_id: str) -> None:
    """The drop's post in the tier channel went out (its reactions are counted later)."""
    await session.execute(update(Drop).where(Drop.id == drop_id)
                          .values(post_channel_id=channel_id, post_message_id=message_id))


async def note_dm_closed(session: AsyncSession, platform_user_id: str, now: datetime) -> None:
    """Discord refused the bot's DM to this user: later drops leave them out ("dms_closed")."""
    await session.execute(update(Identity).where(Identity.platform == "discord",
                                                 Identity.external_id == platform_user_id)
                          .values(dm_closed_at=now))


async def note_dm_open(session: AsyncSession, platform_user_id: str, now: datetime | None = None) -> None:
    """A DM to this Discord user went through: they are reachable again (``now`` is accepted for
    symmetry with :func:`note_dm_closed`; nothing of it is stored)."""
    await session.execute(update(Identity).where(Identity.platform == "discord",
                                                 Identity.external_id == platform_user_id,
                                                 Identity.dm_closed_at.is_not(None))
                          .values(dm_closed_at=None))


async def deliver_evergreen(session: AsyncSession, settings: CrmSettings, now: datetime, *,
                            fan_ids: Sequence[int] | None = None) -> int:
    """Give every evergreen drop to the eligible fans (among ``fan_ids``) who have no delivery of
    it yet; how many deliveries were added. Idempotent: the rows' keys hold one per fan."""
    drops = (await session.execute(select(Drop).where(Drop.evergreen.is_(True)).order_by(Drop.id))).scalars().all()
    ids = sorted(set(fan_ids)) if fan_ids is not None else None
    chunks = [None] if ids is None else [ids[i : i + EVERGREEN_CHUNK] for i in range(0, len(ids), EVERGREEN_CHUNK)]
    added = 0
    for drop in drops:
        if drop.min_tier not in settings.tiers.keys:
            continue  # a tier the config no longer has
        have = set((await session.execute(select(_d.fan_id).where(_d.drop_id == drop.id))).scalars())
        for chunk in chunks:
            audience = await plan_audience(session, settings, min_tier=drop.min_tier,
                                           platforms=drop.platforms.split(","), topic=drop.topic, fan_ids=chunk)
            added += await _top_up(session, drop, [r for r in audience.recipients if r.fan_id not in have], now)
    return added


async def _top_up(session: AsyncSession, drop: Drop, recipients: Sequence[Recipient], now: datetime) -> int:
    """Deliveries and their outbox rows for an evergreen drop's newly eligible fans."""
    due = drop.scheduled_at if drop.scheduled_at is not None and drop.scheduled_at > now else now
    rows = []
    for r in recipients:
        if r.platform == "line":
            row = await outbox.enqueue(session, platform="line", kind="drop_multicast", recipient="multicast",
                                       payload={"drop_id": drop.id, "to": [r.external_id]}, now=now,
                                       key=f"drop:{drop.id}:line:fan:{r.fan_id}", not_before=due)
        else:
            row = await outbox.enqueue(session, platform="discord", kind="drop_dm", recipient=r.external_id,
                                       payload={"drop_id": drop.id}, key=f"drop:{drop.id}:discord:{r.fan_id}",
                                       now=now, not_before=due, fan_id=r.fan_id)
        if row is not None:
            rows.append(_delivery(drop.id, r, row))
    if rows:
        await insert_rows(session, table(Delivery), _DELIVERY_COLUMNS, rows)
        await session.execute(update(Drop).where(Drop.id == drop.id)
                              .values(status=SENDING if due == now else SCHEDULED, finished_at=None))
    return len(rows)


async def waiting_recipients(session: AsyncSession, outbox_id: int) -> set[str]:
    """The platform ids of the pending deliveries an outbox row carries."""
    rows = await session.execute(select(_d.external_id).where(_d.outbox_id == outbox_id, _d.status == "pending"))
    return set(rows.scalars())


async def pending_line_messages(session: AsyncSession) -> int:
    """LINE drop messages queued and not yet sent (they will spend quota this month)."""
    stmt = select(func.count()).where(_d.platform == "line", _d.status == "pending")
    return int((await session.execute(stmt)).scalar_one())
