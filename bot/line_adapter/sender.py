"""Outbound LINE messages through the SDK's ``AsyncMessagingApi``, cheapest way first.

A reply token is free but single use and short-lived; a push costs one message of the monthly
quota. So: reply while the token is fresh, else push with an ``X-Line-Retry-Key`` (LINE answers
409 to a key it already accepted, so a retried push is never delivered twice). 429 and 5xx are
retried with bounded backoff; other 4xx fail at once with LINE's reason logged.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from linebot.v3.messaging import (
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    Message,
    MulticastRequest,
    PushMessageRequest,
    ReplyMessageRequest,
    UserProfileResponse,
)
from linebot.v3.messaging.exceptions import ApiException

from bot.line_adapter.quota import QuotaBook
from crm.clock import Clock, utcnow

log = logging.getLogger(__name__)

MULTICAST_BATCH = 500
MAX_RETRY_AFTER_S = 30.0
_TOKEN_STORE_LIMIT = 10_000


class LineSendError(Exception):
    """LINE did not take the message; ``str()`` is LINE's reason (safe to log, never the message)."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"LINE answered {status}: {reason}" if status else reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Sent:
    """How a message went out: ``reply`` (free), ``push``/``multicast`` (counted) or ``skipped``."""

    via: str
    recipients: int = 1


class _Ambiguous(Exception):
    """The request may have been carried out (5xx or a broken connection)."""


def mask(user_id: str) -> str:
    """Enough of a LINE user id to correlate log lines, not enough to identify anyone."""
    return f"…{user_id[-4:]}" if user_id else "?"


