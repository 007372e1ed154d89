"""The LINE webhook's front door: signature, body and event parsing (no database, no network).

A request is refused with 400, before anything is stored, when it is not JSON (or nests too
deeply to read), is over the size limit, has no or a wrong ``X-Line-Signature`` (base64
HMAC-SHA256 of the raw body under the channel secret, compared in constant time by line-bot-sdk's
validator), or is not a JSON object with an ``events`` list.

Inside a good request each event is read from the fields superfan needs into a small named tuple
(:class:`TextIn` for the common text message, else :class:`LineEvent`), without the SDK's models:
they refuse real payloads that lack fields superfan never reads (``quoteToken``,
``follow.isUnblocked``, ``deliveryContext``), and the next schema change would do the same.
Missing optional fields take defaults (a missing ``webhookEventId`` is derived from the event:
:func:`derived_event_id`); a field superfan needs that is missing or of the wrong
type makes the event :class:`Unusable`, and it is kept as a dead letter. Event types superfan
deliberately does not use (beacons, account links, …) are logged at INFO and dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, NamedTuple, TypeGuard

import orjson
from linebot.v3.webhook import WebhookParser

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Line-Signature"
#: LINE timestamps are milliseconds since 1970; outside these years an event cannot be real
#: (and 10**400 or 99999999999999999 would overflow a datetime).
MIN_TIMESTAMP_MS = 1_293_840_000_000  # 2011-01-01, before LINE existed
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01
#: Event types superfan reads. Anything else with a type of its own is either deliberately
#: ignored (:data:`IGNORED`) or unknown (a dead letter, replayable once superfan knows it).
KNOWN = frozenset({"message", "messageEdited", "unsend", "follow", "unfollow", "join", "leave", "postback",
                   "memberJoined", "memberLeft", "membership"})
#: Why each deliberately ignored type is not recorded (the INFO line says it).
IGNORED = {
    "beacon": "a LINE Beacon, not something the fan did for the creator",
    "videoPlayComplete": "a video view is not counted",
    "accountLink": "superfan links accounts with its own codes",
    "activated": "the channel's own state",
    "deactivated": "the channel's own state",
    "botSuspended": "the channel's own state",
    "botResumed": "the channel's own state",
    "things": "LINE Things devices are not used",
    "module": "a module channel event",
    "pnpDeliveryCompletion": "LINE notification delivery report",
}
MEMBERSHIP_TYPES = frozenset({"joined", "left", "renewed"})


class BadWebhook(Exception):
    """The request as a whole is unusable; ``reason`` is safe to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextIn(NamedTuple):
    """A text message event, the one kind on the hot path (a named tuple: cheap to build)."""

    event_id: str
    timestamp: int
    redelivery: bool
    reply_token: str | None
    chat: str  # user | group | room
    user_id: str | None
    text: str
    standby: bool = False
    message_id: str | None = None


class MessageIn(NamedTuple):
    """The message of a ``message`` or ``messageEdited`` event."""

    type: str  # text, sticker, image, video, audio, file, location, or a type LINE adds later
    id: str
    text: str | None = None  # a text message's text; a sticker's own text
    keywords: tuple[str, ...] = ()  # a sticker's keywords


class LineEvent(NamedTuple):
    """Any other event superfan reads, from the fields it needs; the rest of the event is not kept."""

    type: str
    event_id: str
    timestamp: int  # milliseconds since 1970, the event's own time
    standby: bool
    redelivery: bool
    reply_token: str | None
    chat: str  # user | group | room | unknown
    user_id: str | None
    message: MessageIn | None = None
    postback: str | None = None  # postback data
    unblocked: bool = False  # a follow that lifts a block
    members: tuple[str, ...] = ()  # memberJoined / memberLeft user ids
    membership: str | None = None  # joined | left | renewed
    unsent_id: str | None = None  # the message an unsend takes back


class Unusable(NamedTuple):
    """An event that cannot be understood: kept whole as a dead letter with ``reason``."""

    raw: Any
    event_id: str | None
    type: str | None
    reason: str


Parsed = TextIn | LineEvent | Unusable


