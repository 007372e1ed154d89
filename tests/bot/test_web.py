"""The web app (``/healthz``, the purchase webhook), the group-commit writer and ``run``'s lifecycle."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import writer as writer_module
from bot.app import Crm, run
from bot.config import Config, ConfigError, DatabaseConfig, LineConfig, WebConfig
from bot.purchase_hook import PurchaseHook, sign
from bot.web import WebServer, make_web_app
from bot.write_failures import WriterClosed
from bot.writer import Action, GroupWriter, Rejected
from crm.errors import BadInput
from crm.fan_actions import ensure_fan, referral_code
from crm.identity import fan_by_identity
from crm.interaction import InteractionIn
from crm.models import Interaction

SECRET = "shop-secret"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LINE_FAN = "U" + "ab" * 16


def item(n: int, *, external_id: str = "u1", kind: str = "message") -> InteractionIn:
    return InteractionIn("line", external_id, kind, NOW - timedelta(minutes=n), f"ev-{n}")


async def count(sessions: async_sessionmaker[AsyncSession], **where: Any) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(Interaction)
        for key, value in where.items():
            stmt = stmt.where(getattr(Interaction, key) == value)
        return int((await session.execute(stmt)).scalar_one())


@pytest.fixture
async def writer(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[GroupWriter]:
    w = GroupWriter(sessions, Config().crm_settings(), clock=lambda: NOW)
    await w.start()
    yield w
    await w.close()


# the writer

async def test_concurrent_submissions_share_transactions_and_all_commit(
        writer: GroupWriter, sessions: async_sessionmaker[AsyncSession]) -> None:
    results = await asyncio.gather(*(writer.submit([item(n, external_id=f"u{n % 5}")]) for n in range(200)))
    assert all(r[0].status == "stored" for r in results)
    assert await count(sessions) == 200
    assert writer.groups < 20


async def test_one_bad_op_cannot_sink_the_others(writer: GroupWriter,
                                                 sessions: async_sessionmaker[AsyncSession]) -> None:
    async def broken(session: AsyncSession, now: datetime) -> None:
        raise RuntimeError("a bug in one command")

    async def refused(session: AsyncSession, now: datetime) -> None:
        raise BadInput("unknown code", code="link.unknown")

    async def conflicting(session: AsyncSession, now: datetime) -> None:
        raise IntegrityError("INSERT …", {}, Exception("UNIQUE constraint failed"))

    good, bad, crm_no, unstorable = await asyncio.gather(
        writer.submit([item(1), item(2)]), writer.submit([item(3), Action("broken", broken)]),
        writer.submit([Action("refused", refused), item(4)]),
        writer.submit([item(5), Action("conflicting", conflicting)]), return_exceptions=True)
    assert [r.status for r in good] == ["stored", "stored"]
    # A bug is not the sender's fault: the request fails (5xx, redelivered), never a silent 200.
    assert isinstance(bad, RuntimeError)
    assert isinstance(crm_no[0], BadInput) and crm_no[1].status == "stored"
    # Data that can never be stored is rejected alone; the rest of its request is stored.
    assert unstorable[0].status == "stored" and isinstance(unstorable[1], Rejected)
    assert await count(sessions) == 5  # item 3 too: its redelivery will be a duplicate


async def test_an_invalid_interaction_is_rejected_alone(writer: GroupWriter,
                                                       sessions: async_sessionmaker[AsyncSession]) -> None:
    bad = InteractionIn("line", "u1", "Not A Kind!", NOW, "ev-bad")
    outcomes = await writer.submit([item(1), bad, item(2)])
    assert isinstance(outcomes[1], Rejected)
    assert await count(sessions) == 2


async def test_a_connection_lost_under_the_writer_is_replaced(writer: GroupWriter,
                                                               sessions: async_sessionmaker[AsyncSession]) -> None:
    assert (await writer.submit([item(1)]))[0].status == "stored"
    held = writer._conn
    assert held is not None
    await held.invalidate()  # as when the database connection dies between groups
    outcomes = await writer.submit([item(2), item(3)])
    assert [o.status for o in outcomes] == ["stored", "stored"]
    assert writer._conn is not held and await count(sessions) == 3


async def test_close_commits_everything_queued_then_refuses_new_work(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    w = GroupWriter(sessions, Config().crm_settings(), clock=lambda: NOW)
    await w.start()
    pending = [asyncio.ensure_future(w.submit([item(n)])) for n in range(50)]
    await asyncio.sleep(0)
    await w.close()
    assert [(await p)[0].status for p in pending] == ["stored"] * 50
    with pytest.raises(WriterClosed):
        await w.submit([item(99)])
    assert await count(sessions) == 50


async def test_wal_checkpoints_run_beside_the_writer_and_the_connection_goes_back_as_it_came(
        db_url: str, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook's commit never waits for SQLite copying the WAL back (and fsyncing): the writer's
    connection leaves that to a checkpoint run beside it, and nothing of that leaks to the pool."""
    if not db_url.startswith("sqlite"):
        pytest.skip("WAL checkpoints are SQLite's")
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY_S", 0.0)
    engine = sessions.kw["bind"]
    w = GroupWriter(sessions, Config().crm_settings(), clock=lambda: NOW)
    await w.start()
    try:
        await w.submit([item(0)])
        writer_conn = w._conn
        assert writer_conn is not None
        assert await _pragma(writer_conn, "wal_autocheckpoint") == 0
        for n in range(1, 30):
            await w.submit([item(n, external_id=f"u{n % 3}")])
        for _ in range(100):  # the last checkpoint runs in the background
            if w._checkpointing is not None and w._checkpointing.done():
                break
            await asyncio.sleep(0.01)
        path = db_url.split("///", 1)[1]
        with closing(sqlite3.connect(path)) as raw:
            busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied  # everything committed is in the database file
    finally:
        await w.close()
    async with engine.connect() as conn:  # the pool's connections checkpoint by themselves again
        assert await _pragma(conn, "wal_autocheckpoint") == 1000
    assert await count(sessions) == 30


