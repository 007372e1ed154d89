"""``POST /hooks/purchase``: a shop (or a payment form, or a script) tells superfan about an order.

Same rules as the LINE webhook: the body must be signed (``X-Superfan-Signature``: hex
HMAC-SHA256 of the raw body under the secret in ``[web] purchase_secret_env``, optionally
prefixed ``sha256=``); anything the shop can fix is a 4xx with a ``code`` and a reason and stores
nothing; 200 comes only after the purchase is committed through the group-commit writer; our own
trouble is a 5xx (503 with ``Retry-After`` when storage is busy) so the shop sends it again. An
order id is stored once whatever customer key arrives (crm.orders). See README "Purchase webhook".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from bot.i18n.errors import error_text
from bot.web import BodyTooLarge, read_body
from bot.write_failures import StorageUnavailable, WriterClosed, brief, transient
from bot.writer import Action, GroupWriter
from crm.clock import parse_iso
from crm.errors import BadInput, Conflict, CrmError
from crm.ingest import Recorded
from crm.interaction import InteractionIn, validate
from crm.orders import (
    OrderRules,
    check_amount,
    customer_by_referral_code,
    order_event_id,
    parse_amount,
    record_order,
)
from crm.settings import CrmSettings

if TYPE_CHECKING:
    from bot.app import Crm

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Superfan-Signature"
CUSTOMER_KEYS = ("line_user_id", "discord_user_id", "email", "referral_code")
#: Seconds a shop is asked to wait before sending again while the database is busy.
RETRY_AFTER_S = 5
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_LINE_ID = re.compile(r"U[0-9a-f]{32}")
_DISCORD_ID = re.compile(r"[0-9]{1,21}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Superfan-Signature`` value for ``body`` (what a shop computes)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the body's signature. A header that is not 64 hex digits (also one
    whose bytes were not UTF-8, which aiohttp hands over with surrogates) is simply wrong."""
    if not header:
        return False
    given = header.strip().removeprefix("sha256=").lower()
    return bool(_HEX_SHA256.fullmatch(given)) and hmac.compare_digest(given, sign(secret, body))


def order_rules(config: Config) -> OrderRules:
    """``[purchases]`` as crm takes it: the listed currencies plus ``[goal] currency``, and the ceiling."""
    currencies = frozenset(c.upper() for c in [*config.purchases.currencies, config.goal.currency])
    return OrderRules(currencies=currencies, max_amount=Decimal(str(config.purchases.max_amount)))


def read_json(body: bytes) -> Any:
    """The body as JSON, numbers with a fraction as exact decimals; ``NaN`` and ``Infinity`` refused.

    Raises ValueError (also for bytes that are not UTF-8) or RecursionError (absurd nesting).
    """
    return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_not_a_number)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


@dataclass(frozen=True)
class Purchase:
    """A checked order: the interaction to record and, for a referral-code customer, the code."""

    item: InteractionIn
    referral_code: str | None = None


def parse_purchase(data: Any, rules: OrderRules) -> Purchase:
    """The order as an interaction, or :class:`BadInput` naming the first thing wrong with it."""
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object", code="purchase.not_object")
    order = data.get("order_id")
    if isinstance(order, int) and not isinstance(order, bool):
        order = str(order)
    if not isinstance(order, str) or not order.strip() or len(order.strip()) > 100:
        raise BadInput("order_id must be a string of 1–100 characters", code="purchase.order_id", max=100)
    if not order.isprintable():
        raise BadInput("order_id may contain only printable characters", code="purchase.order_id_chars")
    amount = parse_amount(data.get("amount"))
    currency = data.get("currency")
    if not isinstance(currency, str):
        raise BadInput("currency must be an ISO 4217 code such as TWD", code="purchase.currency_type")
    at_raw = data.get("time")
    if not isinstance(at_raw, str):
        raise BadInput("time must be an ISO-8601 time with an offset, e.g. 2026-11-22T20:15:00+08:00",
                       code="purchase.time_type")
    try:
        at = parse_iso(at_raw)
    except ValueError:
        raise BadInput("time is not an ISO-8601 time with an offset", code="purchase.time_bad",
                       time=at_raw[:60]) from None
    name, summary = data.get("display_name"), data.get("summary")
    platform, external_id = _customer(data.get("customer"))
    by_code = platform == "referral_code"
    item = validate(InteractionIn(
        platform="shop" if by_code else platform, external_id=external_id, kind="purchase", occurred_at=at,
        source_event_id=order_event_id(order.strip()), display_name=name if isinstance(name, str) else None,
        amount=amount, currency=currency, text=summary if isinstance(summary, str) else None,
    ))
    check_amount(amount, item.currency or "", rules)
    return Purchase(item, external_id if by_code else None)