def verify_and_parse(parser: WebhookParser, body: bytes, signature: str | None) -> list[Parsed]:
    """The events of a signed webhook body; ignored types are left out (logged)."""
    if not signature:
        raise BadWebhook("missing X-Line-Signature")
    if not signature.isascii():  # aiohttp hands undecodable header bytes over as surrogates
        raise BadWebhook("X-Line-Signature is not base64")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWebhook("body is not UTF-8") from None
    if not parser.signature_validator.validate(text, signature):
        raise BadWebhook("bad signature")
    payload = _load(body, text)
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise BadWebhook("body has no events list")
    events = []
    for raw in payload["events"]:
        event = parse_event(raw)
        if event is not None:
            events.append(event)
    return events


def _load(body: bytes, text: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # The standard parser also takes what orjson refuses: a lone surrogate (half an emoji), an
    # integer past 64 bits. What both refuse, or what nests past the interpreter's stack, is a 400.
    try:
        return json.loads(text)
    except RecursionError:
        raise BadWebhook("body nests too deeply") from None
    except ValueError:
        raise BadWebhook("body is not valid JSON") from None


def parse_event(raw: Any) -> Parsed | None:
    """One event as superfan reads it, :class:`Unusable`, or None for a type it ignores (logged)."""
    if not isinstance(raw, dict):
        return Unusable(raw, None, None, "event is not an object")
    fast = text_message(raw)
    if fast is not None:
        return fast
    kind, event_id = raw.get("type"), raw.get("webhookEventId")
    event_id = event_id if _is_id(event_id) else None
    if not _is_id(kind, 32):
        return Unusable(raw, event_id, None, "event has no type")
    if kind in IGNORED:
        log.info("LINE webhook: ignored %s event %s (%s)", kind, event_id, IGNORED[kind])
        return None
    if event_id is None:
        event_id = derived_event_id(raw)
    if kind not in KNOWN:
        return Unusable(raw, event_id, kind, "event type unknown to this version")
    try:
        return line_event(raw, kind, event_id)
    except _Bad as exc:
        return Unusable(raw, event_id, kind, exc.reason)


def derived_event_id(raw: dict[str, Any]) -> str:
    """A stable id for an event sent without ``webhookEventId`` (older payloads; LINE's own SDK
    fixtures): a digest of the event without its ``deliveryContext``, which alone changes when LINE
    redelivers it, so a redelivery is still stored once."""
    identity = {key: value for key, value in raw.items() if key != "deliveryContext"}
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return "d:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def text_message(raw: dict[str, Any]) -> TextIn | None:
    """A text message event checked field by field on the hot path, or None to read it in full.

    Building any model per event costs as much as storing it; at thousands of events a second that
    decides whether the webhook keeps up. So the common shape is read directly here, and anything
    that does not fit exactly (other event types, a missing or odd field) goes through
    :func:`line_event`, which decides with defaults and reasons. Fields superfan never reads
    (emojis, mentions, quote tokens) are not looked at.
    """
    try:
        message, source, context = raw["message"], raw["source"], raw["deliveryContext"]
        if raw["type"] != "message" or message["type"] != "text":
            return None
        timestamp, event_id, token, mode = raw["timestamp"], raw["webhookEventId"], raw.get("replyToken"), raw["mode"]
        text, message_id = message["text"], message["id"]
        redelivery, chat, user_id = context["isRedelivery"], source["type"], source.get("userId")
    except (KeyError, TypeError, AttributeError):
        return None
    if not (type(timestamp) is int and MIN_TIMESTAMP_MS <= timestamp < MAX_TIMESTAMP_MS
            and type(redelivery) is bool and type(event_id) is str and 0 < len(event_id) <= 128
            and type(text) is str and type(message_id) is str and message_id and isinstance(mode, str)
            and (token is None or type(token) is str) and (user_id is None or type(user_id) is str)
            and event_id.isascii() and message_id.isascii() and (user_id is None or user_id.isascii())):
        return None
    if chat not in ("user", "group", "room"):
        return None
    return TextIn(event_id, timestamp, redelivery, token, chat, user_id, text, mode != "active", message_id)


def _is_id(value: Any, longest: int = 128) -> TypeGuard[str]:
    """LINE's ids and type names are short printable ASCII (ULIDs, ``U`` + hex); anything else is
    not one, and could not be stored as a key (a lone surrogate cannot even be encoded)."""
    return type(value) is str and 0 < len(value) <= longest and value.isascii() and value.isprintable()


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def line_event(raw: dict[str, Any], kind: str, event_id: str) -> LineEvent:
    """Read a known event type from the fields superfan needs; raises ``_Bad`` with a short reason.

    Defaults: no ``mode`` is active, no ``deliveryContext`` is a first delivery, no
    ``follow.isUnblocked`` is a first follow, no source is an unknown chat without a user.
    """
    timestamp = raw.get("timestamp")
    if type(timestamp) is not int or not MIN_TIMESTAMP_MS <= timestamp < MAX_TIMESTAMP_MS:
        raise _Bad("timestamp missing or out of range")
    mode = raw.get("mode", "active")
    context = _obj(raw, "deliveryContext", required=False)
    redelivery = context.get("isRedelivery", False)
    if not isinstance(mode, str) or type(redelivery) is not bool:
        raise _Bad("mode or deliveryContext of the wrong type")
    token = _opt_str(raw, "replyToken")
    chat, user_id = _source(raw)
    event = LineEvent(kind, event_id, timestamp, mode != "active", redelivery, token, chat, user_id)
    if kind in ("message", "messageEdited"):
        return event._replace(message=_message(raw))
    if kind == "postback":
        data = _obj(raw, "postback").get("data")
        if type(data) is not str:
            raise _Bad("postback without data")
        return event._replace(postback=data)
    if kind == "follow":
        unblocked = _obj(raw, "follow", required=False).get("isUnblocked", False)
        if type(unblocked) is not bool:
            raise _Bad("follow.isUnblocked is not a boolean")
        return event._replace(unblocked=unblocked)
    if kind in ("memberJoined", "memberLeft"):
        return event._replace(members=_members(_obj(raw, "joined" if kind == "memberJoined" else "left")))
    if kind == "membership":
        membership = _obj(raw, "membership").get("type")
        if membership not in MEMBERSHIP_TYPES:
            raise _Bad("membership type is not joined, left or renewed")
        return event._replace(membership=membership)
    if kind == "unsend":
        unsent = _obj(raw, "unsend").get("messageId")
        if not _is_id(unsent):
            raise _Bad("unsend without messageId")
        return event._replace(unsent_id=unsent)
    return event  # unfollow, join, leave: nothing more to read


def _obj(raw: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{key} is missing or not an object")
    return value


def _opt_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and type(value) is not str:
        raise _Bad(f"{key} is not a string")
    return value


def _source(raw: dict[str, Any]) -> tuple[str, str | None]:
    source = _obj(raw, "source", required=False)
    chat, user_id = source.get("type"), _opt_str(source, "userId")
    if user_id and not _is_id(user_id):
        raise _Bad("source.userId is not a LINE id")
    if chat in ("user", "group", "room"):
        return chat, user_id or None
    return "unknown", user_id or None


def _message(raw: dict[str, Any]) -> MessageIn:
    message = _obj(raw, "message")
    kind, message_id = message.get("type"), message.get("id")
    if not _is_id(kind, 32):
        raise _Bad("message without a type")
    if not _is_id(message_id):
        raise _Bad("message without an id")
    text = _opt_str(message, "text")
    if kind == "text" and text is None:
        raise _Bad("text message without text")
    keywords = message.get("keywords") or []
    if not isinstance(keywords, list) or not all(type(k) is str for k in keywords):
        raise _Bad("sticker keywords are not a list of strings")
    return MessageIn(kind, message_id, text, tuple(keywords))


def _members(group: dict[str, Any]) -> tuple[str, ...]:
    members = group.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise _Bad("members is not a list of objects")
    users = []
    for member in members:
        user_id = _opt_str(member, "userId")
        if user_id and not _is_id(user_id):
            raise _Bad("a member's userId is not a LINE id")
        if user_id:
            users.append(user_id)
    return tuple(users)


def raw_text(raw: Any) -> str:
    """An event as JSON text for its dead letter: whole, ASCII-escaped (a lone surrogate is kept as
    a ``\\ud83d``-style escape instead of failing to encode), or a marker when it cannot be written
    back at all."""
    try:
        return json.dumps(raw, ensure_ascii=True, separators=(",", ":"))
    except (RecursionError, ValueError, TypeError):
        return json.dumps({"unserialisable": type(raw).__name__})
