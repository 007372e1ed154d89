"""Another process holds the database's write lock (an import, a rescore): the webhook answers 503
for everything it could not store, says so on ``/healthz``, and stores LINE's redelivery once.

The busy timeout is cut to a fraction of a second so that "longer than two busy timeouts" is a
short test; the lock is held by a stdlib sqlite3 connection, as another superfan process would.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.sandbox.line_emulator import LineEmulator
from crm.db import make_engine, make_sessionmaker
from tests.line_adapter.conftest import LineRig, body_of, running_rig, sign, text_event, user

BUSY_TIMEOUT_S = 0.2


@pytest.fixture
def sqlite_path(db_url: str) -> str:
    if not db_url.startswith("sqlite"):
        pytest.skip("the write lock of another process is SQLite's")
    return db_url.split("///", 1)[1]


@pytest.fixture
async def busy_rig(sessions, sqlite_path: str, db_url: str, emu: LineEmulator) -> AsyncIterator[LineRig]:
    engine = make_engine(db_url, busy_timeout=BUSY_TIMEOUT_S)
    try:
        async with running_rig(engine, make_sessionmaker(engine), emu) as rig:
            yield rig
    finally:
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
