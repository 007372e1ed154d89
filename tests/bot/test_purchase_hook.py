"""The purchase webhook refuses what it cannot use with a 4xx and a reason, stores an order once
whatever customer key arrives, and answers our own storage trouble with a 5xx the shop retries.

The ``Shop`` client, ``order`` and the ``writer`` fixture are tests/bot/test_web.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import Crm
from bot.config import Config, GoalConfig, PurchasesConfig
from bot.purchase_hook import PurchaseHook, sign
from bot.web import WebServer, make_web_app
from bot.write_failures import StorageUnavailable, WriterClosed
from bot.writer import GroupWriter, Rejected
from crm.models import Fan, Interaction
from tests.bot import test_web
from tests.bot.test_web import LINE_FAN, SECRET, Shop, order

writer = test_web.writer
shop = test_web.shop

ShopFactory = Callable[..., Awaitable[Shop]]


async def stored(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    """(interactions, fans) in the database."""
    async with sessions() as session:
        interactions = (await session.execute(select(func.count()).select_from(Interaction))).scalar_one()
        fans = (await session.execute(select(func.count()).select_from(Fan))).scalar_one()
    return interactions, fans


@pytest.fixture
async def shop_with(sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine,
                    writer: GroupWriter) -> AsyncIterator[ShopFactory]:
    """A purchase hook on its own server, with a given config and (optionally) a stand-in writer."""
    servers: list[WebServer] = []
    async with aiohttp.ClientSession() as http:

        async def make(config: Config | None = None, hook_writer: Any = None) -> Shop:
            config = config or Config()
            crm = Crm(config, engine, sessions, config.crm_settings())
            app = make_web_app(config.web)
            PurchaseHook(crm, hook_writer or writer, SECRET).mount(app)
            server = WebServer(app, "127.0.0.1", 0)
            await server.start()
            servers.append(server)
            return Shop(server.url, http, sessions, crm)

        yield make
    for server in servers:
        await server.stop()


async def raw_post(url: str, signature: bytes, body: bytes) -> int:
    """POST with a signature header of arbitrary bytes (aiohttp's client only sends text)."""
    parts = urlsplit(url)
    reader, writer_ = await asyncio.open_connection(parts.hostname, parts.port)
    head = (b"POST /hooks/purchase HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Superfan-Signature: " + signature + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n")
    writer_.write(head + body)
    await writer_.drain()
    status_line = await reader.readline()
    writer_.close()
    return int(status_line.split()[1])


# bad input: a 4xx with a reason, nothing stored, never a 5xx

async def test_a_signature_header_that_is_not_utf8_is_refused_not_a_server_error(shop: Shop) -> None:
    body = json.dumps(order()).encode()
    for signature in (b"sha256=\xff\xfe" + b"0" * 60, b"\xc3\x28", b"sha256=" + sign(SECRET, body).encode() + b"\x80"):
        assert await raw_post(shop.url, signature, body) == 400
    assert await stored(shop.sessions) == (0, 0)


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                  "1969-07-20T20:17:00+00:00", "2300-01-01T00:00:00+08:00"])
async def test_absurd_purchase_times_are_refused_with_a_reason(shop: Shop, time: str) -> None:
    status, body = await shop.post({**order(), "time": time})
    assert status == 400 and body["code"] in ("purchase.time_bad", "time.out_of_range"), body
    assert await stored(shop.sessions) == (0, 0)


async def test_deeply_nested_json_is_refused(shop: Shop) -> None:
    deep = b'{"order_id": "A1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, body = await shop.post(None, raw=deep)
    assert status == 400 and body["code"] == "purchase.bad_json"


@pytest.mark.parametrize(("amount", "code"), [
    ("12,34", "purchase.amount_form"), ("1,2,3,4", "purchase.amount_form"), ("1.234,56", "purchase.amount_form"),
    ("1e3", "purchase.amount_form"), (1e12, "purchase.amount_too_large"), ("12.345", "purchase.amount_decimals"),
])
async def test_ambiguous_or_absurd_amounts_are_refused(shop: Shop, amount: object, code: str) -> None:
    status, body = await shop.post({**order(), "amount": amount})
    assert (status, body["code"]) == (400, code), body
    assert body["message"] != body["error"]  # the creator's language (zh-TW by default)
    assert await stored(shop.sessions) == (0, 0)


async def test_nan_infinity_and_huge_json_numbers_are_refused(shop: Shop) -> None:
    good = json.dumps(order())
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 4000):
        raw = good.replace('"amount": 1280', f'"amount": {literal}').encode()
        status, _ = await shop.post(None, raw=raw)
        assert status == 400, literal
    assert await stored(shop.sessions) == (0, 0)


async def test_unknown_currencies_and_control_characters_in_ids_are_refused(shop: Shop) -> None:
    cases = [({**order(), "currency": "XYZ"}, "purchase.currency_not_accepted"),
             (order("A\x001"), "purchase.order_id_chars"), (order("A\u20281"), "purchase.order_id_chars"),
             (order(email="fan\x00@example.com"), "purchase.customer_bad"),
             (order(referral_code="AB\x00C"), "purchase.customer_bad")]
    for bad, code in cases:
        status, body = await shop.post(bad)
        assert (status, body["code"]) == (400, code), bad
    assert await stored(shop.sessions) == (0, 0)


