"""Interaction dispatch of :class:`~bot.sandbox.discord_emulator.DiscordEmulator` (slash, context, components)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.sandbox._discord_gateway import (
    InteractionHandle,
    command_data,
    interaction_payload,
    resolve_users,
    slash_data,
)
from bot.sandbox._discord_objects import Payload, World


class InteractionDispatch:
    """Mixin of ``DiscordEmulator``: play user interactions into the gateway and hand back handles."""

    world: World

    if TYPE_CHECKING:

        @property
        def bot_user_id(self) -> int: ...

        async def dispatch(self, event: str, data: Payload) -> Payload: ...

    # --- interactions ------------------------------------------------------------------------
    async def invoke_slash(
        self,
        name: str,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None = None,
        options: Sequence[Payload] | Mapping[str, Any] = (),
        subcommand: str | None = None,
        locale: str = "zh-TW",
    ) -> InteractionHandle:
        """``options``: raw option dicts, or ``{name: value}`` typed from the synced command.

        ``subcommand`` may be ``"sub"`` or ``"group sub"``. ``data.id``/``data.guild_id`` come
        from the commands the bot synced, which is what discord.py's CommandTree routes on.
        """
        guild_id = guild_id or self._guild_of(channel_id)
        data = slash_data(self.world, name, guild_id, options, subcommand)
        return await self._interact(2, data, user_id, channel_id, guild_id, locale)

    async def invoke_user_context(
        self,
        name: str,
        target_user_id: int,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None = None,
        locale: str = "zh-TW",
    ) -> InteractionHandle:
        guild_id = guild_id or self._guild_of(channel_id)
        data = command_data(self.world, name, 2, guild_id)
        data["target_id"] = str(target_user_id)
        data["resolved"] = resolve_users(self.world, [target_user_id], guild_id)
        return await self._interact(2, data, user_id, channel_id, guild_id, locale)

    async def click_button(
        self,
        custom_id: str,
        message_id: int,
        user_id: int,
        *,
        channel_id: int | None = None,
        values: Sequence[str] | None = None,
        locale: str = "zh-TW",
    ) -> InteractionHandle:
        """Component interaction on a message the bot sent; ``values`` makes it a string select."""
        message = self.world.messages.get(message_id)
        if message is None:
            if channel_id is None:
                raise KeyError(f"message {message_id} unknown; pass channel_id")
            message = self.world.message_payload(channel_id, self.bot_user_id, "", message_id=message_id)
        channel_id = int(message["channel_id"])
        data: Payload = {"custom_id": custom_id, "component_type": 2 if values is None else 3}
        if values is not None:
            data["values"] = list(values)
        guild_id = self._guild_of(channel_id)
        return await self._interact(3, data, user_id, channel_id, guild_id, locale, message=message)

    async def _interact(
        self,
        kind: int,
        data: Payload,
        user_id: int,
        channel_id: int,
        guild_id: int | None,
        locale: str,
        *,
        message: Payload | None = None,
    ) -> InteractionHandle:
        payload = interaction_payload(self.world, kind, data, user_id, channel_id, guild_id, locale)
        if message is not None:
            payload["message"] = message
        loop_time = asyncio.get_running_loop().time()
        handle = InteractionHandle(int(payload["id"]), payload["token"], payload, loop_time)
        self.world.interactions[handle.id] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _guild_of(self, channel_id: int) -> int | None:
        channel = self.world.channel(channel_id)
        return channel.guild_id if channel else None
