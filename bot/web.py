"""The one aiohttp app: ``/healthz`` here, adapters mount their routes (LINE webhook, purchase hook).

It runs on the same event loop as the Discord client and the scheduler, so nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.config import WebConfig

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[str | None]]
HEALTH_CHECKS = web.AppKey("health_checks", dict[str, HealthCheck])
HealthInfo = Callable[[], Awaitable[object]]
HEALTH_INFO = web.AppKey("health_info", dict[str, HealthInfo])
MAX_BODY = web.AppKey("max_body_bytes", int)
HEALTH_TIMEOUT_S = 2.0


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


def make_web_app(config: WebConfig) -> web.Application:
    """A fresh app with ``/healthz``; routes for enabled adapters are added before it starts."""
    app = web.Application(client_max_size=config.max_body_bytes)
    app[HEALTH_CHECKS] = {}
    app[HEALTH_INFO] = {}
    app[MAX_BODY] = config.max_body_bytes
    app.router.add_get("/healthz", _healthz)
    return app


def add_health_check(app: web.Application, name: str, check: HealthCheck) -> None:
    """Register a check for ``/healthz``: it returns ``None`` when healthy, else a short problem."""
    app[HEALTH_CHECKS][name] = check


def add_health_info(app: web.Application, name: str, info: HealthInfo) -> None:
    """Register a figure for ``/healthz``'s ``info`` (e.g. dead letters waiting): shown, never unhealthy."""
    app[HEALTH_INFO][name] = info


async def _healthz(request: web.Request) -> web.Response:
    problems: dict[str, str] = {}
    for name, check in request.app[HEALTH_CHECKS].items():
        try:
            problem = await asyncio.wait_for(check(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            problem = f"{type(exc).__name__}"
        if problem:
            problems[name] = problem
    if problems:
        return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
    names: list[str] = sorted(request.app[HEALTH_CHECKS].keys())
    info: dict[str, object] = {}
    for name, figure in request.app[HEALTH_INFO].items():
        try:
            info[name] = await asyncio.wait_for(figure(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            info[name] = f"unavailable ({type(exc).__name__})"
    return web.json_response({"status": "ok", "checks": names, "info": info})


async def read_body(request: web.Request) -> bytes:
    """The raw body, refusing (:class:`BodyTooLarge`) past the app's limit without buffering it all.

    aiohttp's own limit answers 413; our webhooks answer every unusable request with 400, and
    a declared ``Content-Length`` over the limit is refused before a byte is read.
    """
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def bad_request(reason: str) -> web.Response:
    """A 400 with a short reason and nothing else (never echo the request back)."""
    return web.json_response({"error": reason}, status=400)


#: Seconds a sender is asked to wait before redelivering what could not be stored.
RETRY_AFTER_S = 5


def not_stored(code: str, reason: str, *, status: int = 503) -> web.Response:
    """A 5xx for a request that was not stored through no fault of the sender: ``code`` and a short
    reason (never exception text, which can carry what fans wrote), and ``Retry-After``."""
    return web.json_response({"error": reason, "code": code}, status=status,
                             headers={"Retry-After": str(RETRY_AFTER_S)})


class WebServer:
    """Serve an app on host:port; ``stop`` stops listening, lets in-flight requests finish, then closes."""

    def __init__(self, app: web.Application, host: str, port: int, *, shutdown_timeout: float = 10.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                                     handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("web app listening on %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
