"""Gateway half of the Discord emulator: HELLO, IDENTIFY/RESUME, heartbeats and dispatches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.sandbox._discord_objects import Payload, World

DISPATCH = 0
HEARTBEAT = 1
IDENTIFY = 2
RESUME = 6
REQUEST_MEMBERS = 8
INVALID_SESSION = 9
HELLO = 10
HEARTBEAT_ACK = 11
RESUMABLE_CLOSE_CODE = 4000


@dataclass
class Session:
    id: str
    seq: int = 0


class GatewayConnection:
    """One bot websocket; serialises sends because zlib-stream output must stay in order."""

    def __init__(self, ws: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.ws = ws
        self.session: Session | None = None
        self._zlib = zlib.compressobj() if zlib_stream else None
        self._lock = asyncio.Lock()

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        async with self._lock:
            seq = None
            if op == DISPATCH and self.session is not None:
                self.session.seq += 1
                seq = self.session.seq
            text = json.dumps({"op": op, "d": data, "s": seq, "t": event}, ensure_ascii=False)
            if self._zlib is None:
                await self.ws.send_str(text)
            else:
                raw = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(raw)


class Gateway:
    """Accepts discord.py gateway connections and fans dispatches out to the ready ones."""

    def __init__(self, world: World, *, heartbeat_interval_ms: int, gateway_url: Callable[[], str]) -> None:
        self.world = world
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._gateway_url = gateway_url
        self.identify_payloads: list[Payload] = []
        self.resume_payloads: list[Payload] = []
        self.connect_queries: list[dict[str, str]] = []
        self.fail_identify_with: int | None = None
        self.sessions: dict[str, Session] = {}
        self.ready: list[GatewayConnection] = []
        self._open: set[GatewayConnection] = set()
        self._changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.connect_queries.append(dict(request.query))
        conn = GatewayConnection(ws, zlib_stream=request.query.get("compress") == "zlib-stream")
        self._open.add(conn)
        try:
            await conn.send(HELLO, {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["emulator"]})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_payload(conn, json.loads(msg.data))
        finally:
            self._open.discard(conn)
            await self._set_ready(conn, False)
        return ws

    async def _on_payload(self, conn: GatewayConnection, payload: Payload) -> None:
        op, data = payload.get("op"), payload.get("d") or {}
        if op == HEARTBEAT:
            await conn.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            await self._identify(conn, data)
        elif op == RESUME:
            await self._resume(conn, data)
        elif op == REQUEST_MEMBERS:
            await self._members_chunk(conn, data)

    async def _identify(self, conn: GatewayConnection, data: Payload) -> None:
        self.identify_payloads.append(data)
        if self.fail_identify_with is not None:
            await conn.ws.close(code=self.fail_identify_with, message=b"Disallowed intent(s).")
            return
        session = Session(secrets.token_hex(16))
        self.sessions[session.id] = session
        conn.session = session
        world = self.world
        ready: Payload = {
            "v": 10,
            "user": {**world.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in world.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self._gateway_url(),
            "application": {"id": str(world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "_trace": ["emulator"],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await conn.send(DISPATCH, ready, "READY")
        for guild in list(world.guilds.values()):
            await conn.send(DISPATCH, world.guild_payload(guild), "GUILD_CREATE")
        await self._set_ready(conn, True)

    async def _resume(self, conn: GatewayConnection, data: Payload) -> None:
        self.resume_payloads.append(data)
        session = self.sessions.get(data.get("session_id", ""))
        if session is None:
            await conn.send(INVALID_SESSION, False)
            return
        conn.session = session
        await conn.send(DISPATCH, {"_trace": ["emulator"]}, "RESUMED")
        await self._set_ready(conn, True)

    async def _members_chunk(self, conn: GatewayConnection, data: Payload) -> None:
        guild = self.world.guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            self.world.member_payload(guild, uid)
            for uid in guild.members
            if (uid in wanted if wanted else self.world.user(uid).name.lower().startswith(query))
        ]
        limit = data.get("limit") or 0
        chunk: Payload = {
            "guild_id": str(guild.id),
            "members": members[:limit] if limit else members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in wanted - set(guild.members)],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await conn.send(DISPATCH, chunk, "GUILD_MEMBERS_CHUNK")

    async def _set_ready(self, conn: GatewayConnection, ready: bool) -> None:
        async with self._changed:
            if ready and conn not in self.ready:
                self.ready.append(conn)
            elif not ready and conn in self.ready:
                self.ready.remove(conn)
            self._changed.notify_all()

    async def wait_ready(self, count: int, timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.ready) >= count), timeout)

    async def dispatch(self, event: str, data: Payload, *, timeout: float = 5.0) -> int:
        """Send to every ready socket; waits for one to exist so a reconnect in flight isn't lost."""
        try:
            await self.wait_ready(1, timeout)
        except TimeoutError:
            raise RuntimeError(f"no bot socket became ready within {timeout}s to receive {event}") from None
        return await self.broadcast(event, data)

    async def broadcast(self, event: str, data: Payload) -> int:
        """Send to whichever sockets are ready now; used for side effects of REST calls."""
        results = await asyncio.gather(
            *(c.send(DISPATCH, data, event) for c in list(self.ready)), return_exceptions=True
        )
        return sum(1 for r in results if not isinstance(r, BaseException))

    async def close_ready(self, code: int) -> None:
        for conn in list(self.ready):
            await self._set_ready(conn, False)
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code)

    async def close_all(self, code: int) -> None:
        for conn in list(self._open):
            await self._set_ready(conn, False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=code), 2)