async def test_the_accepted_currencies_and_the_ceiling_come_from_the_config(shop_with: ShopFactory) -> None:
    config = Config(purchases=PurchasesConfig(currencies=["EUR"], max_amount=500.0), goal=GoalConfig(currency="HKD"))
    shop = await shop_with(config)
    assert (await shop.post({**order("E1"), "currency": "EUR", "amount": 500}))[0] == 200
    assert (await shop.post({**order("E2"), "currency": "HKD", "amount": "499.99"}))[0] == 200  # the goal's currency
    status, body = await shop.post({**order("E3"), "currency": "EUR", "amount": "500.01"})
    assert (status, body["code"]) == (400, "purchase.amount_too_large")
    status, body = await shop.post(order("E4"))  # TWD: not on this creator's list
    assert (status, body["code"]) == (400, "purchase.currency_not_accepted")
    assert "EUR" in body["message"] and "HKD" in body["message"]
    assert (await stored(shop.sessions))[0] == 2


# one order, one purchase

async def test_an_order_sent_again_under_another_customer_key_is_a_409_and_stored_once(shop: Shop) -> None:
    assert (await shop.post(order("C1", email="fan@example.com")))[0] == 200
    status, body = await shop.post({**order("C1", discord_user_id="9001"), "display_name": "Secret Name"})
    assert (status, body["code"]) == (409, "purchase.order_conflict")
    assert body["differs"] == ["customer"]
    assert body["stored"] == {"amount": "1280", "currency": "TWD", "customer": "email",
                              "time": "2026-11-22T12:15:00+00:00"}
    assert body["given"]["customer"] == "discord"
    assert "Secret Name" not in json.dumps(body) and "寫真" not in json.dumps(body, ensure_ascii=False)
    assert await stored(shop.sessions) == (1, 1)  # and no fan for discord 9001


@pytest.mark.parametrize(("change", "differs"), [({"amount": 1380}, ["amount"]), ({"currency": "USD"}, ["currency"]),
                                                 ({"amount": "1,380", "currency": "JPY"}, ["amount", "currency"])])
async def test_an_order_sent_again_with_another_amount_or_currency_is_a_409_with_both_versions(
        shop: Shop, change: dict[str, Any], differs: list[str]) -> None:
    assert (await shop.post(order("C2")))[0] == 200
    status, body = await shop.post({**order("C2"), **change})
    assert (status, body["code"], body["differs"]) == (409, "purchase.order_conflict", differs)
    assert body["stored"]["amount"] == "1280" and body["given"]["amount"] == str(change.get("amount", 1280)).replace(",", "")
    assert body["message"] == "訂單 C2 先前已用不同的金額、幣別或顧客記錄過；這次沒有做任何變更。"
    assert (await shop.post(order("C2")))[1]["status"] == "duplicate"  # the original still stands
    assert await stored(shop.sessions) == (1, 1)


async def test_a_referral_code_purchase_goes_through_the_same_check(shop: Shop) -> None:
    from crm.fan_actions import ensure_fan, referral_code

    async with shop.sessions.begin() as session:
        owner = await ensure_fan(session, shop.crm.settings, platform="discord", external_id="9001",
                                 display_name="Ann", now=test_web.NOW)
        code = await referral_code(session, owner)
    assert (await shop.post(order("R1", discord_user_id="9001")))[0] == 200
    assert (await shop.post(order("R1", referral_code=code)))[1]["status"] == "duplicate"  # the same fan
    status, body = await shop.post({**order("R1", referral_code=code), "amount": 999})
    assert (status, body["differs"]) == (409, ["amount"])
    assert (await stored(shop.sessions))[0] == 1


# our side: 5xx, so the shop retries; no fan content in answers or logs

class FailingWriter:
    """Stands in for the writer: fails every submission with ``error``, or answers ``outcome``."""

    def __init__(self, error: BaseException | None = None, outcome: Any = None) -> None:
        self.error, self.outcome = error, outcome

    async def submit(self, ops: Sequence[Any]) -> list[Any]:
        if self.error is not None:
            raise self.error
        return [self.outcome]


@pytest.mark.parametrize("error", [StorageUnavailable("database is locked"), WriterClosed("stopping")])
async def test_storage_unavailable_is_a_503_with_retry_after(shop_with: ShopFactory, error: Exception) -> None:
    shop = await shop_with(hook_writer=FailingWriter(error))
    body = json.dumps(order()).encode()
    async with shop.http.post(shop.url + "/hooks/purchase", data=body, headers={
            "Content-Type": "application/json", "X-Superfan-Signature": sign(SECRET, body)}) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        answer = await resp.json()
    assert answer["code"] == "storage.unavailable" and str(error) not in json.dumps(answer)


