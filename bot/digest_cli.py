"""``superfan digest [--json] [--now ISO]``: the daily digest, on demand, in the shape the staff
channel gets it.

Registered from ``bot/cli.py``; the shared helpers (config, exit codes, ``--now``) are taken from
there when the command runs, so importing this module does not import the CLI. It only reads
(nothing is claimed or sent): ``superfan run`` posts the scheduled digest.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer


def digest_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (DESIGN.md digest shape).")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Build it as at this ISO-8601 time.")] = None,
) -> None:
    """Who is waiting for an answer, the reply promise, tier changes, the care list, the true-fans goal."""
    from bot.cli_support import command

    command(_digest)(as_json, now)


async def _digest(as_json: bool, now: str | None) -> None:
    from bot.app import open_crm
    from bot.cli import out
    from bot.cli_support import current_config, now_from, print_json
    from bot.render_digest import print_digest
    from crm.digest import build_digest

    async with open_crm(current_config()) as crm:
        when = now_from(now)
        async with crm.read() as session:
            data: dict[str, Any] = (await build_digest(session, crm.settings, when)).as_json()
    if as_json:
        print_json(data)
    else:
        print_digest(out, data, crm.settings.locale)
