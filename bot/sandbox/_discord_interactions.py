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

    async def autocomplete(
        self,
        name: str,
        focused: str,
        typed: str,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None = None,
        options: Mapping[str, Any] | None = None,
        subcommand: str | None = None,
        locale: str = "zh-TW",
    ) -> InteractionHandle:
        """The user is typing ``typed`` into option ``focused`` (other options already filled in):
        the bot answers with choices (callback type 8, ``data.choices``)."""
        guild_id = guild_id or self._guild_of(channel_id)
        data = slash_data(self.world, name, guild_id, {**(options or {}), focused: typed}, subcommand)
        for option in _leaf_options(data):
            if option["name"] == focused:
                option["focused"] = True
        return await self._interact(4, data, user_id, channel_id, guild_id, locale)

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

    async def submit_modal(
        self, opened: InteractionHandle, values: Mapping[str, str | Sequence[str]], *, locale: str | None = None
    ) -> InteractionHandle:
        """The user fills in the modal the bot answered ``opened`` with (callback type 9) and submits it.

        ``values`` maps a text input's ``custom_id`` to what was typed (a select's to its chosen
        values). Like Discord's client, a required input left empty or text over an input's
        ``max_length`` cannot be submitted (``ValueError``).
        """
        callback = await opened.response()
        if callback.get("type") != 9:
            raise ValueError(f"the bot answered with callback type {callback.get('type')}, not a modal (9)")
        modal = callback["data"]
        data: Payload = {"custom_id": modal["custom_id"], "components": _submitted(modal["components"], values)}
        guild_id = opened.payload.get("guild_id")
        return await self._interact(5, data, opened.user_id, int(opened.payload["channel_id"]),
                                    int(guild_id) if guild_id else None, locale or opened.payload["locale"])

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


def _submitted(components: Sequence[Payload], values: Mapping[str, str | Sequence[str]]) -> list[Payload]:
    """A modal's components as Discord sends them back on submit (rows, labels, inputs with values)."""
    out: list[Payload] = []
    for component in components:
        kind = component.get("type")
        if kind == 1:
            out.append({"type": 1, "components": _submitted(component.get("components") or [], values)})
        elif kind == 18:
            (inner,) = _submitted([component["component"]], values)
            out.append({"type": 18, "component": inner})
        elif kind == 4:
            custom_id = component["custom_id"]
            text = str(values.get(custom_id, component.get("value") or ""))
            if component.get("required", True) and not text:
                raise ValueError(f"required input {custom_id!r} left empty")
            if component.get("max_length") is not None and len(text) > component["max_length"]:
                raise ValueError(f"input {custom_id!r} is longer than {component['max_length']}")
            out.append({"type": 4, "custom_id": custom_id, "value": text})
        elif kind == 3:
            chosen = values.get(component["custom_id"], [])
            out.append({"type": 3, "custom_id": component["custom_id"],
                        "values": [chosen] if isinstance(chosen, str) else list(chosen)})
    return out


def _leaf_options(data: Payload) -> list[Payload]:
    """The options a user fills in, under any subcommand (group) levels."""
    options: list[Payload] = data.get("options") or []
    while len(options) == 1 and options[0].get("type") in (1, 2):
        options = options[0].get("options") or []
    return options
