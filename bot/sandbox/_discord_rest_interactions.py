"""REST routes for interactions: the callback and the interaction webhook (follow-ups, @original)."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from bot.sandbox._discord_gateway import InteractionHandle
from bot.sandbox._discord_http import ApiError, RecordedRequest, json_response, no_content
from bot.sandbox._discord_objects import Payload, World, apply_edit

_RESPONSE_FLAGS = 64 | 4096 | 32768  # EPHEMERAL | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
_TRUE = ("1", "true", "True")


class InteractionRoutes:
    """Mixin of :class:`RestApi` holding the interaction handlers it routes to."""

    world: World
    interaction_deadline: float | None

    # --- interactions and their webhooks ------------------------------------------------------
    def _hook(self, m: re.Match[str]) -> InteractionHandle:
        found = None
        if int(m["app"]) == self.world.application_id:
            found = next((h for h in self.world.interactions.values() if h.token == m["token"]), None)
        if found is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        return found

    async def _callback(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        handle = self.world.interactions.get(int(m["iid"]))
        now = asyncio.get_running_loop().time()
        deadline = self.interaction_deadline
        late = handle is not None and deadline is not None and now - handle.dispatched_at > deadline
        if handle is None or handle.token != m["token"] or late:
            raise ApiError(404, 10062, "Unknown interaction")
        if handle.callback is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        message: Payload | None = None
        if kind in (4, 5):
            flags = (data.get("flags") or 0) & _RESPONSE_FLAGS | (128 if kind == 5 else 0)
            handle.original = message = self._interaction_message(handle, {**data, "flags": flags})
        elif kind == 7 and "message" in handle.payload:
            known = self.world.messages.get(int(handle.payload["message"]["id"]))
            edited: Payload = known if known is not None else handle.payload["message"]
            apply_edit(edited, data or {})
            message = edited
        handle._record_callback(body, now)
        if rec.query.get("with_response") not in _TRUE:
            return no_content()
        interaction: Payload = {"id": str(handle.id), "type": handle.payload["type"]}
        resource: Payload = {"type": kind}
        if message is not None:
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(message["flags"] & 64),
            )
            resource["message"] = message
        return json_response({"interaction": interaction, "resource": resource})

    def _interaction_message(self, handle: InteractionHandle, body: Payload) -> Payload:
        app_id = str(self.world.application_id)
        metadata = {
            "id": str(handle.id),
            "type": handle.payload["type"],
            "user": self.world.user_payload(handle.user_id),
            "authorizing_integration_owners": {},
        }
        channel_id = int(handle.payload["channel_id"])
        return self.world.bot_message(
            channel_id, body, webhook_id=app_id, application_id=app_id, interaction_metadata=metadata
        )

    async def _followup(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        handle = self._hook(m)
        body = rec.json or {}
        handle.followups.append(body)
        message = self._interaction_message(handle, body)
        handle.followup_messages.append(message)
        handle._touch()
        return json_response(message) if rec.query.get("wait") in _TRUE else no_content()

    async def _webhook(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        handle = self._hook(m)
        if rec.method == "DELETE":
            return no_content()
        app_id = str(self.world.application_id)
        return json_response(
            {
                "id": app_id,
                "type": 3,
                "name": self.world.bot.name,
                "avatar": None,
                "token": handle.token,
                "application_id": app_id,
                "channel_id": handle.payload["channel_id"],
                "guild_id": handle.payload.get("guild_id"),
            }
        )

    async def _webhook_message(self, rec: RecordedRequest, m: re.Match[str]) -> web.Response:
        handle = self._hook(m)
        if m["m"] == "@original":
            message = handle.original or handle.payload.get("message")
        else:
            message = self.world.messages.get(int(m["m"]))
        if message is None:
            raise ApiError(404, 10008, "Unknown Message")
        if rec.method == "DELETE":
            self.world.messages.pop(int(message["id"]), None)
            return no_content()
        if rec.method == "PATCH":
            handle.edits.append(rec.json or {})
            apply_edit(message, rec.json or {})
            handle._touch()
        return json_response(message)
