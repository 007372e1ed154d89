"""Loopback emulator of the LINE Messaging API routes superfan uses.

Tests and `superfan demo` point the unmodified line-bot-sdk at it with
`Configuration(host=emu.base_url, access_token=emu.access_token)`, so the real client code
(serialisation, headers, error handling) runs without network access.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from bot.sandbox._line_faults import ScriptedFaults
from bot.sandbox._line_rich_menus import RichMenuRoutes
from bot.sandbox._line_state import (
    QUOTABLE_TYPES,
    Accepted,
    ApiError,
    Delivered,
    RecordedCall,
    RichMenu,
    Via,
    check_aggregation_units,
    check_retry_key,
    check_send,
)

__all__ = ["Delivered", "LineEmulator", "RecordedCall", "RichMenu"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROFILE_PREFIX = "/v2/bot/profile/"
REQUEST_ID = web.RequestKey("request_id", str)
BODY = web.RequestKey("body", dict[str, Any])


class LineEmulator(ScriptedFaults, RichMenuRoutes):
    """An aiohttp server on 127.0.0.1 that answers like api.line.me and records everything.

    Faults and held answers are scripted through :class:`ScriptedFaults`' methods; rich menus are
    :class:`RichMenuRoutes`'.
    """

    def __init__(
        self,
        access_token: str = "test-access-token",
        *,
        monthly_quota: int | None = None,
        reply_token_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        auto_profiles: bool = True,
        delay: float = 0.0,
    ) -> None:
        ScriptedFaults.__init__(self)
        RichMenuRoutes.__init__(self)
        self.access_token = access_token
        self.monthly_quota = monthly_quota
        self.reply_token_ttl = reply_token_ttl
        self.auto_profiles = auto_profiles
        self.delay = delay
        self.total_usage = 0
        self.calls: list[RecordedCall] = []
        self.delivered: list[Delivered] = []
        self.profiles: dict[str, dict[str, Any]] = {}
        self._clock = clock
        self._reply_tokens: dict[str, tuple[str, float]] = {}
        self._accepted: dict[str, Accepted] = {}
        self._message_ids = itertools.count(500_000_000_000_000_001)
        #: recipients per custom aggregation unit (LINE's statistics per unit read these back)
        self.aggregation_units: Counter[str] = Counter()
        #: distinct unit names LINE takes in a month (1,000 per channel); a new one past it is a 400
        self.aggregation_unit_limit = 1000
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    # lifecycle

    async def start(self) -> None:
        """Bind a free loopback port; the SDK only needs `base_url` afterwards."""
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v2/bot/message/reply", self._reply)
        app.router.add_post("/v2/bot/message/push", self._push)
        app.router.add_post("/v2/bot/message/multicast", self._multicast)
        app.router.add_get(PROFILE_PREFIX + "{user_id}", self._profile)
        app.router.add_get("/v2/bot/message/quota", self._quota)
        app.router.add_get("/v2/bot/message/quota/consumption", self._consumption)
        self._add_rich_menu_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._stopping.clear()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Shut down promptly even if a `delay` is holding a response back."""
        if self._runner is None:
            return
        self._stopping.set()
        runner, self._runner, self._port = self._runner, None, None
        await runner.cleanup()

    async def __aenter__(self) -> LineEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("LineEmulator is not started")
        return f"http://127.0.0.1:{self._port}"

    # scripting and inspection

    def issue_reply_token(self, user_id: str) -> str:
        """Mint the token a webhook event would carry; it works once, within the TTL."""
        token = secrets.token_hex(16)
        self._reply_tokens[token] = (user_id, self._clock() + self.reply_token_ttl)
        return token

    def received(self) -> Counter[str]:
        """How many deliveries each user got (any route): exactly-once checks count here."""
        return Counter(d.to for d in self.delivered)

    def add_profile(
        self,
        user_id: str,
        display_name: str,
        *,
        picture_url: str | None = None,
        language: str | None = None,
    ) -> dict[str, Any]:
        """Register a profile, leaving out optional fields the way LINE omits them."""
        profile: dict[str, Any] = {"displayName": display_name, "userId": user_id}
        if picture_url is not None:
            profile["pictureUrl"] = picture_url
        if language is not None:
            profile["language"] = language
        self.profiles[user_id] = profile
        return profile

    def delivered_to(self, user_id: str) -> list[Delivered]:
        return [d for d in self.delivered if d.to == user_id]

    @property
    def profile_requests(self) -> int:
        return sum(1 for c in self.calls if c.method == "GET" and c.path.startswith(PROFILE_PREFIX))

    def reset(self, *, full: bool = False) -> None:
        """Clear recordings; `full` also forgets quota usage, retry keys, tokens and faults."""
        self.calls.clear()
        self.delivered.clear()
        self.aggregation_units.clear()
        if full:
            self.total_usage = 0
            self._reply_tokens.clear()
            self._accepted.clear()
            self._faults.clear()
            self._random_faults.clear()

    # HTTP plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, faults, error rendering, recording and delay shared by every route."""
        request_id = str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        body: Any = None
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
        request[BODY] = body
        hold = False
        try:
            self._authenticate(request)
            late = self._inject_fault(request.path)
            response = await handler(request)
            hold = response.status == 200 and self._take_hold(request.path)
            if late is not None:
                self._raise_fault(late.status, late.retry_after)
        except ApiError as err:
            response = web.json_response(err.body, status=err.status, headers=err.headers)
        response.headers["x-line-request-id"] = request_id
        self.calls.append(
            RecordedCall(
                method=request.method,
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                json=body,
                status=response.status,
                at=self._clock(),
            )
        )
        if self.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay)
        if hold:
            self.holding.set()
            stopping = asyncio.ensure_future(self._stopping.wait())
            released = asyncio.ensure_future(self._release.wait())
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            released.cancel()
        return response

    def _authenticate(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            raise ApiError(
                401,
                "Authentication failed. Confirm that the access token in the authorization header is valid.",
            )

    def _charge(self, recipients: int) -> None:
        """LINE counts each recipient once per request, whatever the number of messages."""
        if self.monthly_quota is not None and self.total_usage + recipients > self.monthly_quota:
            raise ApiError(429, "You have reached your monthly limit.")
        self.total_usage += recipients

    def _deliver(
        self, request: web.Request, via: Via, recipients: list[str], retry_key: str | None
    ) -> list[dict[str, str]]:
        messages: list[dict[str, Any]] = request[BODY]["messages"]
        for user_id in recipients:
            self.delivered.append(
                Delivered(via, user_id, [dict(m) for m in messages], retry_key, request[REQUEST_ID])
            )
        sent: list[dict[str, str]] = []
        for message in messages:
            entry = {"id": str(next(self._message_ids))}
            if message.get("type") in QUOTABLE_TYPES:
                entry["quoteToken"] = secrets.token_urlsafe(24)
            sent.append(entry)
        return sent

    def _retry_key(self, request: web.Request) -> str | None:
        key = check_retry_key(request.headers.get("X-Line-Retry-Key"))
        if key is not None and (prior := self._accepted.get(key)) is not None:
            extra = {"sentMessages": prior.sent_messages} if prior.sent_messages else None
            raise ApiError(
                409,
                "The retry key is already accepted",
                headers={"x-line-accepted-request-id": prior.request_id},
                extra=extra,
            )
        return key

    # routes

    async def _reply(self, request: web.Request) -> web.Response:
        body = request[BODY]
        check_send("reply", body)
        user_id, expires_at = self._reply_tokens.pop(body["replyToken"], ("", float("-inf")))
        if self._clock() >= expires_at:
            raise ApiError(400, "Invalid reply token")
        return web.json_response({"sentMessages": self._deliver(request, "reply", [user_id], None)})

    async def _push(self, request: web.Request) -> web.Response:
        body = request[BODY]
        check_send("push", body)
        key = self._retry_key(request)
        self._charge(1)
        sent = self._deliver(request, "push", [body["to"]], key)
        if key is not None:
            self._accepted[key] = Accepted(request[REQUEST_ID], sent)
        return web.json_response({"sentMessages": sent})

    async def _multicast(self, request: web.Request) -> web.Response:
        """Real LINE answers multicast with `{}`; the SDK types it as a bare object."""
        body = request[BODY]
        check_send("multicast", body)
        unit = check_aggregation_units(body)
        if unit is not None and unit not in self.aggregation_units \
                and len(self.aggregation_units) >= self.aggregation_unit_limit:
            raise ApiError(400, "The number of aggregation units used this month exceeds the limit")
        key = self._retry_key(request)
        self._charge(len(body["to"]))
        if unit is not None:
            self.aggregation_units[unit] += len(body["to"])
        self._deliver(request, "multicast", list(body["to"]), key)
        if key is not None:
            self._accepted[key] = Accepted(request[REQUEST_ID])
        return web.json_response({})

    async def _profile(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        profile = self.profiles.get(user_id)
        if profile is None and self.auto_profiles:
            profile = {"displayName": f"User {user_id[-4:]}", "userId": user_id}
        if profile is None:
            raise ApiError(404, "Not found")
        return web.json_response({"userId": user_id, **profile})

    async def _quota(self, request: web.Request) -> web.Response:
        if self.monthly_quota is None:
            return web.json_response({"type": "none"})
        return web.json_response({"type": "limited", "value": self.monthly_quota})

    async def _consumption(self, request: web.Request) -> web.Response:
        return web.json_response({"totalUsage": self.total_usage})

    async def _not_found(self, request: web.Request) -> web.Response:
        raise ApiError(404, "Not found")