# --- INTERACTION_CREATE bodies ------------------------------------------------------------------
@dataclass(eq=False)
class InteractionHandle:
    """What the bot did with one emulated interaction: callback, follow-ups, edits, timing."""

    id: int
    token: str
    payload: Payload
    dispatched_at: float
    callback: Payload | None = None
    responded_after: float | None = None
    original: Payload | None = None
    followups: list[Payload] = field(default_factory=list)
    #: The messages the follow-ups created (their ids: a button on a follow-up is clicked by it).
    followup_messages: list[Payload] = field(default_factory=list)
    edits: list[Payload] = field(default_factory=list)
    _responded: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def user_id(self) -> int:
        user = self.payload["member"]["user"] if "member" in self.payload else self.payload["user"]
        return int(user["id"])

    def _record_callback(self, body: Payload, now: float) -> None:
        self.callback = body
        self.responded_after = now - self.dispatched_at
        self._responded.set()

    def _touch(self) -> None:
        self._changed.set()

    async def response(self, timeout: float = 5.0) -> Payload:
        """The JSON body the bot POSTed to the interaction callback (``type`` + ``data``)."""
        await asyncio.wait_for(self._responded.wait(), timeout)
        assert self.callback is not None
        return self.callback

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[Payload]:
        """Follow-ups are sent after the callback, so tests need to wait for them separately."""

        async def _wait() -> None:
            while len(self.followups) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.followups


_OPTION_TYPES = {bool: 5, int: 4, float: 10, str: 3}
_SNOWFLAKE_OPTIONS = (6, 7, 8, 9)


def command_data(world: World, name: str, type_: int, guild_id: int | None) -> Payload:
    """``id``/``guild_id`` of the synced command; a guild ``guild_id`` routes to guild commands."""
    command = world.find_command(name, type_, guild_id)
    data: Payload = {"id": command["id"] if command else str(world.new_id()), "name": name, "type": type_}
    if command and "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    return data


def slash_data(
    world: World,
    name: str,
    guild_id: int | None,
    options: Sequence[Payload] | Mapping[str, Any],
    subcommand: str | None,
) -> Payload:
    data = command_data(world, name, 1, guild_id)
    path = (subcommand or "").split()
    declared = (world.find_command(name, 1, guild_id) or {}).get("options", [])
    for part in path:
        declared = next((o.get("options", []) for o in declared if o["name"] == part), [])
    if isinstance(options, Mapping):
        opts = [_typed_option(k, v, declared) for k, v in options.items()]
    else:
        opts = list(options)
    resolved = resolve_options(world, opts, guild_id)
    for depth in reversed(range(len(path))):
        opts = [{"name": path[depth], "type": 1 if depth == len(path) - 1 else 2, "options": opts}]
    data["options"] = opts
    if resolved:
        data["resolved"] = resolved
    return data


def _typed_option(name: str, value: Any, declared: list[Payload]) -> Payload:
    kind = next((o["type"] for o in declared if o["name"] == name), _OPTION_TYPES.get(type(value), 3))
    return {"name": name, "type": kind, "value": str(value) if kind in _SNOWFLAKE_OPTIONS else value}


def resolve_users(world: World, user_ids: Iterable[int], guild_id: int | None) -> Payload:
    """USER options and user commands carry ``resolved.users`` plus ``members`` (sans ``user``)."""
    users, members = {}, {}
    guild = world.guilds.get(guild_id) if guild_id else None
    for uid in user_ids:
        users[str(uid)] = world.user_payload(uid)
        if guild is not None and uid in guild.members:
            members[str(uid)] = world.member_payload(guild, uid, with_user=False, with_permissions=True)
    return {"users": users, "members": members}


def resolve_options(world: World, options: list[Payload], guild_id: int | None) -> Payload:
    guild = world.guilds.get(guild_id) if guild_id else None
    roles, channels, user_ids = {}, {}, []
    for option in options:
        if option.get("type") not in _SNOWFLAKE_OPTIONS:
            continue
        value = int(option["value"])
        if guild is not None and option["type"] in (8, 9) and value in guild.roles:
            roles[str(value)] = guild.roles[value].payload()
        elif guild is not None and option["type"] == 7 and value in guild.channels:
            channels[str(value)] = {**world.channel_payload(guild.channels[value]), "permissions": "0"}
        elif option["type"] in (6, 9):
            user_ids.append(value)
    resolved = resolve_users(world, user_ids, guild_id) if user_ids else {}
    resolved.update({k: v for k, v in (("roles", roles), ("channels", channels)) if v})
    return resolved


def interaction_payload(
    world: World, kind: int, data: Payload, user_id: int, channel_id: int, guild_id: int | None, locale: str
) -> Payload:
    channel = world.channel(channel_id)
    if channel is None:
        raise KeyError(f"unknown channel {channel_id}; use add_channel() or dm_channel_id(user_id)")
    payload: Payload = {
        "id": str(world.new_id()),
        "application_id": str(world.application_id),
        "type": kind,
        "data": data,
        "channel_id": str(channel.id),
        "channel": world.channel_payload(channel),
        "token": "itok-" + secrets.token_urlsafe(24),
        "version": 1,
        "locale": locale,
        "entitlements": [],
        "attachment_size_limit": 26_214_400,
        "context": 0 if guild_id else 1,
        "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": str(user_id)},
    }
    if guild_id:
        guild = world.guilds[guild_id]
        payload.update(guild_id=str(guild_id), guild_locale="zh-TW", guild={"id": str(guild_id)})
        payload["member"] = world.member_payload(guild, user_id, with_permissions=True)
        payload["app_permissions"] = str(world.permissions(guild, world.bot.id))
    else:
        payload["user"] = world.user_payload(user_id)
    return payload
