"""Bad input to the LINE webhook: a 4xx with a one-line reason (or, for one bad event inside a good
signed body, a dead letter and a 200), never a 5xx, and nothing stored unless the answer is 200."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from crm.models import DeadLetter, Fan, Interaction
from tests.line_adapter.conftest import BOT_ID, T0, LineRig, event_id, ms, sign, text_event, user


async def raw_post(rig: LineRig, signature: bytes, body: bytes) -> tuple[int, bytes]:
    """POST with a signature header of arbitrary bytes (aiohttp's client only sends text)."""
    parts = urlsplit(rig.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (b"POST " + rig.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Line-Signature: " + signature + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n")
    writer.write(head + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


async def stored(rig: LineRig) -> tuple[int, int, int]:
    async with rig.sessions() as session:
        counts = [(await session.execute(select(func.count()).select_from(m))).scalar_one()
                  for m in (Interaction, Fan, DeadLetter)]
    return counts[0], counts[1], counts[2]


def wrap(*events: Any) -> bytes:
    # ASCII escapes: a lone surrogate (half an emoji) travels as LINE sends it, ``\\ud83d``.
    return json.dumps({"destination": BOT_ID, "events": list(events)}).encode()


async def test_a_signature_header_that_is_not_utf8_is_a_400(rig: LineRig) -> None:
    body = wrap(text_event(user(1), "hi").to_dict())
    status, answer = await raw_post(rig, b"\xff\xfe" + sign(body).encode()[2:], body)
    assert (status, json.loads(answer)["error"]) == (400, "X-Line-Signature is not base64")
    assert await stored(rig) == (0, 0, 0)


@pytest.mark.parametrize("depth", [1100, 100_000])
async def test_deeply_nested_json_is_a_400(rig: LineRig, depth: int) -> None:
    body = b'{"events": [' + b"[" * depth + b"]" * depth + b"]}"
    status, answer = await raw_post(rig, sign(body).encode(), body)
    assert status == 400 and json.loads(answer)["error"] in ("body nests too deeply", "body is not valid JSON")
    assert await stored(rig) == (0, 0, 0)


@pytest.mark.parametrize("timestamp", [99999999999999999, 10**400, -1, True, 1.5e12, "1700000000000"])
async def test_an_absurd_timestamp_in_a_good_body_is_a_dead_letter_beside_the_good_events(
        rig: LineRig, timestamp: Any) -> None:
    bad = text_event(user(2), "when?").to_dict() | {"timestamp": timestamp}
    body = wrap(text_event(user(1), "fine").to_dict(), bad)
    status, _ = await raw_post(rig, sign(body).encode(), body)
    assert status == 200
    assert await stored(rig) == (1, 1, 1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from([10**400, 99999999999999999, -1, 2**63, "\ud83d"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
FIELDS = ["type", "mode", "timestamp", "webhookEventId", "replyToken", "source", "deliveryContext", "message",
          "postback", "follow", "joined", "membership", "unsend"]
TYPES = ["message", "follow", "unfollow", "postback", "memberJoined", "membership", "unsend", "messageEdited",
         "beacon", "join", "leave", "somethingNew"]


def good_event(n: int, kind: str) -> dict[str, Any]:
    base = text_event(user(n % 5), f"msg {n}").to_dict()
    base["type"] = kind
    base.update({"postback": {"data": "x=1"}, "membership": {"type": "joined"}, "unsend": {"messageId": "1"},
                 "joined": {"members": [{"type": "user", "userId": user(n % 5)}]}, "timestamp": ms(T0) + n})
    base["webhookEventId"] = event_id()
    return base


events = st.builds(
    lambda n, kind, changes, drops: {k: v for k, v in {**good_event(n, kind), **changes}.items() if k not in drops},
    st.integers(0, 50), st.sampled_from(TYPES), st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=2),
    st.sets(st.sampled_from(FIELDS), max_size=2))
bodies = st.one_of(
    st.lists(events, max_size=4).map(lambda evs: wrap(*evs)),
    st.lists(st.one_of(events, json_values), max_size=3).map(lambda evs: json.dumps({"events": evs}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: b'{"events":[' + b"[" * n + b"]" * n + b"]}"),
    st.binary(max_size=60),
)
signatures = st.one_of(st.just("good"), st.just("good"), st.just("good"), st.none(), st.binary(max_size=60),
                       st.text(max_size=50).map(str.encode))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, signature=signatures)
async def test_fuzz_never_a_5xx_and_nothing_stored_unless_200(rig: LineRig, body: bytes,
                                                             signature: bytes | str | None) -> None:
    before = await stored(rig)
    if signature is None:
        status = await rig.post(body=body, signature=None)
    else:
        raw = sign(body).encode() if signature == "good" else signature
        assert isinstance(raw, bytes)
        status, _ = await raw_post(rig, raw.replace(b"\r", b"").replace(b"\n", b""), body)
        await rig.adapter.drain()
    event(f"HTTP {status}")
    assert status < 500
    if status != 200:
        assert await stored(rig) == before
