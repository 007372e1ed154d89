"""``POST /hooks/purchase``: a shop (or a payment form, or a script) tells superfan about an order.

Same rules as the LINE webhook: the body must be signed (``X-Superfan-Signature``: hex
HMAC-SHA256 of the raw body under the secret in ``[web] purchase_secret_env``, optionally
prefixed ``sha256=``), anything unusable is a 400 with nothing stored, and 200 comes only after
the purchase is committed through the group-commit writer. The order id is the dedupe key, so a
shop retrying a delivery records the purchase once. See README "Purchase webhook".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.errors import error_text
from bot.web import BodyTooLarge, bad_request, read_body
from bot.writer import Action, GroupWriter, Op, Rejected, WriterClosed
from crm.clock import parse_iso
from crm.errors import BadInput, CrmError
from crm.fan_actions import fan_by_referral_code, primary_identity
from crm.ingest import Recorded, record_many
from crm.interaction import InteractionIn, validate
from crm.settings import CrmSettings

if TYPE_CHECKING:
    from bot.app import Crm

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Superfan-Signature"
CUSTOMER_KEYS = ("line_user_id", "discord_user_id", "email", "referral_code")
_LINE_ID = re.compile(r"U[0-9a-f]{32}")
_DISCORD_ID = re.compile(r"[0-9]{1,21}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Superfan-Signature`` value for ``body`` (what a shop computes)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    given = header.strip().removeprefix("sha256=").lower()
    return hmac.compare_digest(given.encode(), sign(secret, body).encode())


def parse_purchase(data: Any, settings: CrmSettings) -> Op:
    """The purchase as an interaction (or, for a referral-code customer, an action that finds the fan)."""
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object", code="purchase.not_object")
    order = data.get("order_id")
    if isinstance(order, int) and not isinstance(order, bool):
        order = str(order)
    if not isinstance(order, str) or not order.strip() or len(order.strip()) > 100:
        raise BadInput("order_id must be a string of 1–100 characters", code="purchase.order_id", max=100)
    amount_raw = data.get("amount")
    if isinstance(amount_raw, bool) or not isinstance(amount_raw, int | float | str):
        raise BadInput("amount must be a number", code="purchase.amount_type")
    try:
        amount = Decimal(str(amount_raw).replace(",", "").strip())
    except InvalidOperation:
        raise BadInput(f"amount {amount_raw!r} is not a number", code="purchase.amount_bad",
                       amount=str(amount_raw)) from None
    currency = data.get("currency")
    if not isinstance(currency, str):
        raise BadInput("currency must be an ISO 4217 code such as TWD", code="purchase.currency_type")
    at_raw = data.get("time")
    if not isinstance(at_raw, str):
        raise BadInput("time must be an ISO-8601 time with an offset, e.g. 2026-11-22T20:15:00+08:00",
                       code="purchase.time_type")
    try:
        at = parse_iso(at_raw)
    except ValueError as exc:
        raise BadInput(f"time: {exc}", code="purchase.time_bad", time=at_raw) from None
    name = data.get("display_name")
    summary = data.get("summary")
    platform, external_id = _customer(data.get("customer"))
    by_code = platform == "referral_code"
    item = validate(InteractionIn(
        platform="shop" if by_code else platform, external_id=external_id, kind="purchase", occurred_at=at,
        source_event_id=f"order:{order.strip()}", display_name=name if isinstance(name, str) else None,
        amount=amount, currency=currency, text=summary if isinstance(summary, str) else None,
    ))
    if by_code:
        return Action("purchase by referral code", _by_referral_code(item, settings))
    return item


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
    if key == "line_user_id" and _LINE_ID.fullmatch(value):
        return "line", value
    if key == "discord_user_id" and _DISCORD_ID.fullmatch(value):
        return "discord", value
    if key == "email" and _EMAIL.fullmatch(value) and len(value) <= 128:
        return "email", value.lower()
    if key == "referral_code" and 0 < len(value) <= 16:
        return "referral_code", value
    raise BadInput(f"customer.{key} {value!r} is not valid", code="purchase.customer_bad", field=key, value=value)


def _by_referral_code(item: InteractionIn, settings: CrmSettings) -> Callable[..., Awaitable[Recorded]]:
    """Record the purchase on the identity of the fan whose personal code ``item.external_id`` is."""

    async def run(session: AsyncSession, now: datetime) -> Recorded:
        fan_id = await fan_by_referral_code(session, item.external_id)
        identity = await primary_identity(session, fan_id) if fan_id is not None else None
        if identity is None:
            raise BadInput("customer.referral_code is not any fan's code", code="purchase.referral_code_unknown")
        found = item._replace(platform=identity[0], external_id=identity[1])
        return (await record_many(session, [found], settings, now)).results[0]

    return run


class PurchaseHook:
    """The purchase webhook route; without its secret configured it answers 503 and stores nothing."""

    def __init__(self, crm: Crm, writer: GroupWriter, secret: str | None) -> None:
        self.crm = crm
        self.writer = writer
        self.secret = secret

    def mount(self, app: web.Application) -> None:
        app.router.add_post(self.crm.config.web.purchase_path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.secret:
            return web.json_response(
                {"error": f"purchase hook not configured: set ${self.crm.config.web.purchase_secret_env}"},
                status=503)
        if request.content_type != "application/json":
            return bad_request("content type must be application/json")
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return bad_request("body too large")
        if not signature_ok(self.secret, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("purchase hook: refused a request with a missing or bad signature")
            return bad_request("bad signature")
        try:
            data = json.loads(body.decode("utf-8"))
        except ValueError:
            return bad_request("body is not valid UTF-8 JSON")
        try:
            op = parse_purchase(data, self.crm.settings)
        except CrmError as exc:
            return self._refused(exc)
        try:
            (outcome,) = await self.writer.submit([op])
        except WriterClosed:
            return web.json_response({"error": "shutting down"}, status=503)
        except Exception:
            log.exception("purchase hook: the order could not be stored")
            return web.json_response({"error": "storage unavailable"}, status=500)
        if isinstance(outcome, CrmError):
            return self._refused(outcome)
        if isinstance(outcome, Rejected):
            return bad_request(outcome.reason)
        assert isinstance(outcome, Recorded)
        return web.json_response({"status": outcome.status, "fan_id": outcome.fan_id})

    def _refused(self, exc: CrmError) -> web.Response:
        """400 for an order superfan cannot use: ``error`` (English, stable for scripts), ``code``, and
        ``message`` in the creator's language for whoever reads it."""
        return web.json_response({"error": str(exc), "code": exc.code,
                                  "message": error_text(exc, self.crm.settings.locale)}, status=400)
