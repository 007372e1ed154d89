"""Orders from a shop: which amounts are unambiguous and allowed, and one stored purchase per order id.

A shop may send an order again (a retry after a timeout), or send the same order id with another
customer key (first the e-mail, later the Discord id). Whatever key arrives, an order id is stored
once: a repeat that agrees with what is stored is a duplicate; a repeat that disagrees is a
:class:`~crm.errors.Conflict` that changes nothing, so the creator sees the shop's mistake instead
of a purchase counted twice or a wrong amount silently kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import BadInput, Conflict
from crm.fan_actions import fan_by_referral_code, primary_identity
from crm.identity import fan_by_identity
from crm.ingest import Recorded, record
from crm.interaction import InteractionIn, validate
from crm.models import Interaction
from crm.settings import CrmSettings

ORDER_PREFIX = "order:"
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")  # 1,234 and 1,234,567.89
#: Currencies whose ISO 4217 minor unit is 0 (no decimals). Every other code may have two (TWD and
#: USD have two in ISO 4217); the three-decimal ones (BHD, KWD …) get two as well, because
#: amounts are stored in hundredths.
NO_DECIMALS = frozenset({"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                         "VND", "VUV", "XAF", "XOF", "XPF"})


@dataclass(frozen=True)
class OrderRules:
    """What one purchase may be: an accepted currency, and at most ``max_amount`` units of it.

    The ceiling is in the purchase's own currency as given (no exchange rates): 1,000,000 allows
    NT$1,000,000 and also ¥1,000,000.
    """

    currencies: frozenset[str]
    max_amount: Decimal


def order_event_id(order_id: str) -> str:
    """The ``source_event_id`` of an order's purchase: the same on every customer platform."""
    return ORDER_PREFIX + order_id


def parse_amount(raw: object) -> Decimal:
    """An amount from a JSON number or one of the unambiguous string forms, else :class:`BadInput`.

    Strings may group thousands by commas in threes and have one decimal point ("1,234,567.89");
    "12,34" (a European decimal comma, or a typo) and "1,2,3,4" used to become 1234 silently.
    """
    if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal | str):
        raise BadInput("amount must be a number", code="purchase.amount_type")
    if isinstance(raw, str):
        text = raw.strip()
        digits = text.removeprefix("-")
        if not (_PLAIN.fullmatch(digits) or _GROUPED.fullmatch(digits)):
            if not any(c.isdigit() for c in text):
                raise BadInput(f"amount {raw[:40]!r} is not a number", code="purchase.amount_bad", amount=raw[:40])
            raise BadInput(f"amount {raw[:40]!r} is ambiguous", code="purchase.amount_form", amount=raw[:40])
        amount = Decimal(text.replace(",", ""))
    else:
        amount = Decimal(str(raw)) if isinstance(raw, float) else Decimal(raw)
    if not amount.is_finite():
        raise BadInput("amount is not a finite number", code="purchase.amount_form", amount=str(raw))
    if amount < 0:
        raise BadInput("amount must not be negative", code="purchase.amount_negative")
    return amount


def check_amount(amount: Decimal, currency: str, rules: OrderRules) -> None:
    """Refuse (:class:`BadInput`) a currency not accepted, an amount over the ceiling, or more
    decimals than the currency has: one typo must not give one fan millions of points."""
    if currency not in rules.currencies:
        raise BadInput(f"currency {currency} is not accepted", code="purchase.currency_not_accepted",
                       currency=currency, accepted=sorted(rules.currencies))
    if amount > rules.max_amount:
        raise BadInput(f"amount {shown(amount)} {currency} is over the limit", code="purchase.amount_too_large",
                       amount=shown(amount), currency=currency, max=shown(rules.max_amount))
    allowed = 0 if currency in NO_DECIMALS else 2
    if decimal_places(amount) > allowed:
        raise BadInput(f"{currency} amounts have at most {allowed} decimal places", code="purchase.amount_decimals",
                       currency=currency, places=allowed, amount=shown(amount))


def decimal_places(amount: Decimal) -> int:
    """Decimals that matter (1280.50 has one), counted exactly, with no rounding context involved."""
    _, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0:
        return 0
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - trailing_zeros)


def shown(amount: Decimal) -> str:
    """An amount for a message: plain digits, or scientific notation when it is absurdly large."""
    if amount.adjusted() > 15:
        return f"{amount:.3E}"
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


async def customer_by_referral_code(session: AsyncSession, code: str) -> tuple[str, str]:
    """The identity (platform, external_id) a purchase by the fan whose personal code is ``code`` goes to."""
    fan_id = await fan_by_referral_code(session, code)
    identity = await primary_identity(session, fan_id) if fan_id is not None else None
    if identity is None:
        raise BadInput("customer.referral_code is not any fan's code", code="purchase.referral_code_unknown")
    return identity


async def record_order(session: AsyncSession, item: InteractionIn, settings: CrmSettings, now: datetime) -> Recorded:
    """Record the purchase ``item`` unless its order id is stored already, on whatever customer platform.

    A repeat with the same customer (the same fan), amount and currency is a ``duplicate``; one
    that differs raises :class:`~crm.errors.Conflict` with both versions and changes nothing. The
    lookup by event id alone is indexed: ``source_event_id`` leads the unique index.
    """
    item = validate(item)
    ic = Interaction
    stored = (await session.execute(
        select(ic.fan_id, ic.platform, ic.amount_cents, ic.currency, ic.occurred_at)
        .where(ic.source_event_id == item.source_event_id).order_by(ic.id)
    )).all()
    if not stored:
        return await record(session, item, settings, now)
    fan = await fan_by_identity(session, item.platform, item.external_id)
    given_cents = _cents(item.amount)
    for row in stored:
        differs = [name for name, same in (("amount", row.amount_cents == given_cents),
                                           ("currency", row.currency == item.currency),
                                           ("customer", fan is not None and fan.id == row.fan_id)) if not same]
        if differs:
            order_id = (item.source_event_id or "").removeprefix(ORDER_PREFIX)
            raise Conflict(
                f"order {order_id} was already recorded with another {', '.join(differs)}",
                code="purchase.order_conflict", order_id=order_id, differs=differs,
                stored=_version(row.amount_cents, row.currency, row.platform, row.occurred_at),
                given=_version(given_cents, item.currency, item.platform, item.occurred_at))
    return Recorded("duplicate", stored[0].fan_id)


def _cents(amount: Decimal | None) -> int | None:
    """Hundredths, as ``record`` stores them (exact: amounts have at most two decimals here)."""
    return None if amount is None else int((amount * 100).to_integral_value())


def _version(cents: int | None, currency: str | None, platform: str, at: datetime) -> dict[str, Any]:
    """One side of a conflict, as a shop can compare it: never a name or a summary."""
    amount = None if cents is None else shown(Decimal(cents) / 100)
    return {"amount": amount, "currency": currency, "customer": platform, "time": at.isoformat()}
