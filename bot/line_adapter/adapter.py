"""The LINE adapter: the webhook route, the sender and the profile refresher, wired together.

One request: verify and parse → plan each event (an answer to a command or a greeting is an
outbox row written with the event, see ``answers.py``) → hand every op to the group-commit writer
and wait for the commit → 200. The commit wakes the LINE outbox drainer, which answers (reply
token first) in the background, and the profile worker refreshes display names later, so LINE's
retry clock is never spent waiting on LINE's own API, and a crash loses no answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from linebot.v3.webhook import WebhookParser

from bot.drop_views import DropViews
from bot.line_adapter import answers
from bot.line_adapter.events import Plan, plan_event
from bot.line_adapter.outbox_sender import LineOutboxSender
from bot.line_adapter.profiles import Profiles
from bot.line_adapter.sender import LineSender
from bot.line_adapter.webhook import SIGNATURE_HEADER, BadWebhook, verify_and_parse
from bot.outbox_drain import OutboxDrainer
from bot.outbox_transact import writer_transact
from bot.web import BodyTooLarge, add_health_check, add_health_info, bad_request, not_stored, read_body
from bot.write_failures import StorageUnavailable, WriterClosed, brief
from bot.writer import GroupWriter, Outcome
from crm import dead_letters, outbox
from crm.clock import Clock, utcnow
from crm.ingest import Recorded

if TYPE_CHECKING:
    from bot.app import Crm

log = logging.getLogger(__name__)


class LineAdapter:
    """Everything LINE-specific that runs inside ``superfan run``."""

    def __init__(self, crm: Crm, writer: GroupWriter, sender: LineSender, channel_secret: str, *,
                 monotonic: Callable[[], float] = time.monotonic, clock: Clock = utcnow) -> None:
        self.crm = crm
        self.writer = writer
        self.sender = sender
        self.locale = crm.config.creator.locale
        self.keywords = tuple(crm.config.checkin.keywords)
        self._parser = WebhookParser(channel_secret)
        self._monotonic = monotonic
        self.profiles = Profiles(sender, writer, crm.read, crm.settings, clock=clock,
                                 refresh=timedelta(hours=crm.config.line.profile_refresh_hours),
                                 rate=crm.config.line.profile_requests_per_second)
        #: Sends the answers queued with the events (and staff relays, the digest push).
        drops = DropViews(crm.read, crm.settings.drops)
        self.outbox = OutboxDrainer("line", writer_transact(writer),
                                    LineOutboxSender(sender, clock=clock, drops=drops), clock=clock)
        self.reply_ttl = sender.reply_ttl

    @classmethod
    def from_config(cls, crm: Crm, writer: GroupWriter, **kwargs: Any) -> LineAdapter:
        """Build from ``[line]``: secrets from their environment variables, never from the file."""
        cfg = crm.config.line
        sender = LineSender(cfg.api_base, crm.config.secret(cfg.channel_access_token_env),
                            monthly_quota=cfg.monthly_quota, timezone=crm.config.creator.timezone,
                            reply_ttl=cfg.reply_token_ttl_seconds, max_attempts=cfg.send_max_attempts,
                            backoff=cfg.send_backoff_seconds)
        return cls(crm, writer, sender, crm.config.secret(cfg.channel_secret_env), **kwargs)

    def mount(self, app: web.Application) -> None:
        app.router.add_post(self.crm.config.line.webhook_path, self.handle)
        add_health_check(app, "line", self._health)
        add_health_info(app, "line_dead_letters", self._dead_letters)
        add_health_info(app, "line_outbox_pending", self._outbox_pending)

    async def start(self) -> None:
        await self.sender.start()
        await self.profiles.start()
        self.writer.on_outbox.append(self.outbox.wake)
        await self.outbox.start()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the outbox drainer (unsent rows wait in the database) and the profile worker, then
        close the API client."""
        if self.outbox.wake in self.writer.on_outbox:
            self.writer.on_outbox.remove(self.outbox.wake)
        await self.outbox.close()
        await self.profiles.close()  # names not yet stored are looked up after the restart
        await self.sender.close()

    async def drain(self) -> None:
        """Send every answer due now and finish profile refreshes (tests, ``superfan demo``)."""
        if self.writer.running:
            await self.outbox.settle()
        await self.profiles.settle()

    async def _outbox_pending(self) -> int:
        """LINE messages queued and not yet sent (answers, relays, the digest push)."""
        async with self.crm.read() as session:
            return await outbox.pending_count(session, ["line"])

    async def _dead_letters(self) -> int:
        """Events kept because they could not be understood, waiting for ``superfan dead-letters replay``."""
        async with self.crm.read() as session:
            return await dead_letters.waiting(session)

    async def _health(self) -> str | None:
        return await self.writer.health()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``POST [line] webhook_path``: 200 only once the events are committed."""
        received_at = self._monotonic()
        if request.content_type != "application/json":
            return bad_request("content type must be application/json")
        try:
            body = await read_body(request)
            events = verify_and_parse(self._parser, body, request.headers.get(SIGNATURE_HEADER))
        except BodyTooLarge:
            return bad_request("body too large")
        except BadWebhook as exc:
            log.warning("LINE webhook refused: %s", exc.reason)
            return bad_request(exc.reason)
        plans: list[Plan] = []
        for event in events:
            plan = plan_event(event, received_at=received_at, settings=self.crm.settings,
                              checkin_keywords=self.keywords)
            if plan is not None:
                answers.attach(plan, self.locale, self.reply_ttl)
                plans.append(plan)
        try:
            outcomes = await self.writer.submit([op for plan in plans for op in plan.ops])
        except WriterClosed:
            return not_stored("shutting_down", "shutting down")
        except StorageUnavailable:
            return not_stored("storage.unavailable", "storage unavailable; nothing of this request was stored")
        except Exception as exc:
            log.error("LINE webhook: %d events could not be stored (%s); LINE will redeliver", len(events), brief(exc))
            return not_stored("storage.failed", "could not store the events", status=500)
        self._after_commit(plans, outcomes)
        return web.json_response({"stored": sum(isinstance(o, Recorded) and o.status == "stored"
                                                for o in outcomes)})

    def _after_commit(self, plans: Sequence[Plan], outcomes: Sequence[Outcome]) -> None:
        start = 0
        for plan in plans:
            mine = outcomes[start : start + len(plan.ops)]
            start += len(plan.ops)
            inbound = plan.inbound
            stored = [o for o in mine if isinstance(o, Recorded) and o.status == "stored"]
            if plan.keep_token and stored and inbound.reply_token and inbound.user_id:
                self.sender.remember_token(inbound.user_id, inbound.reply_token, inbound.received_at)
            self.profiles.noticed(self._users(plan, mine))  # names are looked up by the worker, later

    @staticmethod
    def _users(plan: Plan, outcomes: Sequence[Outcome]) -> set[str]:
        users = {op.external_id for op, o in zip(plan.ops, outcomes, strict=True)
                 if isinstance(o, Recorded) and o.status == "stored" and hasattr(op, "external_id")}
        if plan.respond == "command" and plan.inbound.user_id:
            users.add(plan.inbound.user_id)
        return users
