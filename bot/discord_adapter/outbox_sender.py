"""The Discord half of the outbox: one handler per outbox kind, looked up in a registry.

``OutboxDrainer("discord", transact, DiscordOutboxSender(...))`` hands every claimed Discord row
here. The kind says who sends it: ``relay`` (a staff answer to a fan, as a DM) is built in; the
inbox (``inbox_message``, ``sla_reminder``, ``sla_breach``), the digest (``digest``) and drops
(``drop_dm``, ``drop_post``) register their own handlers from their modules with :func:`register`,
so this module knows none of them.

Exactly once: every message is sent with a ``nonce`` derived from the row's idempotency key and
``enforce_nonce`` (discord.py sets it whenever a nonce is given), so Discord answers a resend of
the same row after a crash (within its few-minutes window) with the message it already created.
A handler that creates something else (a thread) must record it in the database before it
returns, and look for it first when ``message.attempts > 1``.

Failures are translated once, here, for every handler (see :func:`classify`).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.outbox_drain import RetryLater, Undeliverable
from crm.outbox import OutboxMessage

if TYPE_CHECKING:
    from bot.discord_adapter.client import SuperfanBot

log = logging.getLogger(__name__)

#: ``handler(bot, message)``: send ``message`` through ``bot`` (its REST client; the gateway cache
#: may be empty when ``superfan reply`` sends without a running server, so fetch, don't get).
KindHandler = Callable[["SuperfanBot", OutboxMessage], Awaitable[None]]
_HANDLERS: dict[str, KindHandler] = {}
#: Modules that register handlers for their kinds when imported (digest, inbox, drops); a
#: module that does not exist yet is skipped, so the sender works before they land.
HANDLER_MODULES = ("bot.discord_adapter.inbox", "bot.discord_adapter.digest_post", "bot.discord_adapter.drops")
#: Discord's limit on a message's content.
MAX_CONTENT = 2000
#: Discord error codes that no retry can fix: DMs closed or blocked, unknown user/channel,
#: missing access or permissions.
PERMANENT_CODES = {50007: "dms_closed", 10013: "unknown_user", 10003: "unknown_channel",
                   50001: "missing_access", 50013: "missing_permissions"}


def register(kind: str, handler: KindHandler) -> None:
    """Make ``handler`` the sender of outbox rows of ``kind`` on Discord (the last registration wins,
    so re-importing a module in tests is harmless)."""
    _HANDLERS[kind] = handler


def registered() -> dict[str, KindHandler]:
    """The handlers known now, by kind (a copy: for tests and ``/healthz``)."""
    load_handler_modules()
    return dict(_HANDLERS)


def load_handler_modules() -> None:
    """Import the modules that register handlers (once; Python caches imports)."""
    for name in HANDLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def nonce_of(key: str, part: int = 0) -> int:
    """A Discord nonce for an idempotency key: a positive 63-bit number (Discord takes up to 25
    characters; a number keeps clear of its string rules), one per part of a long message."""
    digest = hashlib.sha256(f"{key}:{part}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def chunks(text: str, size: int = MAX_CONTENT) -> Iterator[str]:
    """``text`` in pieces Discord accepts, cut at line breaks where possible."""
    while len(text) > size:
        cut = text.rfind("\n", 0, size)
        cut = cut if cut > 0 else size
        yield text[:cut]
        text = text[cut:].lstrip("\n")
    if text:
        yield text


def classify(exc: BaseException) -> RetryLater | Undeliverable | None:
    """What a Discord failure means for the row, in this order of precedence:

    1. rate limited (429, discord.py's ``RateLimited``) → retry after Discord's ``retry_after``;
    2. Discord's side (5xx) or the network (connection, timeout) → retry with backoff;
    3. a code no retry can fix (:data:`PERMANENT_CODES`, any other 4xx) → undeliverable, with the code;
    4. anything else → None: the drainer retries it with backoff and logs only its type.
    """
    if isinstance(exc, discord.RateLimited):
        return RetryLater("discord 429", after=exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        status, code = exc.status, exc.code
        if status == 429:
            after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            return RetryLater("discord 429", after=_seconds(after))
        if status >= 500:
            return RetryLater(f"discord {status}")
        reason = PERMANENT_CODES.get(code, f"discord {status}/{code}")
        return Undeliverable(reason)
    if isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError)):
        return RetryLater(f"network: {type(exc).__name__}")
    return None


class DiscordOutboxSender:
    """The drainer's handler for Discord: dispatch by kind, translate failures.

    ``bot`` returns the connected client, or None while Discord is not connected (the row then
    waits: ``RetryLater``), so the drainer can start before Discord is up.
    """

    def __init__(self, bot: Callable[[], SuperfanBot | None]) -> None:
        self._bot = bot
        load_handler_modules()

    async def __call__(self, message: OutboxMessage) -> None:
        handler = _HANDLERS.get(message.kind)
        if handler is None:
            raise Undeliverable(f"no Discord sender for kind {message.kind!r}")
        bot = self._bot()
        if bot is None or bot.is_closed():
            raise RetryLater("discord not connected", after=5.0, attempted=False)
        try:
            await handler(bot, message)
        except (RetryLater, Undeliverable):
            raise
        except Exception as exc:
            verdict = classify(exc)
            if verdict is None:
                raise
            raise verdict from exc


async def _relay(bot: SuperfanBot, message: OutboxMessage) -> None:
    """A staff answer to a fan: a DM to ``recipient`` (the fan's Discord user id), ``payload["text"]``."""
    text = str(message.payload.get("text") or "")
    if not text.strip():
        raise Undeliverable("empty message")
    try:
        user_id = int(message.recipient)
    except ValueError:
        raise Undeliverable("recipient is not a Discord user id") from None
    channel = await bot.create_dm(discord.Object(user_id))
    for part, piece in enumerate(chunks(text)):
        await channel.send(piece, nonce=nonce_of(message.idempotency_key, part))


register("relay", _relay)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
