"""The ``superfan`` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli_shell import CatalogueGroup, LazyTyper, confirm
from bot.cli_support import (
    command,
    console,
    current_config,
    now_from,
    print_json,
    progress_bar,
    remember_options,
)
from bot.i18n import t

if TYPE_CHECKING:

    from rich.console import Console


    out: Console  # made on first use: see __getattr__
    err: Console


class SuperfanGroup(CatalogueGroup):
    """``superfan``. Commands written in other modules are listed here and imported only when run
    (or asked for help): each costs the others nothing at start-up. Their help comes from
    ``[help.*]`` in ``bot/i18n/<locale>.cli.toml`` (see :mod:`bot.cli_i18n`)."""

    lazy_commands = {
        "digest": "bot.digest_cli:digest_command",
        "reply": "bot.inbox_cli:reply",
        "tiers": "bot.tiers_cli:tiers_command",
        "inbox": "bot.inbox_cli:inbox_app",
        "dead-letters": "bot.dead_letters_cli:dead_letters_app",
        "drop": "bot.drops_cli:drop_app",
        "demo": "bot.demo.command:demo_command",
    }


app = LazyTyper(cls=SuperfanGroup, add_completion=False, no_args_is_help=True)  # commands built when used
def __getattr__(name: str) -> Console:
    """``from bot.cli import out, err``: the consoles, made when first asked for."""
    if name in ("out", "err"):
        return console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@app.callback()
def main_options(
    config: Annotated[str | None, typer.Option("--config", help="Path to superfan.toml.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """superfan: know your true fans (鐵粉), answer every DM, reward close friends."""
    from bot.log_safety import setup_logging

    remember_options(config)
    setup_logging(verbose)


@app.command()
@command
async def migrate() -> None:
    """Upgrade the configured database to the newest schema (Alembic)."""
    from crm.schema import migrate as run_migrations

    cfg = current_config()
    await run_migrations(cfg.database.url)
    console("out").print(t("cli.migrated", cfg.creator.locale, url=_safe_url(cfg.database.url)), highlight=False)


def _safe_url(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split('://')[0]}://…@{tail}" if sep else url


@app.command()
@command
async def fans(
    tier: Annotated[str | None, typer.Option("--tier", help="Only this tier (name or key, e.g. 鐵粉).")] = None,
    min_tier: Annotated[str | None, typer.Option("--min-tier", help="This tier and above.")] = None,
    top: Annotated[int | None, typer.Option("--top", min=1, help="Only the N best.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate scores at this ISO-8601 time.")] = None,
) -> None:
    """Fans ranked by today's score."""
    from bot import render_cli
    from bot.app import open_crm
    from crm.profiles import fan_documents, ranked_fan_chunks, ranked_fans

    async with open_crm(current_config()) as crm:
        when = now_from(now)
        rules = crm.settings.tiers
        only, least = rules.resolve(tier) if tier else None, rules.resolve(min_tier) if min_tier else None
        async with crm.read() as session:
            if as_json:  # written as the documents are built: every fan's at once took 1.6 GB at 100k
                chunks = ranked_fan_chunks(session, crm.settings, when, tier=only, min_tier=least, top=top)
                await render_cli.write_json_list(sys.stdout, (
                    await fan_documents(session, chunk, crm.settings, when, interactions=None) async for chunk in chunks))
                return
            found = await ranked_fans(session, crm.settings, when, tier=only, min_tier=least, top=top)
            docs = await fan_documents(session, found, crm.settings, when, interactions=None)
    render_cli.fans_table(console("out"), docs, crm.settings.locale)


@app.command()
@command
async def fan(
    query: Annotated[str, typer.Argument(help="Fan id, platform:external_id, or a display name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="How many recent interactions.")] = 20,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate the score at this ISO-8601 time.")] = None,
) -> None:
    """One fan's history, score (explained), preferences and notes."""
    from bot.app import open_crm
    from crm.identity import find_fan
    from crm.profiles import fan_documents

    async with open_crm(current_config()) as crm:
        when = now_from(now)
        async with crm.read() as session:
            found = await find_fan(session, query, settings=crm.settings)
            (doc,) = await fan_documents(session, [found], crm.settings, when, interactions=limit)
    if as_json:
        print_json(doc)
    else:
        from bot import render_cli  # rich's tables: not for --json

        render_cli.fan_card(console("out"), doc, crm.settings.locale, crm.settings.tiers)


@app.command("import")
@command
async def import_(
    file: Annotated[Path, typer.Argument(help="CSV or JSONL file (see README: Import format).")],
    allow_new_kinds: Annotated[bool, typer.Option("--allow-new-kinds",
                                                  help="Take kinds superfan does not know (scored 0).")] = False,
) -> None:
    """Import interactions and purchases. A bad row rejects the whole file (exit 2)."""
    from rich.progress import TaskProgressColumn

    from bot.app import open_crm
    from bot.importer import import_file
    from crm.clock import utcnow

    async with open_crm(current_config()) as crm:
        with progress_bar(TaskProgressColumn()) as bar:  # the file is read, then recorded, chunk by chunk
            task = bar.add_task(t("cli.importing", crm.settings.locale), total=1.0)
            async with crm.sessions.begin() as session:
                result = await import_file(session, file, crm.settings, utcnow(), allow_new_kinds=allow_new_kinds,
                                           progress=lambda done: bar.update(task, completed=done))
    console("out").print(t("cli.imported", crm.settings.locale, stored=result.stored, duplicates=result.duplicates,
                new_fans=result.new_fans, moves=result.tier_moves), highlight=False)


