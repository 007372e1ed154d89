"""LINE webhook event → what superfan does with it (a :class:`Plan`): pure, no I/O.

| LINE event                              | superfan                                                   |
|-----------------------------------------|------------------------------------------------------------|
| 1:1 message (text, sticker, image, …)   | ``dm_in`` (the staff inbox), or a command if it is one      |
| group / room message                    | ``message`` (check-in keywords work there too)             |
| follow (``isUnblocked`` on a re-follow) | ``follow`` + a free welcome reply                          |
| unfollow                                | ``unfollow``                                               |
| postback                                | our buttons (check-in, confirmations), else ``postback``    |
| memberJoined / memberLeft               | ``member_joined`` / ``member_left`` per member             |
| membership joined / renewed / left      | ``membership`` (a commitment, weighted) / ``membership_left`` |
| unsend                                  | the stored text of that message is redacted (row, points stay) |
| messageEdited                           | the stored summary becomes the edited text                 |
| join / leave (the bot in a group)       | a greeting on join; nothing stored                         |
| beacon, videoPlayComplete, accountLink, | an INFO line naming what is ignored and why; nothing stored |
| activated, botSuspended, …              |                                                            |
| unknown type, or a needed field missing | a dead letter (``superfan dead-letters``), replayable      |

Every message interaction carries LINE's ``message.id`` as ``message_ref``, so that a later
unsend or edit finds it. ``occurred_at`` is the event's own timestamp, never the arrival time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from bot.line_adapter.commands import PLATFORM, Command, action_for, parse_postback, parse_text
from bot.line_adapter.webhook import LineEvent, MessageIn, Parsed, TextIn, Unusable, raw_text
from bot.writer import Action, Op
from crm.dead_letters import DeadLetterIn, keep
from crm.errors import BadInput
from crm.interaction import InteractionIn, validate
from crm.message_edits import edit_message, redact_message
from crm.settings import CrmSettings

log = logging.getLogger(__name__)

#: ``occurred_at`` of a dead letter's plan: an unusable event has no time superfan can trust.
NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class Inbound(NamedTuple):
    """The parts of a LINE event superfan needs after the commit (to answer, to look up a profile).

    A tuple, not a frozen dataclass: one is made per event on the webhook's hot path.
    """

    event_id: str
    type: str
    chat: str  # user | group | room | unknown
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


def occurred_at(timestamp_ms: int) -> datetime:
    """The event's own time (the webhook parser has checked that it is in range)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def _interaction(inbound: Inbound, kind: str, text: str | None = None, *, user_id: str | None = None,
                 event_id: str | None = None, message_ref: str | None = None) -> InteractionIn | None:
    """A validated interaction, or None (logged) when the event cannot make one."""
    try:
        return validate(InteractionIn(
            platform=PLATFORM, external_id=user_id or inbound.user_id or "", kind=kind,
            occurred_at=inbound.occurred_at, source_event_id=event_id or inbound.event_id, text=text,
            message_ref=message_ref,
        ))
    except BadInput as exc:
        log.warning("LINE %s event %s skipped: %s", inbound.type, inbound.event_id, exc.code)
        return None


def message_text(message: MessageIn) -> str:
    """What the summary keeps of a message: the text itself, or a ``[type]`` marker for media."""
    if message.type == "text" and message.text is not None:
        return message.text
    if message.type == "sticker" and message.text:
        return f"[sticker] {message.text}"
    return f"[{message.type}]"


def plan_event(event: Parsed, *, received_at: float, settings: CrmSettings,
               checkin_keywords: Sequence[str]) -> Plan | None:
    """The plan for one parsed event, or None for events superfan does not keep (logged).

    In standby mode another channel (a chat tool or module) is answering the fan, so the event
    is recorded but superfan stays silent.
    """
    if isinstance(event, Unusable):
        return dead_letter(event, received_at)
    plan = _plan(event, received_at, settings, checkin_keywords)
    if plan is not None and event.standby:
        plan.respond, plan.push_fallback, plan.keep_token = None, False, False
    return plan


