"""Everything superfan sends, as rows first: written with the change that causes it, sent later.

A reply to a fan, a relay from the staff inbox, an SLA reminder, the daily digest, a drop: each is
an :class:`~crm.models.Outbox` row written in the same transaction as the state change that
causes it (:func:`enqueue`), so a crash can lose neither the change nor the message. One drainer
per platform (``bot/*_adapter/outbox_sender.py``) claims due rows (:func:`claim_due`), sends
them, and records the result (:func:`mark_sent`, :func:`mark_retry`, :func:`mark_failed`).

Exactly once: every row has an ``idempotency_key`` the platform sees (LINE's
``X-Line-Retry-Key``, Discord's message nonce), and a claim is a conditional update, so two
instances on one PostgreSQL database never send the same row; a row left ``sending`` by a crash
is handed back by :func:`recover_interrupted` and re-sent under the same key.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import insert_ignore
from crm.models import Outbox, table

#: ``session.info`` key: the platforms a transaction queued messages for, so whoever commits it
#: can wake those drainers at once instead of at their next poll.
QUEUED = "superfan_outbox_queued"
PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
#: Backoff after the n-th failed attempt: 2, 4, 8 … seconds, at most 15 minutes, with jitter.
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 900.0

_o = table(Outbox).c


@dataclass(frozen=True)
class OutboxMessage:
    """A claimed row, as a sender needs it."""

    id: int
    platform: str
    kind: str
    recipient: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    fan_id: int | None
    conversation_id: int | None
    reply_token: str | None
    reply_until: datetime | None
    #: Why the previous attempt was retried (None on a first attempt, and after an interrupted one:
    #: a claim clears it), so a sender can tell "certainly not sent" from "may have been sent".
    last_error: str | None = None


async def enqueue(session: AsyncSession, *, platform: str, kind: str, recipient: str, payload: dict[str, Any],
                  now: datetime, key: str | None = None, not_before: datetime | None = None,
                  fan_id: int | None = None, conversation_id: int | None = None,
                  reply_token: str | None = None, reply_until: datetime | None = None) -> int | None:
    """Queue one message in the caller's transaction; its row id, or None if ``key`` was queued before.

    ``key`` makes a message happen once whatever retries the caller makes (e.g.
    ``digest:2026-12-07``); without one a fresh random UUID is used (the form LINE's retry key
    wants; a sender derives a UUID from any other key).
    """
    values = {"platform": platform, "kind": kind, "recipient": recipient,
              "payload": json.dumps(payload, ensure_ascii=False), "idempotency_key": key or str(uuid.uuid4()),
              "status": PENDING, "attempts": 0, "next_attempt_at": not_before or now, "created_at": now,
              "fan_id": fan_id, "conversation_id": conversation_id, "reply_token": reply_token,
              "reply_until": reply_until}
    result = await session.execute(insert_ignore(session, table(Outbox), "idempotency_key").returning(_o.id),
                                   [values])
    row_id = result.scalar_one_or_none()
    if row_id is not None:
        session.info.setdefault(QUEUED, set()).add(platform)
    return row_id


async def claim_due(session: AsyncSession, platform: str, now: datetime, limit: int = 50) -> list[OutboxMessage]:
    """Take up to ``limit`` due rows of ``platform``, oldest first, marking them ``sending``.

    The claim is ``UPDATE … WHERE status = 'pending'``: of two instances racing for a row, one wins.
    """
    due = dict((await session.execute(
        select(_o.id, _o.last_error).where(_o.platform == platform, _o.status == PENDING, _o.next_attempt_at <= now)
        .order_by(_o.id).limit(limit))).all())
    ids = list(due)
    if not ids:
        return []
    claimed = await session.execute(
        update(table(Outbox)).where(_o.id.in_(ids), _o.status == PENDING)
        .values(status=SENDING, attempts=_o.attempts + 1, next_attempt_at=now,  # while sending: when claimed
                last_error=None)
        .returning(_o.id, _o.platform, _o.kind, _o.recipient, _o.payload, _o.idempotency_key, _o.attempts,
                   _o.fan_id, _o.conversation_id, _o.reply_token, _o.reply_until))
    rows = sorted(claimed.all(), key=lambda r: r[0])
    return [OutboxMessage(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10],
                          due[r[0]])
            for r in rows]


async def mark_sent(session: AsyncSession, message_id: int, now: datetime) -> None:
    await session.execute(update(table(Outbox)).where(_o.id == message_id)
                          .values(status=SENT, sent_at=now, last_error=None))


async def mark_retry(session: AsyncSession, message_id: int, now: datetime, error: str, *,
                     after: float | None = None, attempts: int = 1, refund: bool = False,
                     jitter: Callable[[], float] = random.random) -> datetime:
    """Back to ``pending`` for another try: after ``after`` seconds (a ``Retry-After``), else the
    backoff for ``attempts``; returns when. ``error`` is kept short and must hold no fan content.
    ``refund``: the claim did not try to send (the platform was not connected), so it does not count."""
    delay = max(1.0, after) if after is not None else backoff(attempts, jitter)
    at = now + timedelta(seconds=delay)
    values: dict[str, Any] = {"status": PENDING, "next_attempt_at": at, "last_error": error[:500]}
    if refund:
        values["attempts"] = _o.attempts - 1
    await session.execute(update(table(Outbox)).where(_o.id == message_id).values(**values))
    return at


async def mark_failed(session: AsyncSession, message_id: int, now: datetime, error: str) -> None:
    """Give up on a message for good (the recipient cannot be reached); ``error`` says why."""
    await session.execute(update(table(Outbox)).where(_o.id == message_id)
                          .values(status=FAILED, last_error=error[:500], sent_at=None))


async def recover_interrupted(session: AsyncSession, platform: str, now: datetime,
                              older_than: timedelta = timedelta(minutes=2)) -> list[int]:
    """Rows a crash left ``sending`` (claimed more than ``older_than`` ago): back to ``pending``.

    Re-sending them is safe where the platform deduplicates by the row's key (LINE push and
    multicast, Discord with a nonce); a sender that cannot promise that (a LINE reply token,
    which cannot be retried) checks ``attempts > 1`` and decides.
    """
    stale = now - older_than
    result = await session.execute(
        update(table(Outbox)).where(_o.platform == platform, _o.status == SENDING, _o.next_attempt_at <= stale)
        .values(status=PENDING, next_attempt_at=now).returning(_o.id))
    return list(result.scalars())


def backoff(attempts: int, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after ``attempts`` failed ones: exponential, capped, jittered
    (between half and all of the step, so retries from many rows do not arrive together)."""
    step = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, attempts - 1))
    return step * (0.5 + 0.5 * jitter())


async def pending_count(session: AsyncSession, platforms: Sequence[str] = ()) -> int:
    """Rows waiting to be sent (for ``/healthz`` and the CLI)."""
    stmt = select(func.count()).select_from(table(Outbox)).where(_o.status.in_((PENDING, SENDING)))
    if platforms:
        stmt = stmt.where(_o.platform.in_(list(platforms)))
    return int((await session.execute(stmt)).scalar_one())
