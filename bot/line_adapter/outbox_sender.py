"""The LINE half of the outbox: answers, relays and the digest push, sent once, cheapest way first.

``OutboxDrainer("line", transact, LineOutboxSender(sender))`` hands every claimed LINE row here.
Kinds: ``answer`` (a reply to a fan's command, or a greeting), ``relay`` (a staff answer) and
``digest_line`` (the digest pushed to the creator). The payload holds the messages, either
``{"messages": [<LINE message objects as the API takes them>]}`` or ``{"text": …}``, and
``push``: whether the message may cost a push when no reply token is fresh (command answers
yes, greetings never; relays and the digest default to yes).

How a row goes out, in order:

1. its own ``reply_token`` while ``reply_until`` has not passed (free);
2. else a fresh reply token the fan sent since (``LineSender.take_token``; free);
3. else a push, if the row allows it, counted against the monthly quota (``QuotaBook``), with
   ``X-Line-Retry-Key`` = a UUID fixed by the row's idempotency key: LINE answers 409 to a key it
   already accepted, and that counts as sent.

A reply token cannot be retried safely by a push: if an earlier attempt may have used it (the
process died after LINE took the reply, or LINE answered 5xx), the row is replied again while the
token is fresh (LINE refuses a spent token, so that never delivers twice) and otherwise marked
failed "interrupted" rather than pushed, which could deliver it twice. Only an attempt that was
certainly not carried out (LINE answered 429: :data:`NOT_SENT`) lets the next one push.

``drop_multicast`` rows (``crm/drops.py``) are one persisted batch of a drop: payload
``{"drop_id", "to": [≤ 500 user ids]}``, sent as one multicast with ``X-Line-Retry-Key`` derived
from the row's key and the drop's custom aggregation unit. A retry after a crash sends the same
ids under the same key; LINE's 409 for an accepted key counts as sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
from linebot.v3.messaging import ImageMessage, Message, ReplyMessageRequest, TextMessage
from linebot.v3.messaging.exceptions import ApiException

from bot.drop_views import DropViews
from bot.line_adapter.quota import QuotaExceeded
from bot.line_adapter.sender import LineSender, LineSendError, api_error, mask
from bot.outbox_drain import RetryLater, Undeliverable
from crm.clock import Clock, utcnow
from crm.outbox import OutboxMessage

log = logging.getLogger(__name__)

#: A retry reason that says the attempt was certainly not carried out by LINE.
NOT_SENT = "not sent:"
#: Kinds that may be pushed when the payload does not say.
PUSH_BY_DEFAULT = frozenset({"relay", "digest_line"})
KINDS = frozenset({"answer", "relay", "digest_line", "drop_multicast"})
MAX_TEXT = 5000
_RETRY_KEYS = uuid.UUID("5b0d3c52-8f7e-4a59-9d52-2f3a1c0e6b11")


def retry_key(idempotency_key: str) -> str:
    """The ``X-Line-Retry-Key`` for a row: its key when it is a UUID (in LINE's dashed form), else
    a UUID5 derived from it, so ``digest:2026-12-07`` always maps to the same retry key."""
    try:
        return str(uuid.UUID(idempotency_key))
    except ValueError:
        return str(uuid.uuid5(_RETRY_KEYS, idempotency_key))


def messages_of(payload: dict[str, Any]) -> list[Message]:
    """The SDK messages a payload describes (``messages`` as the API takes them, or ``text``)."""
    raw = payload.get("messages")
    if raw:
        return [Message.from_dict(item) for item in raw]  # type: ignore[misc]
    text = str(payload.get("text") or "")
    return [TextMessage(text=text[:MAX_TEXT])] if text.strip() else []


def payload_of(messages: Sequence[Message], *, push: bool) -> dict[str, Any]:
    """The outbox payload for SDK messages (what :func:`messages_of` reads back)."""
    return {"messages": [m.to_dict() for m in messages], "push": push}


class LineOutboxSender:
    """The drainer's handler for LINE; one fan's messages go out one after another, in row order."""

    def __init__(self, sender: LineSender, *, clock: Clock = utcnow, drops: DropViews | None = None) -> None:
        self.sender = sender
        self._clock = clock
        self._drops = drops
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self.replies = 0
        self.pushes = 0
        self.multicasts = 0

    async def __call__(self, message: OutboxMessage) -> None:
        if message.kind not in KINDS:
            raise Undeliverable(f"no LINE sender for kind {message.kind!r}")
        if message.kind == "drop_multicast":
            await self._drop(message)
            return
        messages = messages_of(message.payload)
        if not messages:
            raise Undeliverable("empty message")
        async with self._one_at_a_time(message.recipient):
            await self._send(message, messages)

    async def _send(self, message: OutboxMessage, messages: list[Message]) -> None:
        to = message.recipient
        may_push = bool(message.payload.get("push", message.kind in PUSH_BY_DEFAULT))
        if message.reply_token:
            maybe_used = message.attempts > 1 and not (message.last_error or "").startswith(NOT_SENT)
            if self._fresh(message.reply_until):
                if await self._reply(to, message.reply_token, messages):
                    return
                if maybe_used:
                    raise Undeliverable("interrupted: the reply token was already used")
            elif maybe_used:
                raise Undeliverable("interrupted: the reply token expired")
        else:
            remembered = self.sender.take_token(to)
            if remembered is not None and await self._reply(to, remembered[0], messages):
                return
        if not may_push:
            raise Undeliverable("reply token expired (this message is never pushed)")
        await self._push(message, messages)

    def _fresh(self, until: datetime | None) -> bool:
        return until is not None and self._clock() < until

    async def _reply(self, to: str, token: str, messages: list[Message]) -> bool:
        """True when LINE took the reply; False when it refused the token (spent or expired)."""
        try:
            await self.sender.api.reply_message(ReplyMessageRequest(reply_token=token, messages=messages),
                                                _request_timeout=self.sender.timeout)
        except ApiException as exc:
            status, reason, retry_after = api_error(exc)
            if status == 400 and "reply token" in reason.lower():
                return False
            if status == 429:
                raise RetryLater(f"{NOT_SENT} LINE 429", after=retry_after) from None
            if status >= 500:
                raise RetryLater(f"LINE {status}", after=retry_after) from None
            raise Undeliverable(f"LINE {status}: {reason}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"network: {type(exc).__name__}") from None
        self.replies += 1
        return True

    async def _push(self, message: OutboxMessage, messages: list[Message]) -> None:
        try:
            await self.sender.push(message.recipient, messages, retry_key=retry_key(message.idempotency_key),
                                   attempts=1)
        except QuotaExceeded:
            raise Undeliverable("LINE monthly quota reached") from None
        except LineSendError as exc:
            if exc.status == 429 and "monthly limit" in exc.reason.lower():
                raise Undeliverable("LINE monthly limit reached") from None
            if exc.status == 429 or exc.status == 0 or exc.status >= 500:
                self.sender.quota.release(1)  # counted again by the retry (a 409 then counts it once)
                prefix = f"{NOT_SENT} " if exc.status == 429 else ""
                raise RetryLater(f"{prefix}LINE push {exc.status or exc.reason}", after=exc.retry_after) from None
            log.info("LINE push to %s refused for good: %s", mask(message.recipient), exc.status)
            raise Undeliverable(f"LINE {exc.status}: {exc.reason}") from None
        self.pushes += 1

    async def _drop(self, message: OutboxMessage) -> None:
        """One batch of a drop: the persisted ids, the row's retry key, the drop's aggregation unit."""
        if self._drops is None:
            raise RetryLater("drops are not set up in this process")
        view = await self._drops.get(int(message.payload["drop_id"]))
        if view is None:
            raise Undeliverable("the drop no longer exists")
        waiting = await self._drops.still_waiting(message.id)
        # The batch as persisted, less fans erased since (their deliveries are gone). Safe under the
        # retry key: LINE answers 409 to a key it took whatever the body, and a key it never took
        # may carry a smaller batch.
        to = [u for u in (str(u) for u in message.payload.get("to") or []) if u in waiting]
        if not to:
            return  # nobody left to send to: the row is done
        messages: list[Message] = [TextMessage(text=self._drops.text(view)[:MAX_TEXT])]
        if view.image_url:
            messages.append(ImageMessage(original_content_url=view.image_url, preview_image_url=view.image_url))
        try:
            try:
                await self.sender.multicast_batch(to, messages, retry_key=retry_key(message.idempotency_key),
                                                  aggregation_unit=view.aggregation_unit)
            except LineSendError as exc:
                if not (view.aggregation_unit and exc.status == 400 and "aggregation" in exc.reason.lower()):
                    raise
                # Past LINE's 1,000 unit names a month: the drop still goes out, only untagged (LINE
                # refused the request, so the same retry key is still unused).
                log.warning("LINE refused drop %s's aggregation unit (%s); sending it untagged", view.id, exc.reason)
                await self.sender.multicast_batch(to, messages, retry_key=retry_key(message.idempotency_key))
        except QuotaExceeded:
            raise Undeliverable("LINE monthly quota reached") from None
        except LineSendError as exc:
            if exc.status == 429 and "monthly limit" in exc.reason.lower():
                raise Undeliverable("LINE monthly limit reached") from None
            if exc.status == 429 or exc.status == 0 or exc.status >= 500:
                self.sender.quota.release(len(to))  # counted again by the retry (a 409 then counts it once)
                raise RetryLater(f"LINE multicast {exc.status or exc.reason}", after=exc.retry_after) from None
            log.info("LINE multicast of drop %s refused for good: %s", view.id, exc.status)
            raise Undeliverable(f"LINE {exc.status}: {exc.reason}") from None
        self.multicasts += 1

    @asynccontextmanager
    async def _one_at_a_time(self, user: str) -> AsyncIterator[None]:
        """A fan's rows in the order they were claimed (asyncio locks are fair), others in parallel."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        self._users[user] = self._users.get(user, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[user] -= 1
            if not self._users[user]:
                del self._users[user], self._locks[user]
