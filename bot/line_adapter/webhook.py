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
from typing import Any

from linebot.v3.webhook import WebhookParser
from linebot.v3.webhooks import Event

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Line-Signature"


class BadWebhook(Exception):
    """The request as a whole is unusable; ``reason`` is safe to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_and_parse(parser: WebhookParser, body: bytes, signature: str | None) -> list[Event]:
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


def parse_event(raw: Any) -> Event | None:
    """One event as the SDK's model, or None (logged) if it is of an unknown type or malformed."""
    if not isinstance(raw, dict):
        log.warning("LINE webhook: skipped an event that is not an object")
        return None
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