@pytest.mark.parametrize("writer_stub", [
    FailingWriter(IntegrityError("INSERT INTO interactions", {"summary": "my secret diary"}, Exception("boom"))),
    FailingWriter(RuntimeError("my secret diary")),
    FailingWriter(outcome=Rejected("IntegrityError: my secret diary")),
])
async def test_any_other_failure_is_a_500_with_a_code_and_no_fan_content(
        shop_with: ShopFactory, writer_stub: FailingWriter, caplog: pytest.LogCaptureFixture) -> None:
    shop = await shop_with(hook_writer=writer_stub)
    with caplog.at_level(logging.DEBUG):
        status, body = await shop.post({**order(), "summary": "my secret diary"})
    assert status == 500 and body["code"] == "storage.failed"
    assert "secret" not in json.dumps(body)
    assert "my secret diary" not in caplog.text or isinstance(writer_stub.error, RuntimeError)
    assert "{'summary'" not in caplog.text  # no SQL parameters in the log


# the fuzz test

customers = st.one_of(
    st.sampled_from([{"line_user_id": LINE_FAN}, {"email": "fan@example.com"}, {"discord_user_id": "9001"},
                     {"discord_user_id": 9002}, {"referral_code": "NOSUCH"}]),
    st.none(), st.integers(), st.text(max_size=5),
    st.dictionaries(st.sampled_from(["line_user_id", "discord_user_id", "email", "referral_code", "other"]),
                    st.one_of(st.text(max_size=40), st.integers(), st.booleans(), st.none()), max_size=3),
)
amounts = st.one_of(
    st.sampled_from([1280, 1380, "1,234", "999.5", 0, "12,34", "1.234,56", "1e999999999", 10**30, -1]),
    st.integers(min_value=-10**30, max_value=10**30), st.floats(), st.text(max_size=12), st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
times = st.one_of(st.sampled_from([
    "2026-11-22T20:15:00+08:00", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "2026-02-30T00:00:00Z", "2026-11-22T20:15:00+23:59", "2026-11-22T20:15:00"]),
    st.text(max_size=30), st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()))
orders = st.fixed_dictionaries({
    "order_id": st.one_of(st.sampled_from(["A1", "A2", 3]), st.text(max_size=110), st.integers()),
    "amount": amounts,
    "currency": st.one_of(st.sampled_from(["TWD", "usd", "JPY", "XYZ", "EUR", ""]), st.text(max_size=4)),
    "time": times, "customer": customers,
}, optional={"display_name": st.text(max_size=20), "summary": st.text(max_size=20)})
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=20)
near_valid = st.builds(  # a good order (one of two ids, so repeats and conflicts happen) with one field changed
    lambda oid, key, value: {**order(oid), key: value}, st.sampled_from(["N1", "N2"]),
    st.sampled_from(["amount", "currency", "time", "customer", "summary", "display_name"]),
    st.one_of(amounts, times, customers, st.sampled_from(["TWD", "JPY", "XYZ"])))
bodies = st.one_of(
    orders.map(lambda o: json.dumps(o, default=str).encode()),
    near_valid.map(lambda o: json.dumps(o, default=str).encode()),
    near_valid.map(lambda o: json.dumps(o, default=str).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(max_size=60),
)
signatures = st.one_of(st.just("good"), st.just("good"), st.none(), st.binary(max_size=70),
                       st.text(max_size=70).map(str.encode))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, signature=signatures)
async def test_fuzz_never_a_5xx_and_nothing_stored_unless_200(shop: Shop, body: bytes,
                                                             signature: bytes | str | None) -> None:
    before = await stored(shop.sessions)
    if signature == "good":
        signature = ("sha256=" + sign(SECRET, body)).encode()
    if signature is None:
        async with shop.http.post(shop.url + "/hooks/purchase", data=body,
                                  headers={"Content-Type": "application/json"}) as resp:
            status = resp.status
    else:
        assert isinstance(signature, bytes)
        status = await raw_post(shop.url, signature.replace(b"\r", b"").replace(b"\n", b""), body)
    event(f"HTTP {status}")
    assert status < 500
    after = await stored(shop.sessions)
    if status != 200:
        assert after == before
    else:
        assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1


async def test_a_decimal_amount_is_stored_exactly(shop: Shop) -> None:
    assert (await shop.post({**order(), "amount": "234,567.89"}))[0] == 200
    async with shop.sessions() as session:
        row = (await session.execute(select(Interaction))).scalar_one()
    assert Decimal(row.amount_cents) / 100 == Decimal("234567.89")


async def test_a_nul_in_the_summary_or_name_is_stored_as_a_replacement_character(shop: Shop) -> None:
    status, _ = await shop.post({**order(), "summary": "簽名\x00寫真集", "display_name": "A\x00nn"})
    assert status == 200  # PostgreSQL refuses NUL in text: this was a 500 (a failed group) there
    async with shop.sessions() as session:
        row = (await session.execute(select(Interaction))).scalar_one()
    assert row.summary == "簽名\ufffd寫真集"
