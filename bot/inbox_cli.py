"""``superfan reply``, ``superfan inbox [--json]`` and ``superfan inbox done``: the inbox from a terminal.

``superfan reply QUERY TEXT`` answers the fan's open conversation exactly as a staff message in
the Discord thread does (``crm.conversations.note_reply``: the wait ends, the relay is queued in
the same transaction), then says what happened to the message. When a ``superfan run`` answers on
``[web]``'s ``/healthz``, its drainer sends the row (it looks every couple of seconds); the
command waits briefly to report the result. With no server, the command sends the row itself
(``bot.outbox_cli_send``). Both may try: the outbox's conditional claim lets only one send it.

Registered from ``bot/cli.py``; the CLI's helpers (config, exit codes) are taken from there when a
command runs, so importing this module does not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import aiohttp
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bot.config import WebConfig
from bot.i18n import t

log = logging.getLogger(__name__)
inbox_app = typer.Typer(help="Conversations waiting for a reply; mark one answered elsewhere.")
out = Console()
#: How long ``reply`` waits for a running server to send (its drainer polls every ~2 s).
SERVER_WAIT_S = 6.0
HEALTH_TIMEOUT_S = 1.0
By = "cli"


@dataclass(frozen=True)
class Delivery:
    """What became of a queued message: ``sent``, ``failed`` (for good), ``pending`` (with the last error)."""

    status: str
    error: str | None


@inbox_app.callback(invoke_without_command=True)
def inbox(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Pretend it is this ISO time (overdue is "
                                                          "judged against it).")] = None,
) -> None:
    """Conversations waiting for a reply: overdue first, then higher tiers, then the longest wait."""
    if ctx.invoked_subcommand is None:
        _run(_list, as_json, now)


@inbox_app.command("done")
def done(query: Annotated[str, typer.Argument(help="The fan: name, id, line:U… or discord:….")]) -> None:
    """Mark the fan's open conversation as answered elsewhere (e.g. in LINE Official Account Manager,
    whose replies superfan cannot see)."""
    _run(_done, query)


def reply(
    query: Annotated[str, typer.Argument(help="The fan: name, id, line:U… or discord:….")],
    text: Annotated[str, typer.Argument(help="What to send to the fan.")],
) -> None:
    """Answer the fan's open conversation on their own platform (LINE or Discord)."""
    _run(_reply, query, text)


def _run(fn: Any, *args: Any) -> Any:
    from bot.cli_support import command  # the CLI's exit codes and one-line errors

    return command(fn)(*args)


def _say(key: str, locale: str, **params: object) -> None:
    out.print(t(f"cli.inbox.{key}", locale, **params), highlight=False, markup=False, soft_wrap=True)


def _platform(platform: str, locale: str) -> str:
    text = t(f"discord.platform.{platform}", locale)
    return platform if text.startswith("discord.platform.") else text


async def _list(as_json: bool, now_text: str | None) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config, now_from, print_json
    from crm.profiles import iso
    from crm.sla import unanswered

    config = current_config()
    now, locale, zone = now_from(now_text), config.creator.locale, ZoneInfo(config.creator.timezone)
    async with open_crm(config) as crm, crm.read() as session:
        items = await unanswered(session, crm.settings, now)
        rules = crm.settings.tiers
    if as_json:
        print_json([{"conversation_id": u.conversation_id, "fan_id": u.fan_id, "display_name": u.display_name,
                      "platform": u.platform, "tier": rules.name(u.tier, locale), "tier_key": u.tier,
                      "waiting_since": iso(u.waiting_since, zone), "due_at": iso(u.due_at, zone),
                      "overdue": u.overdue, "hours_waiting": u.hours_waiting} for u in items])
        return
    if not items:
        _say("none", locale)
        return
    table = Table(title=t("cli.inbox.title", locale, count=len(items)))
    for col in ("conversation", "fan", "platform", "tier", "waiting", "due", "overdue"):
        table.add_column(t(f"cli.inbox.col_{col}", locale))
    for u in items:
        table.add_row(f"#{u.conversation_id}", u.display_name, _platform(u.platform, locale), rules.name(u.tier, locale),
                      u.waiting_since.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                      u.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                      t("cli.inbox.overdue", locale) if u.overdue else "")
    out.print(table)


async def _open(session: Any, query: str) -> tuple[Any, Any]:
    """The fan a query names and their open conversation (a CrmError when there is none)."""
    from crm.conversations import open_conversation
    from crm.errors import CrmError
    from crm.identity import find_fan

    fan = await find_fan(session, query)
    conv = await open_conversation(session, fan.id)
    if conv is None:
        raise CrmError(f"fan #{fan.id} has no open conversation", code="conversation.none_open",
                       name=fan.display_name)
    return fan, conv


async def _done(query: str) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config
    from crm.clock import utcnow
    from crm.conversations import resolve

    config = current_config()
    async with open_crm(config) as crm, crm.sessions.begin() as session:
        fan, conv = await _open(session, query)
        await resolve(session, crm.settings, conv.id, how="elsewhere", by=By, now=utcnow())
        name = fan.display_name
    _say("done", config.creator.locale, name=name)


async def _reply(query: str, text: str) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config
    from crm.clock import utcnow
    from crm.conversations import note_reply

    config = current_config()
    locale = config.creator.locale
    async with open_crm(config) as crm:
        async with crm.sessions.begin() as session:
            fan, conv = await _open(session, query)
            row_id = await note_reply(session, crm.settings, conv.id, text=text, by=By, now=utcnow(), source="cli")
            name, platform = fan.display_name, conv.platform
        if await server_running(config.web):
            result = await wait_for_delivery(crm, row_id, SERVER_WAIT_S)
            if result.status == "pending":
                _say("queued_server", locale, id=row_id)
                return
        else:
            await send_now(crm, platform)
            result = await delivery(crm, row_id)
    if result.status == "sent":
        _say("sent", locale, name=name, platform=_platform(platform, locale))
    elif result.status == "failed":
        _say("failed", locale, id=row_id, reason=result.error or "?")
        raise typer.Exit(1)
    else:
        _say("retrying", locale, id=row_id, reason=result.error or "?")


async def server_running(web: WebConfig) -> bool:
    """Whether a ``superfan run`` answers on ``[web]`` (any answer from ``/healthz``, healthy or not)."""
    if not web.enabled:
        return False
    host = "127.0.0.1" if web.host in ("0.0.0.0", "", "::") else web.host
    url = f"http://{host}:{web.port}/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as http, \
                http.get(url) as response:
            return response.status in (200, 503)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def send_now(crm: Any, platform: str) -> None:
    """Send what is due on ``platform`` from this process (no server is running)."""
    from bot.outbox_cli_send import send_pending

    await send_pending(crm, platform)


async def delivery(crm: Any, row_id: int) -> Delivery:
    """The outbox row's state now."""
    from crm.models import Outbox

    async with crm.read() as session:
        status, error = (await session.execute(select(Outbox.status, Outbox.last_error)
                                               .where(Outbox.id == row_id))).one()
    return Delivery("pending" if status == "sending" else status, error)


async def wait_for_delivery(crm: Any, row_id: int, timeout: float) -> Delivery:
    """Poll the row until it is sent or failed, or ``timeout`` passes (then: still pending)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await delivery(crm, row_id)
        if result.status != "pending" or loop.time() >= deadline:
            return result
        await asyncio.sleep(0.2)
