"""LINE webhook event → what superfan does with it (a :class:`Plan`): pure, no I/O.

| LINE event                              | superfan                                               |
|-----------------------------------------|--------------------------------------------------------|
| 1:1 message (text, sticker, image, …)   | ``dm_in`` (the staff inbox), or a command if it is one  |
| group / room message                    | ``message`` (check-in keywords work there too)         |
| follow (``isUnblocked`` on a re-follow) | ``follow`` + a free welcome reply                      |
| unfollow                                | ``unfollow``                                           |
| postback                                | our buttons (check-in, confirmations), else ``postback``|
| memberJoined / memberLeft               | ``member_joined`` / ``member_left`` per member         |
| join / leave (the bot in a group)       | a greeting on join; nothing stored                     |

``occurred_at`` is the event's own timestamp, never the arrival time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from linebot.v3.webhooks import (
    Event,
    EventMode,
    FollowEvent,
    GroupSource,
    JoinEvent,
    LeaveEvent,
    MemberJoinedEvent,
    MemberLeftEvent,
    MessageEvent,
    PostbackEvent,
    RoomSource,
    StickerMessageContent,
    TextMessageContent,
    UnfollowEvent,
    UserSource,
)

from bot.line_adapter.commands import PLATFORM, Command, action_for, parse_postback, parse_text
from bot.line_adapter.webhook import TextIn
from bot.writer import Op
from crm.errors import BadInput
from crm.interaction import InteractionIn, validate
from crm.settings import CrmSettings

log = logging.getLogger(__name__)


class Inbound(NamedTuple):
    """The parts of a LINE event superfan needs after the commit (to answer, to look up a profile).

    A tuple, not a frozen dataclass: one is made per event on the webhook's hot path.
    """

    event_id: str
    type: str
    chat: str  # user | group | room
    user_id: str | None
    occurred_at: datetime
    reply_token: str | None
    redelivery: bool
    received_at: float


@dataclass
class Plan:
    """The ops to commit for one event and how to answer once they are committed.

    ``respond``: ``command`` (render the action's outcome), ``welcome``/``welcome_back`` (after a
    stored follow), ``join`` (greet a group), or None. Answers to commands may fall back to a push
    when the reply token went stale; greetings never spend quota. ``keep_token`` leaves a DM's
    reply token for a staff answer.
    """

    inbound: Inbound
    ops: list[Op] = field(default_factory=list)
    respond: str | None = None
    push_fallback: bool = False
    keep_token: bool = False


def occurred_at(event: Event) -> datetime:
    return datetime.fromtimestamp(event.timestamp / 1000, UTC)


def _chat(event: Event) -> tuple[str, str | None]:
    source = event.source
    if isinstance(source, UserSource):
        return "user", source.user_id
    if isinstance(source, GroupSource | RoomSource):
        return ("group" if isinstance(source, GroupSource) else "room"), source.user_id
    return "unknown", None


def _interaction(inbound: Inbound, kind: str, text: str | None = None, *, user_id: str | None = None,
                 event_id: str | None = None) -> InteractionIn | None:
    """A validated interaction, or None (logged) when the event cannot make one."""
    try:
        return validate(InteractionIn(
            platform=PLATFORM, external_id=user_id or inbound.user_id or "", kind=kind,
            occurred_at=inbound.occurred_at, source_event_id=event_id or inbound.event_id, text=text,
        ))
    except BadInput as exc:
        log.warning("LINE %s event %s skipped: %s", inbound.type, inbound.event_id, exc)
        return None


def message_text(event: MessageEvent) -> str:
    """What the summary keeps of a message: the text itself, or a ``[type]`` marker for media."""
    message = event.message
    if isinstance(message, TextMessageContent):
        return message.text
    if isinstance(message, StickerMessageContent) and message.text:
        return f"[sticker] {message.text}"
    return f"[{message.type}]"


def plan_event(event: Event | TextIn, *, received_at: float, settings: CrmSettings,
               checkin_keywords: Sequence[str]) -> Plan | None:
    """The plan for one parsed event, or None for events superfan does not keep (logged).

    In standby mode another channel (a chat tool or module) is answering the fan, so the event
    is recorded but superfan stays silent.
    """
    plan = _plan(event, received_at, settings, checkin_keywords)
    standby = event.standby if isinstance(event, TextIn) else event.mode == EventMode.STANDBY
    if plan is not None and standby:
        plan.respond, plan.push_fallback, plan.keep_token = None, False, False
    return plan


def _plan(event: Event | TextIn, received_at: float, settings: CrmSettings,
          checkin_keywords: Sequence[str]) -> Plan | None:
    if isinstance(event, TextIn):
        inbound = Inbound(event.event_id, "message", event.chat, event.user_id,
                          datetime.fromtimestamp(event.timestamp / 1000, UTC), event.reply_token,
                          event.redelivery, received_at)
        return _message(Plan(inbound), event.text, True, settings, checkin_keywords)
    chat, user_id = _chat(event)
    inbound = Inbound(
        event_id=event.webhook_event_id, type=event.type, chat=chat, user_id=user_id,
        occurred_at=occurred_at(event), reply_token=getattr(event, "reply_token", None),
        redelivery=bool(event.delivery_context and event.delivery_context.is_redelivery),
        received_at=received_at,
    )
    plan = Plan(inbound)
    if isinstance(event, JoinEvent):
        plan.respond = "join"
        return plan
    if isinstance(event, LeaveEvent):
        log.info("LINE: the account was removed from a %s", chat)
        return None
    if isinstance(event, MemberJoinedEvent | MemberLeftEvent):
        joined = isinstance(event, MemberJoinedEvent)
        members = event.joined.members if isinstance(event, MemberJoinedEvent) else event.left.members
        kind = "member_joined" if joined else "member_left"
        for member in members:
            if member.user_id:
                item = _interaction(inbound, kind, user_id=member.user_id,
                                    event_id=f"{inbound.event_id}:{member.user_id}")
                if item:
                    plan.ops.append(item)
        return plan if plan.ops else None
    if not user_id:
        log.debug("LINE %s event %s has no user id; skipped", event.type, inbound.event_id)
        return None
    if isinstance(event, MessageEvent):
        is_text = isinstance(event.message, TextMessageContent)
        return _message(plan, message_text(event), is_text, settings, checkin_keywords)
    if isinstance(event, PostbackEvent):
        command = parse_postback(event.postback.data)
        if command is None:
            return _store(plan, "postback", event.postback.data[:100])
        return _command(plan, command, settings)
    if isinstance(event, FollowEvent):
        unblocked = event.follow.is_unblocked
        plan.respond = "welcome_back" if unblocked else "welcome"
        return _store(plan, "follow", "unblocked" if unblocked else None)
    if isinstance(event, UnfollowEvent):
        return _store(plan, "unfollow")
    log.debug("LINE %s event %s is not used by superfan; skipped", event.type, inbound.event_id)
    return None


def _message(plan: Plan, text: str, is_text: bool, settings: CrmSettings,
             checkin_keywords: Sequence[str]) -> Plan | None:
    inbound = plan.inbound
    if not inbound.user_id:
        log.debug("LINE message %s has no user id; skipped", inbound.event_id)
        return None
    private = inbound.chat == "user"
    command = parse_text(text, checkin_keywords, private=private) if is_text else None
    if command is not None:
        return _command(plan, command, settings)
    plan.keep_token = private
    return _store(plan, "dm_in" if private else "message", text)


def _store(plan: Plan, kind: str, text: str | None = None) -> Plan | None:
    item = _interaction(plan.inbound, kind, text)
    plan.ops = [item] if item else []
    return plan if plan.ops else None


def _command(plan: Plan, command: Command, settings: CrmSettings) -> Plan:
    inbound = plan.inbound
    assert inbound.user_id
    plan.ops = [action_for(command, user_id=inbound.user_id, event_id=inbound.event_id,
                           occurred_at=inbound.occurred_at, settings=settings)]
    plan.respond = "command"
    plan.push_fallback = True
    return plan