def dead_letter(event: Unusable, received_at: float) -> Plan:
    """A plan that keeps an unusable event whole, committed with the request's other events."""
    log.warning("LINE webhook: kept %s event %s as a dead letter: %s", event.type, event.event_id, event.reason)
    letter = DeadLetterIn(PLATFORM, event.event_id, event.type, event.reason, raw_text(event.raw))

    async def run(session: AsyncSession, now: datetime) -> bool:
        return await keep(session, letter, now)

    inbound = Inbound(event.event_id or "", event.type or "", "unknown", None, NO_TIME, None, False, received_at)
    return Plan(inbound, ops=[Action("line dead letter", run)])


def _plan(event: TextIn | LineEvent, received_at: float, settings: CrmSettings,
          checkin_keywords: Sequence[str]) -> Plan | None:
    if isinstance(event, TextIn):
        inbound = Inbound(event.event_id, "message", event.chat, event.user_id, occurred_at(event.timestamp),
                          event.reply_token, event.redelivery, received_at)
        return _message(Plan(inbound), event.text, True, settings, checkin_keywords, event.message_id)
    inbound = Inbound(event.event_id, event.type, event.chat, event.user_id, occurred_at(event.timestamp),
                      event.reply_token, event.redelivery, received_at)
    plan = Plan(inbound)
    kind = event.type
    if kind == "join":
        plan.respond = "join"
        return plan
    if kind == "leave":
        log.info("LINE: the account was removed from a %s", event.chat)
        return None
    if kind in ("memberJoined", "memberLeft"):
        interaction = "member_joined" if kind == "memberJoined" else "member_left"
        for member in event.members:
            item = _interaction(inbound, interaction, user_id=member, event_id=f"{inbound.event_id}:{member}")
            if item:
                plan.ops.append(item)
        return plan if plan.ops else None
    if event.unsent_id is not None:  # an unsend names no one's points, only a message's text
        return _unsend(plan, event.unsent_id)
    if not event.user_id:
        log.info("LINE %s event %s has no user id; not recorded", kind, inbound.event_id)
        return None
    if kind == "message" and event.message is not None:
        message = event.message
        return _message(plan, message_text(message), message.type == "text", settings, checkin_keywords,
                        message.id)
    if kind == "messageEdited" and event.message is not None:
        return _edited(plan, event.message, settings)
    if kind == "postback" and event.postback is not None:
        command = parse_postback(event.postback)
        if command is None:
            return _store(plan, "postback", event.postback[:100])
        return _command(plan, command, settings)
    if kind == "follow":
        plan.respond = "welcome_back" if event.unblocked else "welcome"
        return _store(plan, "follow", "unblocked" if event.unblocked else None)
    if kind == "unfollow":
        return _store(plan, "unfollow")
    if kind == "membership" and event.membership is not None:
        left = event.membership == "left"
        return _store(plan, "membership_left" if left else "membership", event.membership)
    log.info("LINE %s event %s is not used by superfan; not recorded", kind, inbound.event_id)
    return None


def _message(plan: Plan, text: str, is_text: bool, settings: CrmSettings, checkin_keywords: Sequence[str],
             message_id: str | None) -> Plan | None:
    inbound = plan.inbound
    if not inbound.user_id:
        log.info("LINE message %s has no user id; not recorded", inbound.event_id)
        return None
    private = inbound.chat == "user"
    command = parse_text(text, checkin_keywords, private=private) if is_text else None
    if command is not None:
        return _command(plan, command, settings)
    plan.keep_token = private
    return _store(plan, "dm_in" if private else "message", text, message_ref=message_id)


def _unsend(plan: Plan, message_id: str) -> Plan:
    async def run(session: AsyncSession, now: datetime) -> int:
        return await redact_message(session, PLATFORM, [message_id])

    plan.ops = [Action("line unsend", run)]
    return plan


def _edited(plan: Plan, message: MessageIn, settings: CrmSettings) -> Plan | None:
    if message.type != "text" or message.text is None:
        log.info("LINE messageEdited %s edits a %s message; not recorded", plan.inbound.event_id, message.type)
        return None
    text = message.text

    async def run(session: AsyncSession, now: datetime) -> bool:
        return await edit_message(session, settings, PLATFORM, message.id, text, now)

    plan.ops = [Action("line message edited", run)]
    return plan


def _store(plan: Plan, kind: str, text: str | None = None, *, message_ref: str | None = None) -> Plan | None:
    item = _interaction(plan.inbound, kind, text, message_ref=message_ref)
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
