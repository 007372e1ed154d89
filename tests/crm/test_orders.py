"""Orders: unambiguous amounts only, a ceiling and a currency list, and one stored purchase per order id."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.errors import BadInput, Conflict
from crm.fan_actions import ensure_fan
from crm.interaction import InteractionIn
from crm.models import Fan, Identity, Interaction
from crm.orders import OrderRules, check_amount, order_event_id, parse_amount, record_order
from crm.settings import CrmSettings

AT = datetime(2026, 11, 22, 12, 15, tzinfo=UTC)
RULES = OrderRules(currencies=frozenset({"TWD", "USD", "JPY"}), max_amount=Decimal(1_000_000))


@pytest.mark.parametrize(("raw", "amount"), [
    (1280, Decimal(1280)), (Decimal("1280.50"), Decimal("1280.5")), (0, Decimal(0)), ("1234", Decimal(1234)),
    ("1234.5", Decimal("1234.5")), ("1,234", Decimal(1234)), (" 1,234,567.89 ", Decimal("1234567.89")),
    (12.5, Decimal("12.5")),
])
def test_unambiguous_amounts_are_read_exactly(raw: object, amount: Decimal) -> None:
    assert parse_amount(raw) == amount


@pytest.mark.parametrize(("raw", "code"), [
    ("12,34", "purchase.amount_form"), ("1,2,3,4", "purchase.amount_form"), ("1.234,56", "purchase.amount_form"),
    ("1,234.5.6", "purchase.amount_form"), ("1e3", "purchase.amount_form"), ("1E+12", "purchase.amount_form"),
    (",123", "purchase.amount_form"), ("1234,", "purchase.amount_form"), ("1.", "purchase.amount_form"),
    ("NaN", "purchase.amount_bad"), ("inf", "purchase.amount_bad"), ("lots", "purchase.amount_bad"),
    (float("nan"), "purchase.amount_form"), (float("inf"), "purchase.amount_form"),
    (Decimal("NaN"), "purchase.amount_form"), (-5, "purchase.amount_negative"), ("-5", "purchase.amount_negative"),
    (True, "purchase.amount_type"), (None, "purchase.amount_type"), ([12], "purchase.amount_type"),
])
def test_ambiguous_or_impossible_amounts_are_refused(raw: object, code: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_amount(raw)
    assert caught.value.code == code


@pytest.mark.parametrize(("amount", "currency", "code"), [
    (Decimal("1e12"), "TWD", "purchase.amount_too_large"),  # once worth five billion points to one fan
    (Decimal("1000000.01"), "TWD", "purchase.amount_too_large"),
    (Decimal("10"), "XYZ", "purchase.currency_not_accepted"),
    (Decimal("10"), "EUR", "purchase.currency_not_accepted"),
    (Decimal("100.5"), "JPY", "purchase.amount_decimals"),  # the yen has no decimals (ISO 4217)
    (Decimal("12.345"), "TWD", "purchase.amount_decimals"),
    (Decimal("12.345"), "USD", "purchase.amount_decimals"),
])
def test_amounts_over_the_ceiling_or_too_precise_and_other_currencies_are_refused(
        amount: Decimal, currency: str, code: str) -> None:
    with pytest.raises(BadInput) as caught:
        check_amount(amount, currency, RULES)
    assert caught.value.code == code


def test_the_ceiling_itself_and_two_decimals_are_fine() -> None:
    check_amount(Decimal(1_000_000), "TWD", RULES)
    check_amount(Decimal("12.30"), "USD", RULES)
    check_amount(Decimal("12.000"), "JPY", RULES)  # trailing zeros are not decimals
    check_amount(Decimal("1E+3"), "JPY", RULES)


def purchase(order_id: str = "A1", *, platform: str = "email", external_id: str = "fan@example.com",
             amount: str = "1280", currency: str = "TWD") -> InteractionIn:
    return InteractionIn(platform, external_id, "purchase", AT, order_event_id(order_id), display_name="Ann",
                         amount=Decimal(amount), currency=currency, text="簽名寫真集")


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        interactions = (await session.execute(select(func.count()).select_from(Interaction))).scalar_one()
        fans = (await session.execute(select(func.count()).select_from(Fan))).scalar_one()
    return interactions, fans


async def test_a_repeat_of_an_order_is_a_duplicate(sessions: async_sessionmaker[AsyncSession],
                                                  settings: CrmSettings, now: datetime) -> None:
    async with sessions.begin() as session:
        first = await record_order(session, purchase(), settings, now)
    async with sessions.begin() as session:
        again = await record_order(session, purchase()._replace(amount=Decimal("1280.00"), currency="twd"),
                                   settings, now)
    assert (first.status, again.status, again.fan_id) == ("stored", "duplicate", first.fan_id)
    assert await counts(sessions) == (1, 1)


async def test_the_same_order_for_the_same_fan_under_another_key_is_a_duplicate(
        sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, now: datetime) -> None:
    async with sessions.begin() as session:
        first = await record_order(session, purchase(), settings, now)
        session.add(Identity(fan_id=first.fan_id, platform="discord", external_id="9001", created_at=now))
    async with sessions.begin() as session:
        again = await record_order(session, purchase(platform="discord", external_id="9001"), settings, now)
    assert (again.status, again.fan_id) == ("duplicate", first.fan_id)
    assert (await counts(sessions))[0] == 1


@pytest.mark.parametrize(("change", "differs"), [
    ({"platform": "discord", "external_id": "9001"}, ["customer"]),  # was stored a second time
    ({"external_id": "someone.else@example.com"}, ["customer"]),
    ({"amount": "1380"}, ["amount"]),  # was answered "duplicate", hiding the conflict
    ({"currency": "USD"}, ["currency"]),
])
async def test_the_same_order_id_with_another_customer_amount_or_currency_is_a_conflict(
        sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, now: datetime,
        change: dict[str, str], differs: list[str]) -> None:
    async with sessions.begin() as session:
        await record_order(session, purchase(), settings, now)
    with pytest.raises(Conflict) as caught:
        async with sessions.begin() as session:
            await record_order(session, purchase(**change), settings, now)  # type: ignore[arg-type]
    params = caught.value.params
    assert (caught.value.code, params["order_id"], params["differs"]) == ("purchase.order_conflict", "A1", differs)
    assert params["stored"] == {"amount": "1280", "currency": "TWD", "customer": "email", "time": AT.isoformat()}
    given = params["given"]
    assert isinstance(given, dict) and given["customer"] == change.get("platform", "email")
    assert "Ann" not in repr(params) and "寫真" not in repr(params)  # never names or summaries
    assert await counts(sessions) == (1, 1)  # nothing stored, and no fan made for the other key


async def test_a_conflict_with_a_known_fan_changes_nothing_of_theirs(
        sessions: async_sessionmaker[AsyncSession], settings: CrmSettings, now: datetime) -> None:
    async with sessions.begin() as session:
        await record_order(session, purchase(), settings, now)
        other = await ensure_fan(session, settings, platform="discord", external_id="9001", display_name="Bo", now=now)
    with pytest.raises(Conflict):
        async with sessions.begin() as session:
            await record_order(session, purchase(platform="discord", external_id="9001"), settings, now)
    async with sessions() as session:
        rows = (await session.execute(select(Interaction.fan_id))).scalars().all()
    assert other not in rows and len(rows) == 1