async def _pragma(conn: Any, name: str) -> int:
    raw = await conn.get_raw_connection()
    rows = await raw.driver_connection.execute_fetchall(f"PRAGMA {name}")
    return int(rows[0][0])


async def test_naive_mode_commits_every_op_on_its_own(sessions: async_sessionmaker[AsyncSession]) -> None:
    w = GroupWriter(sessions, Config().crm_settings(), clock=lambda: NOW, naive=True)
    await w.start()
    try:
        outcomes = await w.submit([item(n) for n in range(5)] + [item(0)])
    finally:
        await w.close()
    assert [o.status for o in outcomes] == ["stored"] * 5 + ["duplicate"]


# the purchase webhook

@dataclass
class Shop:
    url: str
    http: aiohttp.ClientSession
    sessions: async_sessionmaker[AsyncSession]
    crm: Crm

    async def post(self, order: Any, *, secret: str | None = SECRET, raw: bytes | None = None,
                   content_type: str = "application/json", header: str | None = None) -> tuple[int, dict[str, Any]]:
        body = raw if raw is not None else json.dumps(order, ensure_ascii=False).encode()
        headers = {"Content-Type": content_type}
        if header is not None:
            headers["X-Superfan-Signature"] = header
        elif secret is not None:
            headers["X-Superfan-Signature"] = "sha256=" + sign(secret, body)
        async with self.http.post(self.url + "/hooks/purchase", data=body, headers=headers) as resp:
            return resp.status, await resp.json()


def order(order_id: str = "A1001", **customer: Any) -> dict[str, Any]:
    return {"order_id": order_id, "amount": 1280, "currency": "TWD", "time": "2026-11-22T20:15:00+08:00",
            "customer": customer or {"line_user_id": LINE_FAN}, "summary": "簽名寫真集"}


@pytest.fixture
async def shop(sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine,
               writer: GroupWriter) -> AsyncIterator[Shop]:
    config = Config()
    crm = Crm(config, engine, sessions, config.crm_settings())
    app = make_web_app(config.web)
    PurchaseHook(crm, writer, SECRET).mount(app)
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    async with aiohttp.ClientSession() as http:
        yield Shop(server.url, http, sessions, crm)
    await server.stop()


async def test_a_signed_purchase_is_stored_once_on_the_fan(shop: Shop) -> None:
    status, body = await shop.post(order())
    assert (status, body["status"]) == (200, "stored")
    assert (await shop.post(order()))[1]["status"] == "duplicate"
    async with shop.sessions() as session:
        fan = await fan_by_identity(session, "line", LINE_FAN)
        [row] = (await session.execute(select(Interaction))).scalars()
    assert fan is not None and body["fan_id"] == fan.id
    assert (row.kind, row.amount_cents, row.currency, row.summary) == ("purchase", 128000, "TWD", "簽名寫真集")
    assert row.occurred_at == datetime(2026, 11, 22, 12, 15, tzinfo=UTC)


