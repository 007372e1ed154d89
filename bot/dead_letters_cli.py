"""``superfan dead-letters``: list the events superfan kept because it could not understand them,
and replay them with today's code (after an upgrade that understands them).

Registered from ``bot/cli.py``; the shared helpers (config, exit codes) are taken from there when
a command runs, so importing this module does not import the CLI.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table

from bot.i18n import t

log = logging.getLogger(__name__)
dead_letters_app = typer.Typer(help="Events superfan could not understand, kept to replay after an upgrade.")
out = Console()


@dead_letters_app.callback(invoke_without_command=True)
def dead_letters(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List dead letters: id, time (creator's timezone), event type, reason. Never the event itself."""
    if ctx.invoked_subcommand is None:
        _run(_list, as_json)


@dead_letters_app.command("replay")
def replay(
    ctx: typer.Context,
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids (see the list).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every dead letter not yet replayed.")] = False,
) -> None:
    """Parse the given dead letters again and record what this version understands."""
    if not ids and not replay_all:
        from bot.cli_shell import locale_of

        raise typer.BadParameter(t("help.errors.replay_what", locale_of(ctx)))
    _run(_replay, ids or [], replay_all)


def _run(fn: Any, *args: Any) -> Any:
    from bot.cli_support import command  # the CLI's exit codes and one-line errors

    return command(fn)(*args)


async def _list(as_json: bool) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config
    from crm.dead_letters import listing

    config = current_config()
    zone = ZoneInfo(config.creator.timezone)
    async with open_crm(config) as crm, crm.read() as session:
        letters = await listing(session)
    rows: list[dict[str, Any]] = [{"id": d.id, "platform": d.platform, "event_id": d.event_id, "type": d.event_type, "reason": d.reason,
             "received_at": d.received_at.astimezone(zone).isoformat(),
             "replayed_at": d.replayed_at.astimezone(zone).isoformat() if d.replayed_at else None}
            for d in letters]
    locale = config.creator.locale
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        out.print(t("cli.dead_letters_none", locale), highlight=False)
        return
    table = Table(title=t("cli.dead_letters_title", locale, count=len(rows)))
    for key in ("col_id", "col_time", "col_type", "col_reason", "col_replayed"):
        table.add_column(t(f"cli.{key}", locale))
    for row in rows:
        table.add_row(str(row["id"]), _local(row["received_at"]), row["type"] or "?", row["reason"],
                      _local(row["replayed_at"] or ""))
    out.print(table)


def _local(iso: str) -> str:
    """``2026-11-22 12:00:00`` from an ISO time already in the creator's timezone."""
    return iso[:19].replace("T", " ")


async def _replay(ids: list[int], replay_all: bool) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config
    from bot.line_adapter.events import plan_event
    from bot.line_adapter.webhook import Unusable, parse_event
    from bot.writer import Action, GroupWriter
    from crm.dead_letters import listing, mark_replayed

    config = current_config()
    locale = config.creator.locale
    keywords = tuple(config.checkin.keywords)
    async with open_crm(config) as crm:
        async with crm.read() as session:
            letters = await listing(session, ids, include_replayed=not replay_all)
        writer = GroupWriter(crm.sessions, crm.settings)
        await writer.start()
        done = 0
        try:
            for letter in letters:
                try:
                    parsed = parse_event(json.loads(letter.raw))
                except (ValueError, RecursionError):
                    parsed = Unusable(None, letter.event_id, letter.event_type, "not valid JSON")
                if isinstance(parsed, Unusable):
                    out.print(t("cli.dead_letter_still", locale, id=letter.id, reason=parsed.reason), highlight=False)
                    continue
                plan = None if parsed is None else plan_event(parsed, received_at=0.0, settings=crm.settings,
                                                              checkin_keywords=keywords)
                ops = list(plan.ops) if plan else []

                async def mark(session: Any, now: Any, letter_id: int = letter.id) -> None:
                    await mark_replayed(session, letter_id, now)

                await writer.submit([*ops, Action("dead letter replayed", mark)])  # one commit: recorded and marked
                done += 1
        finally:
            await writer.close()
    out.print(t("cli.dead_letters_replayed", locale, done=done, total=len(letters)), highlight=False)
