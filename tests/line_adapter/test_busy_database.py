"""Another process holds the database's write lock (an import, a rescore): the webhook answers 503
for everything it could not store, says so on ``/healthz``, and stores LINE's redelivery once.

The busy timeout is cut to a fraction of a second so that "longer than two busy timeouts" is a
short test; the lock is held by a stdlib sqlite3 connection, as another superfan process would.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import aiohttp
import pytest

from bot.app import Crm
from bot.line_adapter import LineAdapter
from bot.line_adapter.sender import LineSender
from bot.sandbox.line_emulator import LineEmulator
from bot.web import WebServer, make_web_app
from bot.writer import GroupWriter
from crm.db import make_engine, make_sessionmaker
from tests.line_adapter.conftest import (
    SECRET,
    T0,
    FakeMonotonic,
    LineRig,
    body_of,
    make_config,
    text_event,
    user,
)

BUSY_TIMEOUT_S = 0.2


@pytest.fixture
def sqlite_path(db_url: str) -> str:
    if not db_url.startswith("sqlite"):
        pytest.skip("the write lock of another process is SQLite's")
    return db_url.split("///", 1)[1]


@pytest.fixture
async def busy_rig(sessions, sqlite_path: str, db_url: str, emu: LineEmulator) -> AsyncIterator[LineRig]:
    engine = make_engine(db_url, busy_timeout=BUSY_TIMEOUT_S)
    makers = make_sessionmaker(engine)
    config = make_config(api_base=emu.base_url)
    crm = Crm(config, engine, makers, config.crm_settings())
    clock = [T0 + timedelta(seconds=1)]
    monotonic = FakeMonotonic()
    writer = GroupWriter(makers, crm.settings, clock=lambda: clock[0])
    await writer.start()
    sender = LineSender(emu.base_url, emu.access_token, monthly_quota=50, timezone="Asia/Taipei",
                        monotonic=monotonic, clock=lambda: clock[0])
    adapter = LineAdapter(crm, writer, sender, SECRET, monotonic=monotonic, clock=lambda: clock[0])
    await adapter.start()
    app = make_web_app(config.web)
    adapter.mount(app)
    server = WebServer(app, "127.0.0.1", 0, shutdown_timeout=2.0)
    await server.start()
    async with aiohttp.ClientSession() as http:
        yield LineRig(server.url, adapter, writer, emu, crm, http, monotonic, clock)
    await server.stop()
    await adapter.close()
    await writer.close()
    await engine.dispose()


@pytest.fixture
def lock(sqlite_path: str) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction, held until the test commits it."""
    other = sqlite3.connect(sqlite_path, isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


async def post(rig: LineRig, body: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    from tests.line_adapter.conftest import sign

    headers = {"Content-Type": "application/json", "X-Line-Signature": sign(body)}
    async with rig.http.post(rig.url + rig.path, data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def health(rig: LineRig) -> tuple[int, dict[str, object]]:
    async with rig.http.get(rig.url + "/healthz") as resp:
        return resp.status, await resp.json()


async def test_nothing_is_acknowledged_while_another_process_holds_the_database(busy_rig, lock):
    bodies = [body_of(text_event(user(n), f"第 {n} 則"), text_event(user(n + 100), "嗨")) for n in range(6)]

    # Longer than two busy timeouts: every request is answered, none with a 200.
    answers = await asyncio.gather(*(post(busy_rig, b) for b in bodies))
    assert [status for status, _, _ in answers] == [503] * 6
    assert all(headers.get("Retry-After") for _, headers, _ in answers)
    assert all(body["code"] == "storage.unavailable" for _, _, body in answers)
    status, report = await health(busy_rig)
    assert status == 503 and "storage blocked" in str(report["problems"])

    lock.execute("COMMIT")  # the import finished
    # LINE redelivers every request it did not get a 200 for; each event is stored once.
    assert [s for s, _, _ in await asyncio.gather(*(post(busy_rig, b) for b in bodies))] == [200] * 6
    assert [s for s, _, _ in await asyncio.gather(*(post(busy_rig, b) for b in bodies))] == [200] * 6
    assert await busy_rig.count() == 12
    assert (await health(busy_rig))[0] == 200


async def test_a_busy_database_fails_the_whole_group_at_once_not_op_by_op(busy_rig, lock):
    writer = busy_rig.writer
    before = writer.groups
    bodies = [body_of(*(text_event(user(n * 10 + k), "嗨") for k in range(5))) for n in range(4)]
    statuses = [s for s, _, _ in await asyncio.gather(*(post(busy_rig, b) for b in bodies))]
    assert statuses == [503] * 4
    # Each failed group cost one attempt, not one busy timeout per event (20 events, 4 requests).
    assert writer.groups - before <= len(bodies)
    lock.execute("ROLLBACK")
    assert await busy_rig.count() == 0
