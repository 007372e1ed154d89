"""Loopback emulator of the Discord gateway and REST API for end-to-end tests of the bot.

The unmodified discord.py client is pointed at it with
``bot.discord_adapter.endpoints.configure_endpoints(emu.api_base, emu.gateway_url)``, so the
real library code (gateway state machine, caching, app-command routing, HTTP error handling)
runs without network access. Builders shape the world before the bot connects; dispatch
helpers then play user activity into the gateway and REST calls are recorded for assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

from bot.sandbox._discord_builders import WorldBuilders
from bot.sandbox._discord_gateway import RESUMABLE_CLOSE_CODE, Gateway, InteractionHandle
from bot.sandbox._discord_interactions import InteractionDispatch
from bot.sandbox._discord_objects import Payload, World, emoji_payload, iso_now
from bot.sandbox._discord_ratelimits import RateLimits
from bot.sandbox._discord_rest import RecordedRequest, RestApi

__all__ = ["DiscordEmulator", "InteractionHandle", "RecordedRequest"]


class DiscordEmulator(WorldBuilders, InteractionDispatch):
    """An aiohttp server on 127.0.0.1 speaking enough Discord for discord.py to run against it."""

    def __init__(
        self,
        *,
        bot_user_id: int = 900_000_000_000_000_001,
        bot_name: str = "superfan-bot",
        application_id: int | None = None,
        heartbeat_interval_ms: int = 41_250,
        echo_bot_messages: bool = True,
        interaction_deadline: float | None = None,
        app_owner_id: int = 1,
    ) -> None:
        """``interaction_deadline``: seconds after which callbacks get 404/10062 like Discord's 3 s.

        ``echo_bot_messages`` sends the bot's own channel messages back as MESSAGE_CREATE, as
        Discord does; ``app_owner_id`` is the application owner that ``Bot.is_owner`` sees.
        """
        self.world = World(bot_user_id, bot_name, application_id or bot_user_id)
        self.world.app_owner_id = app_owner_id
        self.gateway = Gateway(
            self.world, heartbeat_interval_ms=heartbeat_interval_ms, gateway_url=self._gw_url
        )
        self.rest = RestApi(
            self.world,
            self.gateway,
            gateway_url=self._gw_url,
            echo_bot_messages=echo_bot_messages,
            interaction_deadline=interaction_deadline,
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, port: int = 0) -> None:
        """Bind a loopback port (a free one by default); ``api_base``/``gateway_url`` are valid afterwards.

        Stopping and starting again on the same ``port`` plays a Discord outage.
        """
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close bot sockets (1001) and the server; close the discord.py client first."""
        if self._runner is None:
            return
        self.rest.release()
        await self.gateway.close_all(1001)
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DiscordEmulator.start() has not been awaited")
        return self._port

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def _gw_url(self) -> str:
        return self.gateway_url

    @property
    def bot_user_id(self) -> int:
        return self.world.bot.id

    @property
    def application_id(self) -> int:
        return self.world.application_id

    # --- gateway control ---------------------------------------------------------------------
    @property
    def identify_payloads(self) -> list[Payload]:
        """IDENTIFY ``d`` bodies, e.g. to assert the intents the bot asked for."""
        return self.gateway.identify_payloads

    @property
    def connect_queries(self) -> list[dict[str, str]]:
        """Query of each gateway connect (``v``, ``encoding``, ``compress``)."""
        return self.gateway.connect_queries

    @property
    def resume_payloads(self) -> list[Payload]:
        """RESUME ``d`` bodies; one per successful ``force_reconnect`` round trip."""
        return self.gateway.resume_payloads

    @property
    def fail_identify_with(self) -> int | None:
        """Close code (e.g. 4014 disallowed intents) answered to IDENTIFY instead of READY."""
        return self.gateway.fail_identify_with

    @fail_identify_with.setter
    def fail_identify_with(self, code: int | None) -> None:
        self.gateway.fail_identify_with = code

    async def wait_until_ready_sockets(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``n`` sockets got READY/RESUMED (and their GUILD_CREATEs)."""
        await self.gateway.wait_ready(n, timeout)

    async def force_reconnect(self, code: int = RESUMABLE_CLOSE_CODE) -> None:
        """Close ready sockets with a resumable code; discord.py reconnects and RESUMEs."""
        await self.gateway.close_ready(code)

    async def dispatch(self, event: str, data: Payload) -> Payload:
        """Send any gateway event as-is to every connected bot socket."""
        await self.gateway.dispatch(event, data)
        return data

    # --- user activity -----------------------------------------------------------------------
    async def message_create(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        message_id: int | None = None,
        guild_id: int | None = None,
        bot_author: bool = False,
        **extra: Any,
    ) -> Payload:
        """A user posts in a channel; ``extra`` merges raw message fields (mentions, attachments...)."""
        author = self.world.user(author_id, bot=bot_author)
        author.bot = author.bot or bot_author
        data = self.world.message_payload(
            channel_id, author_id, content, message_id=message_id, for_gateway=True, extra=extra
        )
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return await self.dispatch("MESSAGE_CREATE", data)

    async def dm_message(self, user_id: int, content: str, *, message_id: int | None = None) -> Payload:
        """A DM from ``user_id`` to the bot; the DM channel is created on first use."""
        channel = self.world.dm_channel_for(user_id)
        return await self.message_create(channel.id, user_id, content, message_id=message_id)

    async def message_update(self, channel_id: int, message_id: int, content: str) -> Payload:
        """Edit a message the emulator knows (user-sent or bot-sent) and dispatch MESSAGE_UPDATE."""
        stored = self.world.messages.get(message_id)
        if stored is None:
            raise KeyError(f"message {message_id} was never created in the emulator")
        stored.update(content=content, edited_timestamp=iso_now())
        return await self.dispatch("MESSAGE_UPDATE", self.world.gateway_message(stored))

    async def message_delete(self, channel_id: int, message_id: int) -> Payload:
        self.world.messages.pop(message_id, None)
        data: Payload = {"id": str(message_id), "channel_id": str(channel_id)}
        return await self.dispatch("MESSAGE_DELETE", self._with_guild(channel_id, data))

    async def reaction_add(
        self, channel_id: int, message_id: int, user_id: int, emoji: str = "👍"
    ) -> Payload:
        data = self._reaction(channel_id, message_id, user_id, emoji)
        channel = self.world.channel(channel_id)
        if channel and channel.guild_id and user_id in self.world.guilds[channel.guild_id].members:
            data["member"] = self.world.member_payload(self.world.guilds[channel.guild_id], user_id)
        message = self.world.messages.get(message_id)
        if message is not None:
            data["message_author_id"] = message["author"]["id"]
        return await self.dispatch("MESSAGE_REACTION_ADD", data)

    async def reaction_remove(
        self, channel_id: int, message_id: int, user_id: int, emoji: str = "👍"
    ) -> Payload:
        return await self.dispatch(
            "MESSAGE_REACTION_REMOVE", self._reaction(channel_id, message_id, user_id, emoji)
        )

    def _reaction(self, channel_id: int, message_id: int, user_id: int, emoji: str) -> Payload:
        data: Payload = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": emoji_payload(emoji),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        return self._with_guild(channel_id, data)

    def _with_guild(self, channel_id: int, data: Payload) -> Payload:
        channel = self.world.channel(channel_id)
        if channel is not None and channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        return data

    async def member_add(
        self,
        guild_id: int,
        user_id: int,
        name: str | None = None,
        *,
        roles: Iterable[int] = (),
        bot: bool = False,
        via_invite: str | None = None,
    ) -> Payload:
        """A user joins; ``via_invite`` bumps that invite's ``uses`` like Discord does."""
        self.add_member(guild_id, user_id, name, roles, bot)
        guild = self.world.guilds[guild_id]
        if via_invite is not None:
            guild.invites[via_invite].uses += 1
        data = {**self.world.member_payload(guild, user_id), "guild_id": str(guild_id)}
        return await self.dispatch("GUILD_MEMBER_ADD", data)

    async def member_remove(self, guild_id: int, user_id: int) -> Payload:
        self.world.guilds[guild_id].members.pop(user_id, None)
        data = {"guild_id": str(guild_id), "user": self.world.user_payload(user_id)}
        return await self.dispatch("GUILD_MEMBER_REMOVE", data)

    # --- REST inspection ---------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        return self.rest.requests

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Routes the emulator doesn't know; a non-empty list means a test exercised a gap."""
        return self.rest.unknown_requests

    def fail_next(
        self, method: str, path_contains: str, status: int, times: int = 1, json: Payload | None = None
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead of routing them.

        ``path_contains`` matches the path after ``api_base`` (e.g. ``"/channels/1/messages"``),
        ``method`` may be ``"*"``; 429s get the ``Via`` header discord.py needs to retry them.
        """
        self.rest.fail_next(method, path_contains, status, times, json)

    def hold_after_accept(self, path_contains: str) -> None:
        """Create the next message whose path contains ``path_contains``, then hold the answer back
        until :meth:`release` (or ``stop``): the bot never hears Discord took it, as when its
        process dies right then. :attr:`holding` is set once a hold has caught a message."""
        self.rest.hold_after_accept(path_contains)

    def release(self) -> None:
        """Let held answers go (and stop holding)."""
        self.rest.release()

    @property
    def holding(self) -> asyncio.Event:
        return self.rest.holding

    @property
    def rate_limits(self) -> RateLimits:
        """Discord's rate limits, off by default: ``rate_limits.use_discords()`` turns on the global
        limit and 5 messages per 5 s per channel, with their headers; ``rate_limits.counts`` says
        how many requests were answered 429."""
        return self.rest.rate_limits

    def sent_messages(self, channel_id: int | None = None) -> list[Payload]:
        """Messages the bot created via POST /channels/{id}/messages (not interaction replies)."""
        return [m for m in self.world.sent if channel_id is None or int(m["channel_id"]) == channel_id]

    async def wait_for_messages(
        self, channel_id: int | None = None, count: int = 1, timeout: float = 5.0
    ) -> list[Payload]:
        await self.rest.wait_for(lambda: len(self.sent_messages(channel_id)) >= count, timeout)
        return self.sent_messages(channel_id)

    async def wait_for_request(
        self, method: str, path_contains: str, timeout: float = 5.0
    ) -> RecordedRequest:
        def find() -> RecordedRequest | None:
            return next((r for r in self.requests if r.method == method and path_contains in r.path), None)

        return await self.rest.wait_for(find, timeout)

    def member_roles(self, guild_id: int, user_id: int) -> list[int]:
        return list(self.world.guilds[guild_id].members[user_id].roles)

    def dm_channel_id(self, user_id: int) -> int:
        return self.world.dm_channel_for(user_id).id

    def registered_commands(self, guild_id: int | None = None) -> list[Payload]:
        return list(self.world.commands.get(guild_id, []))
