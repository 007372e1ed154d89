"""HTTP primitives of the Discord emulator's REST side: recorded requests and Discord-shaped replies."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web


@dataclass
class RecordedRequest:
    """One REST call as the bot made it; ``path`` is relative to ``api_base``."""

    method: str
    path: str
    json: Any
    query: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


Handler = Callable[[RecordedRequest, re.Match[str]], Awaitable[web.Response]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """discord.py only decodes bodies whose content type is exactly ``application/json`` (no charset)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"message": message, "code": code}, status)


class ApiError(Exception):
    """Raised by lookups so handlers read straight-line; becomes a Discord-shaped error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.response = error(status, code, message)


def no_content() -> web.Response:
    return web.Response(status=204)


async def record_request(request: web.Request) -> RecordedRequest:
    path = "/" + request.match_info["tail"]
    body: Any = None
    files: list[str] = []
    if request.content_type == "application/json":
        body = await request.json()
    elif request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                body = json.loads(await part.text())
            else:
                files.append(getattr(part, "filename", None) or part.name or "")
                await part.read()
    return RecordedRequest(request.method, path, body, dict(request.query), files)
