"""Send a platform's outbox from a CLI command when no ``superfan run`` is there to do it.

``superfan reply`` writes an outbox row; a running server's drainer picks it up within its poll
(about 2 s). With no server running the command calls :func:`send_pending` itself, which builds
the same sender the server uses (LINE: the Messaging API client and quota book; Discord: a
REST-only login, no gateway) and drains what is due once. Running it while a server runs is
safe: a claim is a conditional update, so each row is sent by one of them.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.outbox_drain import Handler, OutboxDrainer
from bot.outbox_transact import session_transact
from crm import outbox
from crm.clock import Clock, utcnow

if TYPE_CHECKING:
    from bot.app import Crm
    from bot.discord_adapter.client import SuperfanBot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """What one pass did: rows sent, rows given up (with their reason in the row), rows still waiting
    (a retry is due later, or another process holds them)."""

    platform: str
    sent: int
    failed: int
    waiting: int


async def send_pending(crm: Crm, platform: str, *, clock: Clock = utcnow) -> Summary:
    """Send ``platform``'s due outbox rows now, in this process; raises ``ConfigError`` when the
    platform is not enabled or its secret is missing, ``DiscordStartError`` when Discord refuses."""
    async with AsyncExitStack() as stack:
        handler = await _handler(crm, platform, stack, clock)
        drainer = OutboxDrainer(platform, session_transact(crm.sessions), handler, clock=clock)
        await drainer.drain_once()
    async with crm.read() as session:
        waiting = await outbox.pending_count(session, [platform])
    return Summary(platform, drainer.sent, drainer.failed, waiting)


async def _handler(crm: Crm, platform: str, stack: AsyncExitStack, clock: Clock) -> Handler:
    from bot.config_errors import ConfigError, literal, problem

    config = crm.config
    if platform == "line":
        if not config.line.enabled:
            raise ConfigError(problem("line_off"), source=config.source, locale=config.creator.locale)
        from bot.drop_views import DropViews
        from bot.line_adapter.outbox_sender import LineOutboxSender
        from bot.line_adapter.sender import LineSender

        cfg = config.line
        sender = LineSender(cfg.api_base, config.secret(cfg.channel_access_token_env), monthly_quota=cfg.monthly_quota,
                            timezone=config.creator.timezone, reply_ttl=cfg.reply_token_ttl_seconds, clock=clock)
        await sender.start()
        stack.push_async_callback(sender.close)
        return LineOutboxSender(sender, clock=clock, drops=DropViews(crm.read, crm.settings.drops))
    if platform == "discord":
        if not config.discord.enabled:
            raise ConfigError(problem("discord_off"), source=config.source, locale=config.creator.locale)
        from bot.discord_adapter.outbox_sender import DiscordOutboxSender

        bot = await _rest_only_bot(crm, clock)
        stack.push_async_callback(bot.close)
        return DiscordOutboxSender(lambda: bot)
    raise ConfigError(problem("platform_unknown", platform=literal(platform)), locale=config.creator.locale)


async def _rest_only_bot(crm: Crm, clock: Clock) -> SuperfanBot:
    """The bot logged in to Discord's REST API only: enough to open DMs, threads and post."""
    from bot.discord_adapter.client import DiscordStartError
    from bot.discord_adapter.client import SuperfanBot as Bot
    from bot.discord_adapter.endpoints import configure_endpoints

    config = crm.config.discord
    configure_endpoints(config.api_base, config.gateway_url)
    bot = Bot(crm, clock=clock)
    try:
        await bot.login(crm.config.secret(config.token_env))
    except Exception as exc:
        await bot.close()
        raise DiscordStartError(f"Discord refused the login ({type(exc).__name__})") from exc
    return bot

