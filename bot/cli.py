"""The ``superfan`` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input."""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bot.cli_shell import CatalogueGroup, LazyTyper, confirm
from bot.i18n import t

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

    from bot.config import Config

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
T = TypeVar("T")
_state: dict[str, Any] = {"config": None}
_consoles: dict[str, Console] = {}


def _console(name: str) -> Console:
    """``out`` (stdout) or ``err`` (stderr), made on first use: rich costs a command that prints
    nothing through it (``--json``) its import."""
    if name not in _consoles:
        from rich.console import Console

        class Quiet(Console):
            def on_broken_pipe(self) -> None:
                """The reader left (``| head``): end as every other output does (exit 141, see bot.cli_shell),
                not with rich's own exit 1."""
                self.quiet = True
                raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")

        _consoles[name] = Quiet() if name == "out" else Quiet(stderr=True, soft_wrap=True)
    return _consoles[name]


def __getattr__(name: str) -> Console:
    """``from bot.cli import out, err``: the consoles, made when first asked for."""
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Failure(Exception):
    """A runtime failure with a one-line message (exit 1)."""


@app.callback()
def main_options(
    config: Annotated[str | None, typer.Option("--config", help="Path to superfan.toml.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """superfan: know your true fans (鐵粉), answer every DM, reward close friends."""
    from bot.log_safety import setup_logging

    _state["config_path"] = config
    _state["config"] = None
    setup_logging(verbose)


def _config(*, need_secrets: bool = False) -> Config:
    """The config, loaded once. Only commands that talk to LINE or Discord (``run``) pass
    ``need_secrets``: then a missing secret is reported with every other problem in the file."""
    from bot.config import load_config, require_secrets

    if _state["config"] is None:
        _state["config"] = load_config(_state.get("config_path"), need_secrets=need_secrets)
    elif need_secrets:
        require_secrets(_state["config"])
    return _state["config"]


def command(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command and map failures to the documented exit codes and one stderr line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from bot.config import ConfigError
        from crm.errors import CrmError

        try:
            return asyncio.run(fn(*args, **kwargs))
        except (typer.Exit, typer.Abort, BrokenPipeError):  # a closed pipe: the reader left (bot.cli_shell)
            raise
        except (ConfigError, CrmError) as exc:
            from bot.i18n.errors import error_text

            text = error_text(exc, _locale()) if isinstance(exc, CrmError) else str(exc)
            for line in text.splitlines():
                _console("err").print(t("help.ui.error", _locale(), message=line), highlight=False, markup=False)
            raise typer.Exit(2) from None
        except (Failure, OSError) as exc:
            _console("err").print(t("help.ui.error", _locale(), message=exc), highlight=False, markup=False)
            raise typer.Exit(1) from None
        except Exception as exc:
            if os.environ.get("SUPERFAN_DEBUG"):
                raise
            from bot.write_failures import brief, transient

            # No exception text as it stands: it can quote what fans wrote (brief() keeps what is safe).
            text = t("cli.storage_busy", _locale()) if transient(exc) else t("cli.unexpected", _locale(),
                                                                              error=brief(exc))
            _console("err").print(t("help.ui.error", _locale(), message=text), highlight=False, markup=False)
            raise typer.Exit(1) from None

    return wrapper


def _locale() -> str:
    from bot.config import ConfigError

    try:
        return _config().creator.locale
    except ConfigError:
        return "zh-TW"


def _now(text: str | None) -> datetime:
    from crm.clock import parse_iso, utcnow
    from crm.errors import CrmError

    if not text:
        return utcnow()
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise CrmError(f"--now: {exc}", code="cli.bad_now", value=text) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _progress(count: ProgressColumn | None = None) -> Progress:
    """A bar on stderr while a long command works (only on a terminal); ``count`` shows how far
    (default: done/total items)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = _console("err")
    return Progress(TextColumn("{task.description}"), BarColumn(), count or MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


@app.command()
@command
async def migrate() -> None:
    """Upgrade the configured database to the newest schema (Alembic)."""
    from crm.schema import migrate as run_migrations

    cfg = _config()
    await run_migrations(cfg.database.url)
    _console("out").print(t("cli.migrated", cfg.creator.locale, url=_safe_url(cfg.database.url)), highlight=False)


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

    async with open_crm(_config()) as crm:
        when = _now(now)
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
    render_cli.fans_table(_console("out"), docs, crm.settings.locale)


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

    async with open_crm(_config()) as crm:
        when = _now(now)
        async with crm.read() as session:
            found = await find_fan(session, query, settings=crm.settings)
            (doc,) = await fan_documents(session, [found], crm.settings, when, interactions=limit)
    if as_json:
        _print_json(doc)
    else:
        from bot import render_cli  # rich's tables: not for --json

        render_cli.fan_card(_console("out"), doc, crm.settings.locale, crm.settings.tiers)


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

    async with open_crm(_config()) as crm:
        with _progress(TaskProgressColumn()) as bar:  # the file is read, then recorded, chunk by chunk
            task = bar.add_task(t("cli.importing", crm.settings.locale), total=1.0)
            async with crm.sessions.begin() as session:
                result = await import_file(session, file, crm.settings, utcnow(), allow_new_kinds=allow_new_kinds,
                                           progress=lambda done: bar.update(task, completed=done))
    _console("out").print(t("cli.imported", crm.settings.locale, stored=result.stored, duplicates=result.duplicates,
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
    async with open_crm(_config()) as crm:
        sink = out_path.open("w", encoding="utf-8-sig" if fmt == "csv" else "utf-8", newline="") \
            if out_path else sys.stdout
        try:
            async with crm.read() as session:
                count = await write_export(session, crm.settings, fmt, sink, utcnow())
        finally:
            if out_path:
                sink.close()
    if out_path:
        _console("out").print(t("cli.exported", crm.settings.locale, count=count, path=out_path), highlight=False)


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

    async with open_crm(_config()) as crm:
        async with crm.sessions.begin() as session:
            a = await find_fan(session, keep)
            b = await find_fan(session, other)
            await merge_fans(session, crm.settings, a.id, b.id, now=utcnow())
            name = a.display_name
    _console("out").print(t("cli.merged", crm.settings.locale, keep=a.id, other=b.id, name=name), highlight=False)


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

    async with open_crm(_config()) as crm:
        locale = crm.settings.locale
        async with crm.read() as session:
            found = await find_fan(session, query)
            fan_id, name = found.id, found.display_name
        if not yes and not confirm(t("cli.forget_ask", locale, id=fan_id, name=name), locale):
            raise typer.Exit(1)
        async with crm.sessions.begin() as session:
            forgotten = await forget_fan(session, crm.settings, fan_id, utcnow())
    key = "cli.forgotten_kept_opt_out" if forgotten.kept_opt_out else "cli.forgotten"
    _console("out").print(t(key, locale, id=fan_id, rows=forgotten.rows), highlight=False)


@app.command()
@command
async def rescore() -> None:
    """Recompute every fan's points and score after changing weights, caps or the half-life."""
    from bot.app import open_crm
    from crm.clock import utcnow
    from crm.rescore import rescore as rescore_all

    async with open_crm(_config()) as crm:
        with _progress() as bar:
            task = bar.add_task(t("cli.rescoring", crm.settings.locale), total=None)
            async with crm.sessions() as session:  # committed batch by batch: webhooks go on meanwhile
                result = await rescore_all(session, crm.settings, utcnow(),
                                           progress=lambda n: bar.advance(task, n))
    _console("out").print(t("cli.rescored", crm.settings.locale, fans=result.fans, interactions=result.interactions,
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

    async with open_crm(_config()) as crm:
        async with crm.read() as session:
            data = await community_stats(session, crm.settings, _now(now), top=top)
    if as_json:
        _print_json(data)
    else:
        render_cli.stats(_console("out"), data, crm.settings.locale)


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
    async with open_crm(_config()) as crm:
        async with crm.sessions.begin() as session:
            found = await find_fan(session, query)
            key = None if unpin else crm.settings.tiers.resolve(tier or "")
            await pin_tier(session, crm.settings, found.id, key, by=by, now=utcnow())
            name = crm.settings.tiers.name(found.tier, crm.settings.locale)
    _console("out").print(t("cli.pinned", crm.settings.locale, id=found.id, name=found.display_name, tier=name), highlight=False)


@app.command()
@command
async def run(
    sandbox: Annotated[bool, typer.Option("--sandbox", help="LINE and Discord as local emulators.")] = False,
) -> None:
    """Run the web app (LINE webhook, purchase hook, /healthz) and the enabled adapters until Ctrl-C."""
    from bot.app import run as run_app

    if sandbox:
        from bot.demo.sandbox import run_sandboxed

        cfg = _config()
        await run_sandboxed(cfg, lambda text: _console("err").print(text, highlight=False, markup=False,
                                                                   soft_wrap=True))
        _console("err").print(t("line.cli.stopped", cfg.creator.locale), highlight=False, markup=False, soft_wrap=True)
        return
    cfg = _config(need_secrets=True)
    for name in ("bot", "crm"):
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    def ready(where: str) -> None:
        from bot.run_status import announcement

        for line in [*announcement(cfg, where, cfg.creator.locale), t("run.ready", cfg.creator.locale)]:
            _console("err").print(line, highlight=False, markup=False, soft_wrap=True)

    await run_app(cfg, on_ready=ready)
    _console("err").print(t("line.cli.stopped", cfg.creator.locale), highlight=False, markup=False, soft_wrap=True)


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
    async with open_crm(_config()) as crm:
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
    _console("out").print(t("line.cli.link_code", crm.settings.locale, code=code, fan=fan_id), highlight=False, soft_wrap=True)


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

    cfg = _config()
    data = image.read_bytes()
    found = inspect_image(data)  # refused before anything is created
    token = cfg.secret(cfg.line.channel_access_token_env)
    menu_id = await install(cfg.line.api_base, token, data, cfg.creator.locale)
    _console("out").print(t("line.cli.richmenu_done", cfg.creator.locale, id=menu_id, width=found.width, height=found.height),
              highlight=False, soft_wrap=True)


def main() -> None:
    app()