@app.command()
@command
async def export(
    fmt: Annotated[str, typer.Option("--format", help="csv (Excel-ready), jsonl, or json (everything).")] = "csv",
    out_path: Annotated[Path | None, typer.Option("--out", help="File to write (default: stdout).")] = None,
) -> None:
    """Export everything stored: interactions (csv/jsonl, re-importable) or full fan records (json)."""
    from bot.app import open_crm
    from bot.exporter import FORMATS, write_export
    from crm.clock import utcnow
    from crm.errors import CrmError

    if fmt not in FORMATS:
        raise CrmError(f"--format must be csv, jsonl or json, not {fmt!r}", code="cli.bad_format", format=fmt)
    async with open_crm(current_config()) as crm:
        sink = out_path.open("w", encoding="utf-8-sig" if fmt == "csv" else "utf-8", newline="") \
            if out_path else sys.stdout
        try:
            async with crm.read() as session:
                count = await write_export(session, crm.settings, fmt, sink, utcnow())
        finally:
            if out_path:
                sink.close()
    if out_path:
        console("out").print(t("cli.exported", crm.settings.locale, count=count, path=out_path), highlight=False)


@app.command()
@command
async def merge(
    keep: Annotated[str, typer.Argument(help="The fan to keep (id, platform:id or name).")],
    other: Annotated[str, typer.Argument(help="The fan merged into it and removed.")],
) -> None:
    """Merge two fan records that are one person (history, score, notes combined)."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.identity import find_fan
    from crm.merge import merge_fans

    async with open_crm(current_config()) as crm:
        async with crm.sessions.begin() as session:
            a = await find_fan(session, keep)
            b = await find_fan(session, other)
            await merge_fans(session, crm.settings, a.id, b.id, now=utcnow())
            name = a.display_name
    console("out").print(t("cli.merged", crm.settings.locale, keep=a.id, other=b.id, name=name), highlight=False)


@app.command()
@command
async def forget(
    query: Annotated[str, typer.Argument(help="The fan to erase (id, platform:id or name).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase everything stored about a fan (a PDPA/GDPR erasure request). Irreversible."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.identity import find_fan
    from crm.privacy import forget_fan

    async with open_crm(current_config()) as crm:
        locale = crm.settings.locale
        async with crm.read() as session:
            found = await find_fan(session, query)
            fan_id, name = found.id, found.display_name
        if not yes and not confirm(t("cli.forget_ask", locale, id=fan_id, name=name), locale):
            raise typer.Exit(1)
        async with crm.sessions.begin() as session:
            forgotten = await forget_fan(session, crm.settings, fan_id, utcnow())
    key = "cli.forgotten_kept_opt_out" if forgotten.kept_opt_out else "cli.forgotten"
    console("out").print(t(key, locale, id=fan_id, rows=forgotten.rows), highlight=False)


@app.command()
@command
async def rescore() -> None:
    """Recompute every fan's points and score after changing weights, caps or the half-life."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.rescore import rescore as rescore_all

    async with open_crm(current_config()) as crm:
        with progress_bar() as bar:
            task = bar.add_task(t("cli.rescoring", crm.settings.locale), total=None)
            async with crm.sessions() as session:  # committed batch by batch: webhooks go on meanwhile
                result = await rescore_all(session, crm.settings, utcnow(),
                                           progress=lambda n: bar.advance(task, n))
    console("out").print(t("cli.rescored", crm.settings.locale, fans=result.fans, interactions=result.interactions,
                moves=len(result.tier_moves)), highlight=False)


@app.command()
@command
async def stats(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="How many top fans to show.")] = 10,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate at this ISO-8601 time.")] = None,
) -> None:
    """Fans per tier, true fans against the goal (1000 true fans), and the top fans."""
    from bot import render_cli
    from bot.app import open_crm
    from crm.stats import community_stats

    async with open_crm(current_config()) as crm:
        async with crm.read() as session:
            data = await community_stats(session, crm.settings, now_from(now), top=top)
    if as_json:
        print_json(data)
    else:
        render_cli.stats(console("out"), data, crm.settings.locale)