def _customer(customer: Any) -> tuple[str, str]:
    if not isinstance(customer, dict):
        raise BadInput(f"customer must be an object with one of {', '.join(CUSTOMER_KEYS)}",
                       code="purchase.customer_type", keys=list(CUSTOMER_KEYS))
    given = {k: v for k, v in customer.items() if k in CUSTOMER_KEYS and v not in (None, "")}
    if len(given) != 1:
        raise BadInput(f"customer needs exactly one of {', '.join(CUSTOMER_KEYS)}", code="purchase.customer_count",
                       keys=list(CUSTOMER_KEYS))
    ((key, value),) = given.items()
    value = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if value.isprintable():
        if key == "line_user_id" and _LINE_ID.fullmatch(value):
            return "line", value
        if key == "discord_user_id" and _DISCORD_ID.fullmatch(value):
            return "discord", value
        if key == "email" and _EMAIL.fullmatch(value) and len(value) <= 128:
            return "email", value.lower()
        if key == "referral_code" and 0 < len(value) <= 16:
            return "referral_code", value
    raise BadInput(f"customer.{key} is not valid", code="purchase.customer_bad", field=key, value=value[:60])


def purchase_action(purchase: Purchase, settings: CrmSettings) -> Action:
    """The writer's unit of work: find the customer (by referral code too), then record the order
    unless its id is stored already (crm.orders.record_order)."""

    async def run(session: AsyncSession, now: datetime) -> Recorded:
        item = purchase.item
        if purchase.referral_code is not None:
            platform, external_id = await customer_by_referral_code(session, purchase.referral_code)
            item = item._replace(platform=platform, external_id=external_id)
        return await record_order(session, item, settings, now)

    return Action("purchase", run)


class PurchaseHook:
    """The purchase webhook route; without its secret configured it answers 503 and stores nothing."""

    def __init__(self, crm: Crm, writer: GroupWriter, secret: str | None) -> None:
        self.crm = crm
        self.writer = writer
        self.secret = secret
        self.rules = order_rules(crm.config)

    def mount(self, app: web.Application) -> None:
        app.router.add_post(self.crm.config.web.purchase_path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Check, store, answer; the order of the checks decides which single reason a shop sees."""
        if not self.secret:
            return web.json_response(
                {"error": f"purchase hook not configured: set ${self.crm.config.web.purchase_secret_env}",
                 "code": "purchase.not_configured"}, status=503)
        if request.content_type != "application/json":
            return _answer(400, "purchase.content_type", "content type must be application/json")
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return _answer(400, "purchase.too_large", "body too large")
        if not signature_ok(self.secret, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("purchase hook: refused a request with a missing or bad signature")
            return _answer(400, "purchase.bad_signature", "bad signature")
        try:
            data = read_json(body)
        except (ValueError, RecursionError):
            return _answer(400, "purchase.bad_json", "body is not valid UTF-8 JSON")
        try:
            purchase = parse_purchase(data, self.rules)
        except CrmError as exc:
            return self._refused(exc)
        return await self._store(purchase)

    async def _store(self, purchase: Purchase) -> web.Response:
        """Submit to the writer: 200 once committed, 503 + Retry-After while storage is busy, else 500."""
        try:
            (outcome,) = await self.writer.submit([purchase_action(purchase, self.crm.settings)])
        except (StorageUnavailable, WriterClosed) as exc:
            log.warning("purchase hook: not stored, asking the shop to retry (%s)", brief(exc))
            return _retry_later()
        except Exception as exc:
            if transient(exc):
                log.warning("purchase hook: not stored, asking the shop to retry (%s)", brief(exc))
                return _retry_later()
            log.error("purchase hook: the order could not be stored (%s)", brief(exc))
            return _answer(500, "storage.failed", "the order could not be stored")
        if isinstance(outcome, CrmError):
            return self._refused(outcome)
        if not isinstance(outcome, Recorded):  # Rejected: the writer has logged why, without parameters
            log.error("purchase hook: the writer could not store the order")
            return _answer(500, "storage.failed", "the order could not be stored")
        return web.json_response({"status": outcome.status, "fan_id": outcome.fan_id})

    def _refused(self, exc: CrmError) -> web.Response:
        """400 for an order superfan cannot use (409 when it contradicts a stored one): ``error``
        (English, stable for scripts), ``code``, and ``message`` in the creator's language."""
        body: dict[str, Any] = {"error": str(exc), "code": exc.code,
                                "message": error_text(exc, self.crm.settings.locale)}
        if isinstance(exc, Conflict):
            body.update({key: exc.params.get(key) for key in ("differs", "stored", "given")})
            return web.json_response(body, status=409)
        return web.json_response(body, status=400)


def _answer(status: int, code: str, reason: str) -> web.Response:
    """A short answer for machines: a stable ``code`` and an English reason, nothing of the request."""
    return web.json_response({"error": reason, "code": code}, status=status)


def _retry_later() -> web.Response:
    response = _answer(503, "storage.unavailable", "storage is busy; send the order again later")
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response
