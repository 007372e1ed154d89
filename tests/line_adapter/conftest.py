"""A real LINE adapter on 127.0.0.1, the LINE emulator behind it, and webhook builders.

Webhook bodies are built from line-bot-sdk's own webhook models and signed like LINE signs them,
so what the tests post is what LINE posts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from linebot.v3.webhooks import (
    CallbackRequest,
    DeliveryContext,
    Event,
    EventMode,
    GroupSource,
    MessageEvent,
    PostbackContent,
    PostbackEvent,
    TextMessageContent,
    UserSource,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.config import CheckinConfig, Config, CreatorConfig, LineConfig
from bot.line_adapter import LineAdapter
from bot.line_adapter.sender import LineSender
from bot.sandbox.line_emulator import LineEmulator
from bot.web import WebServer, make_web_app
from bot.writer import GroupWriter
from crm.models import Interaction

SECRET = "test-channel-secret"
BOT_ID = "U" + "0" * 32
T0 = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)  # 12:00 in Taipei
_ids = itertools.count(1)
_ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def user(n: int) -> str:
    return f"U{n:032x}"


def event_id() -> str:
    """A fresh ULID-shaped webhookEventId."""
    return "01" + "".join(secrets.choice(_ULID) for _ in range(24))


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def base(*, at: datetime = T0, eid: str | None = None, redelivery: bool = False) -> dict[str, Any]:
    return {"timestamp": ms(at), "mode": EventMode.ACTIVE, "webhook_event_id": eid or event_id(),
            "delivery_context": DeliveryContext(is_redelivery=redelivery)}


def text_event(uid: str, text: str, *, reply_token: str | None = None, group: str | None = None,
               **kw: Any) -> MessageEvent:
    source = GroupSource(group_id=group, user_id=uid) if group else UserSource(user_id=uid)
    return MessageEvent(source=source, reply_token=reply_token or f"rt-{next(_ids)}",
                        message=TextMessageContent(id=str(next(_ids)), text=text, quote_token="q"), **base(**kw))


def postback_event(uid: str, data: str, *, reply_token: str | None = None, **kw: Any) -> PostbackEvent:
    return PostbackEvent(source=UserSource(user_id=uid), reply_token=reply_token or f"rt-{next(_ids)}",
                         postback=PostbackContent(data=data), **base(**kw))


def body_of(*events: Event | Any) -> bytes:
    """A webhook body as LINE sends it: compact UTF-8 JSON (CJK and emoji not escaped)."""
    items = [e.to_dict() if isinstance(e, Event) else e for e in events]
    request = CallbackRequest(destination=BOT_ID, events=[])
    return json.dumps({**request.to_dict(), "events": items}, ensure_ascii=False).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class FakeMonotonic:
    """The adapter's reply-token clock, moved by hand instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class LineRig:
    """Everything a test drives: post webhooks, then look at the database and the emulator."""

    url: str
    adapter: LineAdapter
    writer: GroupWriter
    emu: LineEmulator
    crm: Crm
    http: aiohttp.ClientSession
    monotonic: FakeMonotonic
    clock: list[datetime] = field(default_factory=lambda: [T0 + timedelta(seconds=1)])
    path: str = "/line/webhook"

    async def post(self, *events: Event | dict[str, Any], body: bytes | None = None,
                   signature: str | None = "sign", content_type: str = "application/json; charset=utf-8",
                   settle: bool = True) -> int:
        """Post a webhook and return the status; ``settle`` waits for background answers too."""
        data = body if body is not None else body_of(*events)
        headers = {"Content-Type": content_type}
        if signature == "sign":
            headers["X-Line-Signature"] = sign(data)
        elif signature is not None:
            headers["X-Line-Signature"] = signature
        async with self.http.post(self.url + self.path, data=data, headers=headers) as resp:
            await resp.read()
            status = resp.status
        if settle:
            await self.adapter.drain()
        return status

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.crm.sessions

    async def count(self, **where: Any) -> int:
        async with self.sessions() as session:
            stmt = select(func.count()).select_from(Interaction)
            for key, value in where.items():
                stmt = stmt.where(getattr(Interaction, key) == value)
            return int((await session.execute(stmt)).scalar_one())

    def replies_to(self, uid: str) -> list[str]:
        """Texts the fan received (reply or push), in order."""
        return [m.get("text") or m.get("altText", "") for d in self.emu.delivered_to(uid) for m in d.messages]


def make_config(**line: Any) -> Config:
    return Config(creator=CreatorConfig(locale="zh-TW"), line=LineConfig(enabled=True, **line),
                  checkin=CheckinConfig())


@pytest.fixture
async def emu() -> AsyncIterator[LineEmulator]:
    async with LineEmulator() as emulator:
        yield emulator


@asynccontextmanager
async def running_rig(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
                      emu: LineEmulator) -> AsyncIterator[LineRig]:
    """The real LINE adapter, its writer and web app on 127.0.0.1, over ``engine``."""
    config = make_config(api_base=emu.base_url, monthly_quota=50)
    crm = Crm(config, engine, sessions, config.crm_settings())
    monotonic = FakeMonotonic()
    clock = [T0 + timedelta(seconds=1)]
    writer = GroupWriter(sessions, crm.settings, clock=lambda: clock[0])
    await writer.start()

    async def no_sleep(_: float) -> None:
        return None

    sender = LineSender(emu.base_url, emu.access_token, monthly_quota=50, timezone="Asia/Taipei",
                        monotonic=monotonic, clock=lambda: clock[0], sleep=no_sleep)
    adapter = LineAdapter(crm, writer, sender, SECRET, monotonic=monotonic, clock=lambda: clock[0])
    await adapter.start()
    app = make_web_app(config.web)
    adapter.mount(app)
    server = WebServer(app, "127.0.0.1", 0, shutdown_timeout=2.0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield LineRig(server.url, adapter, writer, emu, crm, http, monotonic, clock)
    finally:
        await server.stop()
        await adapter.close()
        await writer.close()


@pytest.fixture
async def rig(sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine,
              emu: LineEmulator) -> AsyncIterator[LineRig]:
    async with running_rig(engine, sessions, emu) as line_rig:
        yield line_rig