@app.command()
@command
async def pin(
    query: Annotated[str, typer.Argument(help="The fan (id, platform:id or name).")],
    tier: Annotated[str | None, typer.Argument(help="Tier to pin to (e.g. 摯友); omit with --unpin.")] = None,
    unpin: Annotated[bool, typer.Option("--unpin", help="Remove the pin; the score decides again.")] = False,
    by: Annotated[str, typer.Option("--by", help="Who pins (recorded).")] = "cli",
) -> None:
    """Pin a fan to a tier (a close-friends list the score does not override), or unpin."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.errors import CrmError
    from crm.identity import find_fan
    from crm.tiers_service import pin as pin_tier

    if (tier is None) != unpin:
        raise CrmError("give a tier to pin to, or --unpin", code="cli.pin_needs_tier")
    async with open_crm(current_config()) as crm:
        async with crm.sessions.begin() as session:
            found = await find_fan(session, query)
            key = None if unpin else crm.settings.tiers.resolve(tier or "")
            await pin_tier(session, crm.settings, found.id, key, by=by, now=utcnow())
            name = crm.settings.tiers.name(found.tier, crm.settings.locale)
    console("out").print(t("cli.pinned", crm.settings.locale, id=found.id, name=found.display_name, tier=name), highlight=False)


@app.command()
@command
async def run(
    sandbox: Annotated[bool, typer.Option("--sandbox", help="LINE and Discord as local emulators.")] = False,
) -> None:
    """Run the web app (LINE webhook, purchase hook, /healthz) and the enabled adapters until Ctrl-C."""
    from bot.app import run as run_app

    if sandbox:
        from bot.demo.sandbox import run_sandboxed

        cfg = current_config()
        await run_sandboxed(cfg, lambda text: console("err").print(text, highlight=False, markup=False,
                                                                   soft_wrap=True))
        console("err").print(t("line.cli.stopped", cfg.creator.locale), highlight=False, markup=False, soft_wrap=True)
        return
    cfg = current_config(need_secrets=True)
    for name in ("bot", "crm"):
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    def ready(where: str) -> None:
        from bot.run_status import announcement

        for line in [*announcement(cfg, where, cfg.creator.locale), t("run.ready", cfg.creator.locale)]:
            console("err").print(line, highlight=False, markup=False, soft_wrap=True)

    await run_app(cfg, on_ready=ready)
    console("err").print(t("line.cli.stopped", cfg.creator.locale), highlight=False, markup=False, soft_wrap=True)


@app.command("link-code")
@command
async def link_code(
    who: Annotated[str, typer.Argument(help="discord:USER_ID (or any fan: id, platform:id, name).")],
) -> None:
    """Issue a one-time code; the fan sends `綁定 CODE` (or `link CODE`) to the LINE account to merge."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.errors import CrmError
    from crm.fan_actions import ensure_fan, issue_link_code
    from crm.identity import find_fan

    platform, sep, external_id = who.strip().partition(":")
    platform, external_id = platform.strip().lower(), external_id.strip()
    async with open_crm(current_config()) as crm:
        now = utcnow()
        async with crm.sessions.begin() as session:
            if sep and platform == "discord":
                if not external_id.isdigit():
                    raise CrmError(f"{who!r}: a Discord user id is a number, e.g. discord:123456789012345678",
                                   code="cli.bad_discord_id", who=who)
                fan_id = await ensure_fan(session, crm.settings, platform="discord", external_id=external_id,
                                          display_name=None, now=now)
            else:
                fan_id, platform = (await find_fan(session, who)).id, "cli"
            code = await issue_link_code(session, fan_id, platform=platform, now=now)
    console("out").print(t("line.cli.link_code", crm.settings.locale, code=code, fan=fan_id), highlight=False, soft_wrap=True)


line_app = typer.Typer(no_args_is_help=True, help="LINE Official Account tools.")
app.add_typer(line_app, name="line")


@app.command()
def report(out_path: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("superfan-report.html"),
           now: Annotated[str | None, typer.Option("--now", help="Build it as at this ISO-8601 time.")] = None) -> None:
    """The community's figures and charts as one HTML file that opens offline (default ./superfan-report.html)."""
    from bot.report import report_command

    command(report_command)(out_path, now)


@line_app.command("richmenu")
@command
async def line_richmenu(
    image: Annotated[Path, typer.Argument(help="PNG or JPEG, e.g. 2500×843: three columns, left to right "
                                               "check in, my data, link Discord.", exists=True, dir_okay=False)],
) -> None:
    """Create the LINE menu under the chat (check in / my data / link Discord) from IMAGE and make it the default."""
    from bot.line_adapter.richmenu import inspect_image, install

    cfg = current_config()
    data = image.read_bytes()
    found = inspect_image(data)  # refused before anything is created
    token = cfg.secret(cfg.line.channel_access_token_env)
    menu_id = await install(cfg.line.api_base, token, data, cfg.creator.locale)
    console("out").print(t("line.cli.richmenu_done", cfg.creator.locale, id=menu_id, width=found.width, height=found.height),
              highlight=False, soft_wrap=True)


def main() -> None:
    """The ``superfan`` script: the collector waits while a command starts, and skips exit (bot.cli_gc)."""
    from bot import cli_gc

    cli_gc.pause()
    try:
        app()
    finally:
        cli_gc.skip_at_exit()
