"""The hand-checked text-message path must agree with the SDK's models, and step aside for anything odd.

Anything odd goes to the full reader (``line_event``), which either understands it or keeps it as a
dead letter: it is never a silently dropped event.
"""

from __future__ import annotations

import copy

import pytest
from linebot.v3.webhooks import Event, MessageEvent, TextMessageContent

from bot.line_adapter.webhook import TextIn, Unusable, parse_event, text_message


def raw_text_event() -> dict:
    return {
        "type": "message", "mode": "active", "timestamp": 1692251666727, "webhookEventId": "01H810YECXQQZ37VAXPF6H9E6T",
        "deliveryContext": {"isRedelivery": False}, "replyToken": "38ef843bde154d9b91c21320ffd17a0f",
        "source": {"type": "user", "userId": "U4af4980629"},
        "message": {"type": "text", "id": "468789577898262530", "quoteToken": "q3Plxr4AgKd", "text": "打卡　ＡＢＣ 🎉"},
    }


def test_a_text_message_reads_as_the_sdk_reads_it():
    raw = raw_text_event()
    fast = text_message(raw)
    sdk = Event.from_dict(copy.deepcopy(raw))
    assert isinstance(fast, TextIn) and isinstance(sdk, MessageEvent) and isinstance(sdk.message, TextMessageContent)
    assert (fast.event_id, fast.timestamp, fast.redelivery, fast.reply_token, fast.user_id, fast.text) == (
        sdk.webhook_event_id, sdk.timestamp, sdk.delivery_context.is_redelivery, sdk.reply_token,
        sdk.source.user_id, sdk.message.text)


@pytest.mark.parametrize(("path", "value"), [
    (("timestamp",), "1692251666727"),
    (("webhookEventId",), 12),
    (("webhookEventId",), ""),
    (("replyToken",), 5),
    (("deliveryContext", "isRedelivery"), "false"),
    (("source", "userId"), ["U1"]),
    (("message", "id"), 468789577898262530),
    (("message", "text"), None),
    (("source", "type"), "bot"),
])
def test_an_odd_field_leaves_the_event_to_the_full_reader(path, value):
    raw = raw_text_event()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert text_message(raw) is None
    parsed = parse_event(raw)  # the full reader decides: an event, or a dead letter with a reason
    assert isinstance(parsed, Unusable) or not isinstance(parsed, TextIn)


@pytest.mark.parametrize("absent", ["quoteToken", "emojis"])
def test_fields_superfan_never_reads_may_be_absent(absent):
    """Real payloads (LINE's own SDK fixtures) come without ``quoteToken``; the SDK's model refuses them."""
    raw = raw_text_event()
    raw["message"].pop(absent, None)
    assert isinstance(text_message(raw), TextIn)


@pytest.mark.parametrize("timestamp", [99999999999999999, 10**400, -1, True, 0])
def test_a_timestamp_out_of_range_is_a_dead_letter_not_an_overflow(timestamp):
    raw = raw_text_event() | {"timestamp": timestamp}
    assert text_message(raw) is None
    parsed = parse_event(raw)
    assert isinstance(parsed, Unusable) and parsed.reason == "timestamp missing or out of range"
