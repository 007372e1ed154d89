"""LINE's own SDK test payloads (Python, Java, PHP), signed and posted to the real webhook.

They are what LINE documents and sends, and they lack fields the Python SDK's strict models
require (``quoteToken``, ``follow.isUnblocked``, ``deliveryContext``): before tolerant parsing the
webhook answered 200 and dropped them. Each event must now end up somewhere a creator can see:
recorded, deliberately ignored (an INFO line), or kept whole as a dead letter.
Each event is posted alone to a fresh database: the Python fixture reuses one webhookEventId.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crm.models import DeadLetter, Interaction
from tests.line_adapter.conftest import BOT_ID, LineRig, sign

FIXTURES = Path(__file__).parent / "fixtures"
BUY = "action=buyItem&itemId=123123&color=red"

PYTHON: list[Any] = [
    ("dm_in", "Hello, world"), "nothing",  # an image in a room without a user id: nobody to credit
    ("dm_in", "[video]"), ("dm_in", "[audio]"), ("dm_in", "[location]"), ("dm_in", "[sticker] Just sticker"),
    ("follow", "unblocked"), ("unfollow", None), "nothing", "nothing",  # join greets, leave is logged
    ("postback", BUY), "ignored", "ignored", "ignored",  # two beacons, an account link
    ("message", "Hello, world"), ("message", "Hello, world"), ("postback", BUY), ("postback", BUY),
    ("postback", BUY), ("member_joined", None), ("member_left", None), ("dm_in", "[file]"),
    "nothing",  # unsend: redacts a stored message, stores nothing new
    "ignored", ("dm_in", "[image]"), ("dm_in", "Hello, world"),
    ("dead", "event type unknown to this version"),
]
# Older payloads without webhookEventId are recorded under an id derived from the event itself.
JAVA = {
    "text-user.json": ("dm_in", "Hello, world"), "sticker.json": ("dm_in", "[sticker]"),
    "sticker-with-text.json": ("dm_in", "[sticker] userEnteredText"), "follow.json": ("follow", None),
    "account_link.json": "ignored", "member_joined.json": ("member_joined", None),
    "webhook-redelivery.json": ("dm_in", "Hello, world"), "message-edited.json": "nothing",
}
# PHP's parser test uses placeholder times in the year 2361: kept whole as dead letters, with the reason.
PHP = [("dead", "timestamp missing or out of range")] * 11 + ["ignored"]


def _cases() -> list[Any]:
    python = json.loads((FIXTURES / "python_sdk_webhook.json").read_text(encoding="utf-8"))["events"]
    java = json.loads((FIXTURES / "java_sdk_callbacks.json").read_text(encoding="utf-8"))["files"]
    php = json.loads((FIXTURES / "php_sdk_parser.json").read_text(encoding="utf-8"))["events"]
    assert len(python) == len(PYTHON) and set(java) == set(JAVA) and len(php) == len(PHP)
    cases: list[Any] = [pytest.param(e, x, id=f"python-{n}-{e['type']}") for n, (e, x) in enumerate(zip(python, PYTHON, strict=True))]
    cases += [pytest.param(event, JAVA[name], id=f"java-{name}") for name, events in java.items() for event in events]
    cases += [pytest.param(e, x, id=f"php-{n}-{e['type']}") for n, (e, x) in enumerate(zip(php, PHP, strict=True))]
    return cases


@pytest.mark.parametrize(("event", "expected"), _cases())
async def test_every_sdk_fixture_event_is_recorded_ignored_or_kept(rig: LineRig, event: dict[str, Any], expected: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps({"destination": BOT_ID, "events": [event]}, ensure_ascii=False).encode()
    with caplog.at_level(logging.INFO):
        assert await rig.post(body=body, signature=sign(body)) == 200
    async with rig.sessions() as session:
        stored = (await session.execute(select(Interaction).order_by(Interaction.id))).scalars().all()
        letters = (await session.execute(select(DeadLetter))).scalars().all()
    if expected in ("ignored", "nothing"):
        assert (stored, letters) == ([], [])
        if expected == "ignored":
            lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
            assert any(f"ignored {event['type']} event" in line for line in lines), lines
    elif expected[0] == "dead":
        assert stored == []
        assert [(d.event_type, d.reason) for d in letters] == [(event["type"], expected[1])]
        assert json.loads(letters[0].raw) == event  # kept whole, to replay after an upgrade
    else:
        kind, summary = expected
        assert letters == []
        assert stored and {(s.kind, s.summary) for s in stored} == {(kind, summary)}
        at = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
        assert all(s.occurred_at == at for s in stored)  # the event's own time, not arrival


async def test_an_event_without_webhook_event_id_is_stored_once_across_redeliveries(rig: LineRig) -> None:
    java = json.loads((FIXTURES / "java_sdk_callbacks.json").read_text(encoding="utf-8"))["files"]
    (event,) = java["text-user.json"]
    again = {**event, "deliveryContext": {"isRedelivery": True}}
    for each in (event, again, event):
        body = json.dumps({"destination": BOT_ID, "events": [each]}, ensure_ascii=False).encode()
        assert await rig.post(body=body, signature=sign(body)) == 200
    assert await rig.count() == 1
    other = {**event, "message": {**event["message"], "id": "325708-2"}}  # another message, same second
    body = json.dumps({"destination": BOT_ID, "events": [other]}, ensure_ascii=False).encode()
    assert await rig.post(body=body, signature=sign(body)) == 200
    assert await rig.count() == 2
