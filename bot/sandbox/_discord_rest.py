"""REST half of the Discord emulator: the routes a bot uses, request recording, fault injection."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.sandbox._discord_gateway import Gateway
from bot.sandbox._discord_http import (
    ApiError,
    Handler,
    RecordedRequest,
    error,
    json_response,
    no_content,
    record_request,
)
from bot.sandbox._discord_objects import (
    THREAD_TYPES,
    Channel,
    Guild,
    Member,
    Payload,
    World,
    apply_edit,
)
from bot.sandbox._discord_ratelimits import RateLimits
from bot.sandbox._discord_rest_interactions import InteractionRoutes

_DEFAULT_ERRORS: dict[int, Payload] = {
    400: {"message": "400: Bad Request", "code": 0},
    401: {"message": "401: Unauthorized", "code": 0},
    403: {"message": "Missing Permissions", "code": 50013},
    404: {"message": "404: Not Found", "code": 0},
    429: {"message": "You are being rate limited.", "retry_after": 0.05, "global": False, "code": 0},
    500: {"message": "500: Internal Server Error", "code": 0},
}


@dataclass
class _Fault:
    method: str
    path_contains: str
    status: int
    times: int
    json: Payload


class RestApi(InteractionRoutes):
    def __init__(
        self,
        world: World,
        gateway: Gateway,
        *,
        gateway_url: Callable[[], str],
        echo_bot_messages: bool,
        interaction_deadline: float | None,
    ) -> None:
        self.world = world
        self.gateway = gateway
        self._gateway_url = gateway_url
        self.echo_bot_messages = echo_bot_messages
        self.interaction_deadline = interaction_deadline
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        #: Discord's rate limits, off until a test sets them (``emu.rate_limits.use_discords()``).
        self.rate_limits = RateLimits()
        self._holds: list[str] = []
        self._release = asyncio.Event()
        #: set while the answer to a message Discord created is being held back (``hold_after_accept``)
        self.holding = asyncio.Event()
        #: (channel id, nonce) → the message it created, for ``enforce_nonce`` sends.
        self._by_nonce: dict[tuple[int, str], Payload] = {}
        self._changed = asyncio.Condition()
        app, g, c, u = r"(?P<app>\d+)", r"(?P<g>\d+)", r"(?P<c>\d+)", r"(?P<u>\d+)"
        m = r"(?P<m>\d+|@original)"
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        routes: list[tuple[str, str, Handler]] = [
            ("GET", r"/gateway(/bot)?", self._get_gateway),
            ("GET", r"/users/@me", self._get_me),
            ("GET", rf"/users/{u}", self._get_user),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", r"(/oauth2)?/applications/@me", self._get_application),
            ("GET|PUT", rf"/applications/{app}(/guilds/{g})?/commands", self._commands),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("POST", hook, self._followup),
            ("GET|PATCH|DELETE", hook, self._webhook),
            ("GET|PATCH|DELETE", rf"{hook}/messages/{m}", self._webhook_message),
            ("GET", rf"/channels/{c}", self._get_channel),
            ("POST", rf"/channels/{c}/messages", self._create_message),
            ("GET|PATCH|DELETE", rf"/channels/{c}/messages/{m}", self._channel_message),
            ("PUT|DELETE", rf"/channels/{c}/messages/{m}/reactions/[^/]+/@me", self._no_content),
            ("POST", rf"/channels/{c}/typing", self._no_content),
            ("POST", rf"/channels/{c}(/messages/{m})?/threads", self._create_thread),
            ("GET", rf"/guilds/{g}", self._get_guild),
            ("GET", rf"/guilds/{g}/channels", self._guild_channels),
            ("GET", rf"/guilds/{g}/threads/active", self._active_threads),
            ("GET", rf"/guilds/{g}/roles", self._guild_roles),
            ("GET", rf"/guilds/{g}/members", self._guild_members),
            ("GET", rf"/guilds/{g}/members/{u}", self._get_member),
            ("PUT|DELETE", rf"/guilds/{g}/members/{u}/roles/(?P<r>\d+)", self._member_role),
            ("GET", rf"/guilds/{g}/invites", self._guild_invites),
        ]
        self._routes = [(frozenset(ms.split("|")), re.compile(p), h) for ms, p, h in routes]

    def fail_next(
        self, method: str, path_contains: str, status: int, times: int, json_body: Payload | None
    ) -> None:
        body = json_body or _DEFAULT_ERRORS.get(status, {"message": "error", "code": 0})
        self._faults.append(_Fault(method.upper(), path_contains, status, times, body))

    def hold_after_accept(self, path_contains: str) -> None:
        self._holds.append(path_contains)
        self._release.clear()

    def release(self) -> None:
        self._holds.clear()
        self._release.set()

    async def _hold(self, path: str) -> None:
        """Hold the answer back if a hold matches ``path`` (the message is already made)."""
        hold = next((h for h in self._holds if h in path), None)
        if hold is None:
            return
        self._holds.remove(hold)
        self.holding.set()
        await self._release.wait()

    async def handle(self, request: web.Request) -> web.Response:
        rec = await record_request(request)
        self.requests.append(rec)
        try:
            return self._injected_fault(rec) or await self._limited_route(rec)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def _injected_fault(self, rec: RecordedRequest) -> web.Response | None:
        for fault in self._faults:
            if fault.method in (rec.method, "*") and fault.path_contains in rec.path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                headers = {}
                if fault.status == 429:
                    # discord.py treats a 429 without "Via" as a Cloudflare ban and won't retry.
                    retry = str(fault.json.get("retry_after", 0.05))
                    headers = {"Via": "1.1 google", "Retry-After": retry, "X-RateLimit-Scope": "user"}
                return json_response(fault.json, fault.status, headers)
        return None

    async def _limited_route(self, rec: RecordedRequest) -> web.Response:
        verdict = self.rate_limits.check(rec.method, rec.path)
        if verdict.limited is not None:
            return json_response(verdict.limited, 429, verdict.headers)
        response = await self._route(rec)
        response.headers.update(verdict.headers)
        return response

    async def _route(self, rec: RecordedRequest) -> web.Response:
        for methods, pattern, handler in self._routes:
            match = pattern.fullmatch(rec.path)
            if match and rec.method in methods:
                try:
                    return await handler(rec, match)
                except ApiError as exc:
                    return exc.response
        self.unknown_requests.append(rec)
        return error(404, 0, "404: Not Found")

    def _guild(self, m: re.Match[str]) -> Guild:
        guild = self.world.guilds.get(int(m["g"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    def _channel(self, m: re.Match[str]) -> Channel:
        channel = self.world.channel(int(m["c"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _member(self, m: re.Match[str]) -> tuple[Guild, Member]:
        guild = self._guild(m)
        member = guild.members.get(int(m["u"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return guild, member

    # --- users, application, commands ---------------------------------------------------------
    async def _get_gateway(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self._gateway_url(), "shards": 1, "session_start_limit": limit})

    async def _get_me(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        return json_response({**self.world.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_user(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        user = self.world.users.get(int(m["u"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.payload())

    async def _create_dm(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        channel = self.world.dm_channel_for(int(rec.json["recipient_id"]))
        return json_response(self.world.channel_payload(channel))

    async def _get_application(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        world = self.world
        return json_response(
            {
                "id": str(world.application_id),
                "name": world.bot.name,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": world.user_payload(world.app_owner_id),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": world.bot.payload(),
                "interactions_endpoint_url": None,
            }
        )

    async def _commands(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        scope = int(m["g"]) if m["g"] else None
        if rec.method == "PUT":
            return json_response(self.world.store_commands(scope, rec.json or []))
        return json_response(self.world.commands.get(scope, []))

    # --- channels and messages ----------------------------------------------------------------
    async def _get_channel(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        return json_response(self.world.channel_payload(self._channel(m)))

    async def _create_message(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        world = self.world
        channel = self._channel(m)
        recipients = [world.user(u) for u in channel.recipient_ids]
        if any(u.dms_closed or u.bot for u in recipients):
            raise ApiError(403, 50007, "Cannot send messages to this user")
        body = rec.json or {}
        nonce = (channel.id, str(body["nonce"])) if body.get("nonce") is not None else None
        if nonce is not None and body.get("enforce_nonce") and nonce in self._by_nonce:
            return json_response(self._by_nonce[nonce])  # Discord: the same nonce again → the first message
        reply = (
            {"type": 19, "message_reference": body["message_reference"]}
            if body.get("message_reference")
            else {}
        )
        if nonce is not None:
            reply["nonce"] = nonce[1]
        message = world.bot_message(channel.id, body, **reply)
        world.sent.append(message)
        if nonce is not None:
            self._by_nonce[nonce] = message
        if self.echo_bot_messages:
            await self.gateway.broadcast("MESSAGE_CREATE", world.gateway_message(message))
        await self._hold(rec.path)
        return json_response(message)

    async def _channel_message(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        message = self.world.messages.get(int(m["m"])) if m["m"] != "@original" else None
        if message is None or message["channel_id"] != m["c"]:
            raise ApiError(404, 10008, "Unknown Message")
        if rec.method == "DELETE":
            del self.world.messages[int(m["m"])]
            return no_content()
        if rec.method == "PATCH":
            apply_edit(message, rec.json or {})
        return json_response(message)

    async def _no_content(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        self._channel(m)
        return no_content()

    async def _create_thread(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        world = self.world
        parent = self._channel(m)
        if parent.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = rec.json or {}
        thread_id = int(m["m"]) if m["m"] else world.new_id()
        kind = 11 if m["m"] or parent.type == 15 else body.get("type", 12)
        thread = Channel(thread_id, body.get("name", "thread"), kind, parent.guild_id, parent_id=parent.id)
        thread.owner_id = world.bot.id
        world.guilds[parent.guild_id].channels[thread.id] = thread
        data = world.channel_payload(thread)
        starter = body.get("message")
        if parent.type == 15 and isinstance(starter, dict):
            data["message"] = world.bot_message(thread.id, starter, message_id=thread.id)
            world.sent.append(data["message"])
        await self.gateway.broadcast("THREAD_CREATE", {**data, "newly_created": True})
        return json_response(data, 201)

    # --- guilds ----------------------------------------------------------------------------------
    async def _get_guild(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        return json_response(self.world.guild_payload(self._guild(m)))

    async def _guild_channels(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        channels = [c for c in self._guild(m).channels.values() if c.type not in THREAD_TYPES]
        return json_response([self.world.channel_payload(c) for c in channels])

    async def _active_threads(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        threads = [c for c in self._guild(m).channels.values() if c.type in THREAD_TYPES]
        return json_response({"threads": [self.world.channel_payload(c) for c in threads], "members": []})

    async def _guild_roles(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        return json_response([r.payload() for r in self._guild(m).roles.values()])

    async def _guild_members(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        guild = self._guild(m)
        after, limit = int(rec.query.get("after", 0)), int(rec.query.get("limit", 1))
        ids = sorted(u for u in guild.members if u > after)[:limit]
        return json_response([self.world.member_payload(guild, u) for u in ids])

    async def _get_member(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        guild, member = self._member(m)
        return json_response(self.world.member_payload(guild, member.user_id))

    async def _member_role(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        guild, member = self._member(m)
        role_id = int(m["r"])
        if role_id not in guild.roles:
            raise ApiError(404, 10011, "Unknown Role")
        if rec.method == "PUT" and role_id not in member.roles:
            member.roles.append(role_id)
        elif rec.method == "DELETE" and role_id in member.roles:
            member.roles.remove(role_id)
        update = {**self.world.member_payload(guild, member.user_id), "guild_id": str(guild.id)}
        await self.gateway.broadcast("GUILD_MEMBER_UPDATE", update)
        return no_content()

    async def _guild_invites(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        return json_response([self.world.invite_payload(i) for i in self._guild(m).invites.values()])
