"""Records and request rules for the LINE Messaging API emulator.

Kept apart from the HTTP layer so what LINE rejects, and what it counts, reads in one place.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_MESSAGES = 5
MAX_MULTICAST = 500
MAX_TEXT_LENGTH = 5000
AGGREGATION_UNIT = re.compile(r"[A-Za-z0-9_]{1,30}")
QUOTABLE_TYPES = frozenset({"text", "sticker", "image", "video"})

Via = Literal["reply", "push", "multicast"]


@dataclass
class RecordedCall:
    """One HTTP request as the emulator saw it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int
    at: float


@dataclass
class Delivered:
    """One recipient getting one request's messages, so duplicates per fan are countable."""

    via: Via
    to: str
    messages: list[dict[str, Any]]
    retry_key: str | None
    request_id: str


@dataclass
class Fault:
    """A scripted failure answered instead of the real result."""

    status: int
    times: int
    path_contains: str = ""
    retry_after: int | None = None


@dataclass
class RandomFault:
    """A failure answered to a share of matching requests, drawn from a seeded generator.

    ``after_accept``: the request is carried out first and the error answered after, as when LINE
    took a send but the answer was lost (a 5xx from a proxy): only the retry key saves a double.
    """

    status: int
    share: float
    rng: random.Random
    path_contains: str = ""
    retry_after: int | None = None
    after_accept: bool = False


@dataclass
class Accepted:
    """What a retry key already achieved, replayed in the 409 LINE answers on reuse."""

    request_id: str
    sent_messages: list[dict[str, str]] = field(default_factory=list)


class ApiError(Exception):
    """An error answer; raised wherever a rule fails and rendered once by the server."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if details:
            self.body["details"] = details
        if extra:
            self.body.update(extra)
        self.headers = headers or {}


def _detail(prop: str, message: str) -> dict[str, str]:
    return {"message": message, "property": prop}


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        return [_detail("messages", "must be specified")]
    if not 1 <= len(messages) <= MAX_MESSAGES:
        return [_detail("messages", f"Size must be between 1 and {MAX_MESSAGES}")]
    details: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            details.append(_detail(f"messages[{i}].type", "must be specified"))
        elif msg["type"] == "text":
            text = msg.get("text")
            if not isinstance(text, str) or not text:
                details.append(_detail(f"messages[{i}].text", "may not be empty"))
            elif len(text) > MAX_TEXT_LENGTH:
                details.append(
                    _detail(f"messages[{i}].text", f"Length must be between 0 and {MAX_TEXT_LENGTH}")
                )
    return details


def check_send(via: Via, body: Any) -> list[dict[str, Any]]:
    """Validate a reply/push/multicast body the way LINE does and return its messages."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body could not be parsed as JSON")
    details: list[dict[str, str]] = []
    if via == "reply":
        if not isinstance(body.get("replyToken"), str) or not body["replyToken"]:
            details.append(_detail("replyToken", "must be specified"))
    elif via == "push":
        if not isinstance(body.get("to"), str) or not body["to"]:
            details.append(_detail("to", "must be specified"))
    else:
        to = body.get("to")
        if not isinstance(to, list) or not all(isinstance(u, str) and u for u in to):
            details.append(_detail("to", "must be specified"))
        elif not 1 <= len(to) <= MAX_MULTICAST:
            details.append(_detail("to", f"Size must be between 1 and {MAX_MULTICAST}"))
    details += _check_messages(body.get("messages"))
    if details:
        raise ApiError(400, f"The request body has {len(details)} error(s)", details=details)
    return body["messages"]


def check_aggregation_units(body: dict[str, Any]) -> str | None:
    """LINE takes one unit name per request: 1-30 half-width letters, digits or underscores."""
    units = body.get("customAggregationUnits")
    if units is None:
        return None
    if (not isinstance(units, list) or len(units) != 1 or not isinstance(units[0], str)
            or not AGGREGATION_UNIT.fullmatch(units[0])):
        raise ApiError(400, "The request body has 1 error(s)", details=[_detail(
            "customAggregationUnits", "one unit name of 1-30 characters [a-zA-Z0-9_]")])
    return units[0]


def check_retry_key(key: str | None) -> str | None:
    """LINE only accepts UUID retry keys; anything else is a 400, not a silent pass."""
    if key is None:
        return None
    try:
        uuid.UUID(key)
    except ValueError:
        raise ApiError(400, "The value for the 'X-Line-Retry-Key' header is invalid") from None
    return key


def fault_body(status: int) -> dict[str, str]:
    """Bodies shaped like LINE's own for the statuses tests usually inject."""
    messages = {
        429: "The API rate limit has been exceeded. Try again later.",
        500: "Internal server error",
        503: "Service unavailable",
    }
    return {"message": messages.get(status, f"Injected error {status}")}


@dataclass
class RichMenu:
    body: dict[str, Any]
    image: bytes | None = None
    content_type: str | None = None


def rich_menu_problems(body: Any) -> list[str]:
    """What LINE would refuse in a rich menu object (the limits its documentation gives)."""
    if not isinstance(body, dict):
        return ["the body is not a rich menu object"]
    problems = []
    size = body.get("size") or {}
    width, height = size.get("width"), size.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and 800 <= width <= 2500 and height >= 250
            and width / height >= 1.45):
        problems.append("size: width 800-2500, height >= 250, width/height >= 1.45")
    if not isinstance(body.get("selected"), bool):
        problems.append("selected: must be a boolean")
    if not isinstance(body.get("name"), str) or not 0 < len(body["name"]) <= 300:
        problems.append("name: 1-300 characters")
    if not isinstance(body.get("chatBarText"), str) or not 0 < len(body["chatBarText"]) <= 14:
        problems.append("chatBarText: 1-14 characters")
    areas = body.get("areas")
    if not isinstance(areas, list) or not 0 < len(areas) <= 20:
        return [*problems, "areas: 1-20 areas"]
    for n, area in enumerate(areas):
        bounds, action = area.get("bounds") or {}, area.get("action") or {}
        x, y, w, h = (bounds.get(k) for k in ("x", "y", "width", "height"))
        if not (isinstance(x, int) and isinstance(y, int) and isinstance(w, int) and isinstance(h, int)
                and isinstance(width, int) and isinstance(height, int)
                and x >= 0 and y >= 0 and x + w <= width and y + h <= height):
            problems.append(f"areas[{n}].bounds: outside the image")
        if action.get("type") != "postback" or not 0 < len(action.get("data") or "") <= 300:
            problems.append(f"areas[{n}].action: a postback with 1-300 characters of data")
        elif len(action.get("label") or "") > 20 or len(action.get("displayText") or "") > 300:
            problems.append(f"areas[{n}].action: label up to 20, displayText up to 300 characters")
    return problems
