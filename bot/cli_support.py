"""What every ``superfan`` command shares: the config it was started with, the consoles, the exit
codes and one-line errors (:func:`command`), ``--now``, JSON output and progress bars.

Command modules (``bot/cli.py`` and the ``bot/*_cli.py`` it loads when used) import these; nothing
here imports a command, rich or the database until it is asked for.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from bot.i18n import t

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

    from bot.config import Config


T = TypeVar("T")
_state: dict[str, Any] = {"config": None}
_consoles: dict[str, Console] = {}


def console(name: str) -> Console:
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


class Failure(Exception):
    """A runtime failure with a one-line message (exit 1)."""


def current_config(*, need_secrets: bool = False) -> Config:
    """The config, loaded once. Only commands that talk to LINE or Discord (``run``) pass
    ``need_secrets``: then a missing secret is reported with every other problem in the file."""
    from bot import cli_gc
    from bot.config import load_config, require_secrets

    if _state["config"] is None:
        try:
            _state["config"] = load_config(_state.get("config_path"), need_secrets=need_secrets)
        finally:
            cli_gc.resume()  # the command has imported what it needs: collect as usual from here
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

            text = error_text(exc, locale()) if isinstance(exc, CrmError) else exc.text(locale())
            for line in text.splitlines():
                console("err").print(t("help.ui.error", locale(), message=line), highlight=False, markup=False)
            raise typer.Exit(2) from None
        except (Failure, OSError) as exc:
            console("err").print(t("help.ui.error", locale(), message=exc), highlight=False, markup=False)
            raise typer.Exit(1) from None
        except Exception as exc:
            if os.environ.get("SUPERFAN_DEBUG"):
                raise
            from bot.write_failures import brief, transient

            # No exception text as it stands: it can quote what fans wrote (brief() keeps what is safe).
            text = t("cli.storage_busy", locale()) if transient(exc) else t("cli.unexpected", locale(),
                                                                              error=brief(exc))
            console("err").print(t("help.ui.error", locale(), message=text), highlight=False, markup=False)
            raise typer.Exit(1) from None

    return wrapper


def locale() -> str:
    from bot.config import ConfigError

    try:
        return current_config().creator.locale
    except ConfigError as exc:  # the config's own locale if it was read that far, else zh-TW
        return exc.locale


def now_from(text: str | None) -> datetime:
    from crm.clock import parse_iso, utcnow
    from crm.errors import CrmError

    if not text:
        return utcnow()
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise CrmError(f"--now: {exc}", code="cli.bad_now", value=text) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def progress_bar(count: ProgressColumn | None = None) -> Progress:
    """A bar on stderr while a long command works (only on a terminal); ``count`` shows how far
    (default: done/total items)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = console("err")
    return Progress(TextColumn("{task.description}"), BarColumn(), count or MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


def remember_options(config_path: str | None) -> None:
    """The global ``--config``: the config is loaded from it when a command first asks."""
    _state["config_path"] = config_path
    _state["config"] = None