async def test_customers_by_email_discord_id_or_referral_code(shop: Shop) -> None:
    async with shop.sessions.begin() as session:
        owner = await ensure_fan(session, shop.crm.settings, platform="discord", external_id="9001",
                                 display_name="Ann", now=NOW)
        code = await referral_code(session, owner)
    assert (await shop.post(order("B1", email="Fan@Example.com")))[0] == 200
    assert (await shop.post(order("B2", discord_user_id="9001")))[1]["fan_id"] == owner
    assert (await shop.post({**order("B3", referral_code=code.lower()), "amount": "2,500.50"}))[1]["fan_id"] == owner
    status, body = await shop.post(order("B4", referral_code="NOSUCH"))
    assert status == 400 and "referral_code" in body["error"]
    assert body["code"] == "purchase.referral_code_unknown"
    assert body["message"] == "customer.referral_code 不是任何粉絲的推薦碼。"  # the creator's language
    async with shop.sessions() as session:
        assert await fan_by_identity(session, "email", "fan@example.com") is not None
    assert await count(shop.sessions, kind="purchase") == 3


async def test_unusable_purchases_get_400_and_nothing_is_stored(shop: Shop) -> None:
    good = order()
    bad_orders = [
        {k: v for k, v in good.items() if k != "order_id"}, {**good, "amount": "lots"}, {**good, "amount": -5},
        {**good, "amount": True}, {**good, "currency": "dollars"}, {**good, "time": "2026-11-22 20:15"},
        {**good, "customer": {}}, {**good, "customer": {"email": "a@b.co", "line_user_id": LINE_FAN}},
        {**good, "customer": {"line_user_id": "not-a-line-id"}}, [good], "order",
    ]
    for bad in bad_orders:
        status, body = await shop.post(bad)
        assert status == 400, bad
        assert body["error"] and body["code"] and body["message"] != body["error"], body
    status, body = await shop.post({**good, "currency": "dollars"})  # refused by crm's own validation
    assert (body["code"], body["message"]) == ("currency.bad", "幣別「dollars」有誤（請用 ISO 4217 代碼，例如 TWD）。")
    assert (await shop.post(good, secret="wrong"))[0] == 400
    assert (await shop.post(good, secret=None))[0] == 400
    assert (await shop.post(good, header="sha256=" + "0" * 64))[0] == 400
    assert (await shop.post(good, content_type="text/plain"))[0] == 400
    assert (await shop.post(None, raw=b'{"order_id": "A1", "amount": 1'))[0] == 400
    assert (await shop.post(None, raw=json.dumps({**good, "summary": "x" * 1_100_000}).encode()))[0] == 400
    assert await count(shop.sessions) == 0


async def test_without_a_secret_the_hook_refuses_everything(sessions: async_sessionmaker[AsyncSession],
                                                            engine: AsyncEngine, writer: GroupWriter) -> None:
    config = Config()
    app = make_web_app(config.web)
    PurchaseHook(Crm(config, engine, sessions, config.crm_settings()), writer, None).mount(app)
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(server.url + "/hooks/purchase", json=order()) as resp:
            assert resp.status == 503
            assert "SUPERFAN_PURCHASE_SECRET" in (await resp.json())["error"]
    finally:
        await server.stop()
    assert await count(sessions) == 0


# run(): the composition root

async def test_run_serves_healthz_and_stops_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERFAN_PURCHASE_SECRET", SECRET)
    config = Config(database=DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"),
                    web=WebConfig(port=0))
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, on_ready=ready.set_result))
    where = await asyncio.wait_for(ready, 30)
    url = where.split(" ")[0]
    body = json.dumps(order()).encode()
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200
            assert set((await resp.json())["checks"]) == {"writer"}
        async with http.post(url + "/hooks/purchase", data=body, headers={
                "Content-Type": "application/json", "X-Superfan-Signature": sign(SECRET, body)}) as resp:
            assert resp.status == 200
    stop.set()
    await asyncio.wait_for(task, 10)
    assert "/line/webhook" not in where  # LINE is off unless enabled


async def test_run_checks_the_enabled_adapters_secrets_before_connecting(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINE_CHANNEL_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("LINE_CHANNEL_SECRET", "set")
    db = tmp_path / "never.db"
    config = Config(database=DatabaseConfig(url=f"sqlite+aiosqlite:///{db}"), web=WebConfig(port=0),
                    line=LineConfig(enabled=True))
    with pytest.raises(ConfigError) as exc:
        await run(config)
    assert str(exc.value).splitlines() == [
        "built-in defaults: line is enabled but environment variable LINE_CHANNEL_ACCESS_TOKEN is not set"]
    assert not db.exists()