class LineSender:
    """Reply, push, multicast and profile lookups for one channel; open with ``start``, end with ``close``."""

    def __init__(
        self,
        api_base: str,
        access_token: str,
        *,
        monthly_quota: int,
        timezone: str,
        reply_ttl: float = 50.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        request_timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._configuration = Configuration(host=api_base.rstrip("/"), access_token=access_token)
        self.reply_ttl = reply_ttl
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._timeout = request_timeout
        self._monotonic = monotonic
        self._sleep = sleep
        self._client: AsyncApiClient | None = None
        self._api: AsyncMessagingApi | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self.quota = QuotaBook(monthly_quota, timezone, self._consumption, clock=clock)

    async def start(self) -> None:
        """Open the HTTP client (it must be created on the running loop)."""
        if self._client is None:
            self._client = AsyncApiClient(self._configuration)
            self._api = AsyncMessagingApi(self._client)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._api = self._client, None, None
            await client.close()

    @property
    def api(self) -> AsyncMessagingApi:
        if self._api is None:
            raise RuntimeError("LineSender is not started")
        return self._api

    @property
    def timeout(self) -> float:
        """Seconds one API request may take."""
        return self._timeout

    # reply tokens

    def fresh(self, received_at: float | None) -> bool:
        return received_at is not None and self._monotonic() - received_at < self.reply_ttl

    def remember_token(self, user_id: str, token: str, received_at: float) -> None:
        """Keep a fan's latest unused reply token, so a staff answer within the window is free."""
        tokens = self._tokens
        tokens.pop(user_id, None)  # re-inserted last: the dict stays in the order tokens arrived
        while tokens and len(tokens) >= _TOKEN_STORE_LIMIT:
            # The oldest token goes first (stale or not): rebuilding the whole store on every
            # token once it was full cost a burst of new fans O(limit) per event.
            del tokens[next(iter(tokens))]
        tokens[user_id] = (token, received_at)

    def take_token(self, user_id: str) -> tuple[str, float] | None:
        token = self._tokens.pop(user_id, None)
        return token if token is not None and self.fresh(token[1]) else None

    # sending

    async def send_to_fan(self, user_id: str, messages: Sequence[Message]) -> Sent:
        """Answer a fan: with their latest fresh reply token if there is one, else push."""
        token = self.take_token(user_id)
        return await self.reply_or_push(user_id, messages, reply_token=token[0] if token else None,
                                        received_at=token[1] if token else None)

    async def reply_or_push(self, to: str, messages: Sequence[Message], *, reply_token: str | None,
                            received_at: float | None, push: bool = True) -> Sent:
        """Reply while the token is fresh; push otherwise (or skip when ``push`` is false)."""
        if reply_token and self.fresh(received_at):
            self._tokens.pop(to, None)
            if await self._reply(to, reply_token, messages):
                return Sent("reply")
        if not push:
            return Sent("skipped", 0)
        return await self.push(to, messages)

    async def _reply(self, to: str, token: str, messages: Sequence[Message]) -> bool:
        """True when the reply went out (or may have); False when the token was refused outright."""
        request = ReplyMessageRequest(reply_token=token, messages=list(messages))
        ambiguous = False
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self.api.reply_message(request, _request_timeout=self._timeout)
                return True
            except ApiException as exc:
                status, reason, retry_after = api_error(exc)
                if status == 400 and "reply token" in reason.lower():
                    if ambiguous:  # an earlier attempt probably used it: pushing could double
                        log.warning("LINE reply to %s: token spent by an earlier attempt; not pushing", mask(to))
                        return True
                    log.info("LINE reply to %s: token refused (%s); pushing instead", mask(to), reason)
                    return False
                if status != 429 and status < 500:
                    log.error("LINE reply to %s failed: %s %s", mask(to), status, reason)
                    raise LineSendError(status, reason) from None
                ambiguous = ambiguous or status >= 500
                last: Exception = LineSendError(status, reason)
            except (aiohttp.ClientError, TimeoutError) as exc:
                ambiguous = True
                last, retry_after = LineSendError(0, f"{type(exc).__name__}"), None
            if attempt < self._max_attempts:
                await self._sleep(self._delay(attempt, retry_after))
        log.error("LINE reply to %s gave up after %d attempts: %s", mask(to), self._max_attempts, last)
        raise last

    async def push(self, to: str, messages: Sequence[Message], *, retry_key: str | None = None,
                   attempts: int | None = None) -> Sent:
        """Push (counted against the monthly quota); raises QuotaExceeded or LineSendError.

        ``attempts``: 1 for a caller that retries on its own schedule (the outbox drainer), so a
        ``Retry-After`` is honoured there instead of slept here.
        """
        key = retry_key or str(uuid.uuid4())
        request = PushMessageRequest(to=to, messages=list(messages))
        await self.quota.reserve(1)
        await self._counted("push", to, 1, lambda: self.api.push_message(
            request, x_line_retry_key=key, _request_timeout=self._timeout), attempts=attempts)
        return Sent("push")

    async def multicast(self, user_ids: Sequence[str], messages: Sequence[Message], *,
                        retry_key: str | None = None) -> Sent:
        """Multicast in batches of 500, each with its own retry key derived from ``retry_key``.

        Deriving the batch keys means a caller retrying the whole call (same ``retry_key``) cannot
        deliver any batch twice, but only if the retry passes the very same ids in the same order
        (a batch's key follows its index). The quota is checked for all recipients before the first
        batch. Drops persist their batches and send each with :meth:`multicast_batch` instead.
        """
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return Sent("skipped", 0)
        base = uuid.UUID(retry_key) if retry_key else uuid.uuid4()
        await self.quota.reserve(len(ids))
        sent = 0
        try:
            for n, start in enumerate(range(0, len(ids), MULTICAST_BATCH)):
                batch = ids[start : start + MULTICAST_BATCH]
                key = str(uuid.uuid5(base, str(n)))
                request = MulticastRequest(to=batch, messages=list(messages))
                await self._counted("multicast", f"{len(batch)} fans", 0, functools.partial(
                    self.api.multicast, request, x_line_retry_key=key, _request_timeout=self._timeout))
                sent += len(batch)
        except LineSendError as exc:
            if exc.status and exc.status < 500 and exc.status != 429:
                self.quota.release(len(ids) - sent)
            raise
        return Sent("multicast", len(ids))

    async def multicast_batch(self, user_ids: Sequence[str], messages: Sequence[Message], *, retry_key: str,
                              aggregation_unit: str | None = None) -> Sent:
        """One multicast to at most 500 users under the caller's ``retry_key``, tried once.

        For a caller that persisted the batch and its key before the first call (the outbox's drop
        rows): a retry sends the very same ids under the same key, so LINE answers 409 to a batch it
        already took (counted as sent) instead of delivering it twice. ``aggregation_unit`` tags the
        messages so their impressions and clicks can be read back per unit. Raises QuotaExceeded or
        LineSendError; a 429/5xx is the caller's to retry (its reservation is the caller's to release).
        """
        ids = list(user_ids)
        if not 1 <= len(ids) <= MULTICAST_BATCH or len(set(ids)) != len(ids):
            raise ValueError(f"a multicast batch holds 1-{MULTICAST_BATCH} distinct user ids, not {len(ids)}")
        request = MulticastRequest(to=ids, messages=list(messages),
                                   custom_aggregation_units=[aggregation_unit] if aggregation_unit else None)
        await self.quota.reserve(len(ids))
        await self._counted("multicast", f"{len(ids)} fans", len(ids), functools.partial(
            self.api.multicast, request, x_line_retry_key=retry_key, _request_timeout=self._timeout), attempts=1)
        return Sent("multicast", len(ids))

    async def _counted(self, what: str, to: str, reserved: int, call: Callable[[], Awaitable[Any]], *,
                       attempts: int | None = None) -> None:
        """One quota-counted request with retries; a refusal returns the reservation."""
        max_attempts = attempts or self._max_attempts
        for attempt in range(1, max_attempts + 1):
            try:
                await call()
                return
            except ApiException as exc:
                status, reason, retry_after = api_error(exc)
                if status == 409 and "retry key" in reason.lower():
                    log.info("LINE %s to %s was already accepted (retry key); not sent again", what, mask(to))
                    return
                if status == 429 and "monthly limit" in reason.lower():
                    self.quota.used = max(self.quota.used, self.quota.quota)
                    log.error("LINE %s to %s refused: the channel's monthly limit is reached", what, mask(to))
                    raise LineSendError(status, reason) from None
                if status != 429 and status < 500:
                    self.quota.release(reserved)
                    log.error("LINE %s to %s failed: %s %s", what, mask(to), status, reason)
                    raise LineSendError(status, reason) from None
                last = LineSendError(status, reason, retry_after)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last, retry_after = LineSendError(0, f"{type(exc).__name__}"), None
            if attempt < max_attempts:
                await self._sleep(self._delay(attempt, retry_after))
        log.log(logging.ERROR if max_attempts > 1 else logging.INFO, "LINE %s to %s gave up after %d attempts: %s",
                what, mask(to), max_attempts, last)
        raise last

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        return min(self._backoff * 2 ** (attempt - 1), MAX_RETRY_AFTER_S)

    # reading

    async def profile(self, user_id: str) -> UserProfileResponse | None:
        """The fan's LINE profile, or None when LINE will not say (not a friend, blocked, error)."""
        try:
            return await self.api.get_profile(user_id, _request_timeout=self._timeout)
        except ApiException as exc:
            status, reason, _ = api_error(exc)
            log.log(logging.DEBUG if status == 404 else logging.WARNING,
                    "LINE profile of %s unavailable: %s %s", mask(user_id), status, reason)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("LINE profile of %s unavailable: %s", mask(user_id), type(exc).__name__)
        return None

    async def consumption(self) -> int:
        """Messages this channel has spent this month, by LINE's own count (raises on failure)."""
        return await self._consumption()

    async def _consumption(self) -> int:
        return int((await self.api.get_message_quota_consumption(_request_timeout=self._timeout)).total_usage)


def api_error(exc: ApiException) -> tuple[int, str, float | None]:
    """Status, LINE's message and Retry-After from an SDK error."""
    status = int(exc.status or 0)
    reason = str(exc.reason or "")
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            reason = str(json.loads(body).get("message") or reason)
        except (ValueError, AttributeError):
            pass
    retry_after: float | None = None
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return status, reason[:300], retry_after
