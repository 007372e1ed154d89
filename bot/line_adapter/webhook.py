"""The LINE webhook's front door: signature, body and event parsing (no database, no network).

A request is refused with 400, before anything is stored, when it is not JSON, is over the size
limit, has no or a wrong ``X-Line-Signature`` (base64 HMAC-SHA256 of the raw body under the
channel secret, compared in constant time by line-bot-sdk's ``WebhookParser`` validator), or is
not a JSON object with an ``events`` list. Inside a good request, an event that is malformed or
of a type the SDK does not know is logged and skipped; the others go on.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

import orjson
from linebot.v3.webhook import WebhookParser
from linebot.v3.webhooks import Event, EventMode

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Line-Signature"
_MODES = frozenset(m.value for m in EventMode)


class BadWebhook(Exception):
    """The request as a whole is unusable; ``reason`` is safe to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_and_parse(parser: WebhookParser, body: bytes, signature: str | None) -> list[Event | TextIn]:
    """The events of a signed webhook body, skipping ones that cannot be parsed.

    The SDK's own ``parse`` would give up on the whole body for one malformed event (and would
    not catch pydantic errors), so the signature check is the SDK's and the events are parsed
    one by one.
    """
    if not signature:
        raise BadWebhook("missing X-Line-Signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWebhook("body is not UTF-8") from None
    if not parser.signature_validator.validate(text, signature):
        raise BadWebhook("bad signature")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # the standard parser also takes what orjson refuses: a lone surrogate (half an emoji)
            payload = json.loads(text)
        except ValueError:
            raise BadWebhook("body is not valid JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise BadWebhook("body has no events list")
    events = []
    for raw in payload["events"]:
        event = parse_event(raw)
        if event is not None:
            events.append(event)
    return events


def parse_event(raw: Any) -> Event | TextIn | None:
    """One event as the SDK's model, or None (logged) if it is of an unknown type or malformed."""
    if not isinstance(raw, dict):
        log.warning("LINE webhook: skipped an event that is not an object")
        return None
    fast = text_message(raw)
    if fast is not None:
        return fast
    kind = raw.get("type")
    event_id = raw.get("webhookEventId")
    try:
        known = isinstance(kind, str) and Event.get_discriminator_value(raw) is not None
    except (KeyError, TypeError):
        known = False
    if not known:
        log.info("LINE webhook: skipped event %s of unknown type %r", event_id, kind)
        return None
    try:
        event = Event.from_dict(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("LINE webhook: skipped malformed %s event %s (%s)", kind, event_id, type(exc).__name__)
        return None
    if event is None or not isinstance(event.webhook_event_id, str) or not event.webhook_event_id:
        log.warning("LINE webhook: skipped %s event without webhookEventId", kind)
        return None
    return event


class TextIn(NamedTuple):
    """A text message event, the one kind on the hot path, without the SDK model around it
    (a named tuple: cheaper to build than a frozen dataclass)."""

    event_id: str
    timestamp: int
    redelivery: bool
    reply_token: str | None
    chat: str  # user | group | room
    user_id: str | None
    text: str
    standby: bool = False


def text_message(raw: dict[str, Any]) -> TextIn | None:
    """A text message event, checked field by field, or None to let the SDK parse it in full.

    The SDK's pydantic models cost about 0.1 ms per event to validate (0.03 ms even unvalidated),
    as much as storing the event; at thousands of events a second that decides whether the
    webhook keeps up. So the fields superfan reads from a text message are type-checked here as
    strictly as the SDK checks them, and anything that does not fit exactly (other event types,
    a missing or mistyped field) takes the SDK's ``Event.from_dict`` path. Fields superfan never
    reads (emojis, mentions, quoted message ids) are not looked at.
    """
    try:
        message, source, context = raw["message"], raw["source"], raw["deliveryContext"]
        if raw["type"] != "message" or message["type"] != "text" or raw["mode"] not in _MODES:
            return None
        timestamp, event_id, token = raw["timestamp"], raw["webhookEventId"], raw.get("replyToken")
        text, message_id, quote = message["text"], message["id"], message["quoteToken"]
        redelivery, chat, user_id = context["isRedelivery"], source["type"], source.get("userId")
    except (KeyError, TypeError, AttributeError):
        return None
    if not (type(timestamp) is int and type(redelivery) is bool and type(event_id) is str and event_id
            and type(text) is str and type(message_id) is str and type(quote) is str
            and (token is None or type(token) is str) and (user_id is None or type(user_id) is str)):
        return None
    if chat != "user" and type(source.get("groupId" if chat == "group" else "roomId")) is not str:
        return None
    if chat not in ("user", "group", "room"):
        return None
    return TextIn(event_id, timestamp, redelivery, token, chat, user_id, text, raw["mode"] == "standby")

