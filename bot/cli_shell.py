"""How ``superfan`` runs a command line: in the creator's language, loading only what the command needs.

:class:`CatalogueGroup` is the root command's class (``typer.Typer(cls=...)``). Its ``main``:

1. picks the language (:func:`bot.cli_i18n.cli_locale`) and gives every command in the tree help
   pages, usage lines and value errors from the catalogue (Click's and Typer's English never shows);
2. builds the commands listed in ``lazy_commands`` (``name → "module:object"``) only when one of
   them is run or asked for help, so ``superfan fan …`` does not import the inbox's HTTP client, the
   Discord library or the report's charts;
3. answers usage errors (exit 2), Ctrl-C (130) and a closed pipe, as when the output goes to
   ``head`` (141, like a Unix tool killed by SIGPIPE; nothing more is printed).
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NoReturn

import typer
from typer._click.exceptions import (
    BadOptionUsage,
    BadParameter,
    ClickException,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
    UsageError,
)
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit

from bot import cli_i18n, cli_values
from bot.i18n import DEFAULT_LOCALE, t

#: The exit status of a command whose reader went away (128 + SIGPIPE), as a shell reports ``yes | head``.
BROKEN_PIPE_EXIT = 141
_EXTRA_ARGS = re.compile(r"^Got unexpected extra argument(?:s|\(s\))? \((.*)\)$", re.DOTALL)


class _CatalogueCommand:
    """Help page and usage line from the catalogue (given to each command of the tree)."""

    catalogue_help = True

    def format_help(self, ctx: Any, formatter: Any) -> None:
        locale = locale_of(ctx)
        subs = []
        if isinstance(self, TyperGroup):
            for name in self.list_commands(ctx):
                sub = self.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    subs.append((name, cli_i18n.short_help(sub, locale)))
        formatter.write(cli_i18n.help_page(self, ctx, locale, subs))

    def get_usage(self, ctx: Any) -> str:
        return cli_i18n.usage_line(self, ctx, locale_of(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Click's parsing; a usage error raised without its command (a missing option value) gets it,
        so the answer can show the command's usage line."""
        try:
            result: list[str] = _inherited(self, "parse_args")(self, ctx, args)
        except UsageError as exc:
            if exc.ctx is None:
                exc.ctx, exc.cmd = ctx, self  # type: ignore[assignment]
            raise
        return result

    def get_help_option(self, ctx: Any) -> Any:
        """Click's ``--help``, its flag read without Typer's Pydantic (see :mod:`bot.cli_values`)."""
        option = _inherited(self, "get_help_option")(self, ctx)
        if option is not None:
            cli_values.install(option)
        return option


class _CatalogueGroupMixin(_CatalogueCommand):
    """A group whose unknown command is answered in the creator's language, with close matches."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = args[0]
        found = self.get_command(ctx, name)  # type: ignore[attr-defined]
        if found is not None or ctx.resilient_parsing:
            return (name if found else None), found, args[1:]
        if name.startswith("-"):
            self.parse_args(ctx, args)  # type: ignore[attr-defined]  # an unknown option says so itself
        from difflib import get_close_matches

        locale = locale_of(ctx)
        message = t("help.errors.no_such_command", locale, name=name)
        close = get_close_matches(name, self.list_commands(ctx))  # type: ignore[attr-defined]
        if close:
            message += t("help.errors.did_you_mean", locale, names=t("help.ui.sep", locale).join(close))
        raise UsageError(message, ctx)


_CLASSES: dict[type, type] = {}


def _inherited(obj: Any, name: str) -> Any:
    """Click's or Typer's own ``name`` of ``obj`` (what ``super()`` would find, for methods that are
    copied into classes made at run time, where ``super()`` cannot be used)."""
    mro = type(obj).__mro__
    ours = next(i for i, k in enumerate(mro) if k.__module__ == __name__ and name in vars(k))
    return next(vars(k)[name] for k in mro[ours + 1:] if name in vars(k))


def _localized_class(cls: type) -> type:
    """``cls`` with the catalogue's help and usage (and, for a group, its unknown-command answer).

    The methods are copied into a direct subclass: a command's class can only be swapped for one
    with the same layout, which a mixin base would change."""
    if getattr(cls, "catalogue_help", False):
        return cls
    if cls not in _CLASSES:
        mixin = _CatalogueGroupMixin if issubclass(cls, TyperGroup) else _CatalogueCommand
        methods = {name: value for klass in reversed(mixin.__mro__[:-1]) for name, value in vars(klass).items()
                   if not name.startswith("__")}
        _CLASSES[cls] = type(f"Catalogue{cls.__name__}", (cls,), {**methods, "__module__": __name__})
    return _CLASSES[cls]


def localize(cmd: Any, path: str) -> None:
    """Give ``cmd`` and everything under it catalogue help, catalogue value errors and their
    catalogue key (``path``); commands not built yet get theirs when they are."""
    cmd.__class__ = _localized_class(type(cmd))
    cmd.catalogue_path = path
    for param in cmd.params:
        cli_values.install(param)
    for name, sub in getattr(cmd, "commands", {}).items():
        localize(sub, name if path == cli_i18n.ROOT else f"{path} {name}")


def locale_of(ctx: Any) -> str:
    return getattr(ctx.find_root().command, "locale", DEFAULT_LOCALE) if ctx is not None else DEFAULT_LOCALE


class CatalogueGroup(_CatalogueGroupMixin, TyperGroup):
    """The root command: see the module docstring. Subclass it to fill ``lazy_commands``."""

    #: Commands built on first use: name → ``"module:attribute"``, a ``typer.Typer`` or a command function.
    lazy_commands: ClassVar[dict[str, str]] = {}
    #: The root Typer's own commands, built on first use (filled by :class:`LazyTyper`).
    deferred: ClassVar[dict[str, Callable[[], Any]]] = {}
    locale: str = DEFAULT_LOCALE

    def list_commands(self, ctx: Any) -> list[str]:
        return list(dict.fromkeys([*self.commands, *self.deferred, *self.lazy_commands]))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.deferred:
            self.commands[cmd_name] = self._named(cmd_name, self.deferred[cmd_name]())
        elif cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.commands[cmd_name] = self._named(cmd_name, self._build(cmd_name, self.lazy_commands[cmd_name]))
        return self.commands.get(cmd_name)

    @staticmethod
    def _named(name: str, built: Any) -> Any:
        built.name = name
        localize(built, name)
        return built

    @staticmethod
    def _build(name: str, spec: str) -> Any:
        module, _, attribute = spec.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            return typer.main.get_group(target)
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        return typer.main.get_command(single)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        locale = locale_of(ctx)
        subs = []
        for name in self.list_commands(ctx):
            # The list of commands comes from the catalogue: a lazy command is not built to describe it.
            known = cli_i18n.text(f"help.commands.{name}", locale)
            sub = self.commands.get(name) if known is None or name in self.commands else None
            if known is None and sub is None:
                sub = self.get_command(ctx, name)
            if sub is not None and sub.hidden:
                continue
            subs.append((name, known.split("\n", 1)[0] if known is not None else cli_i18n.short_help(sub, locale)))
        formatter.write(cli_i18n.help_page(self, ctx, locale, subs))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        self.locale = cli_i18n.cli_locale(args)
        localize(self, cli_i18n.ROOT)
        try:
            try:
                with self.make_context(cli_i18n.ROOT, args, **extra) as ctx:
                    result = self.invoke(ctx)
                sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
                if not standalone_mode:
                    return result
                sys.exit(0)
            except EOFError:
                print(file=sys.stderr)
                raise Abort() from None
            except KeyboardInterrupt:
                raise Exit(130) from None
            except ClickException as exc:
                if not standalone_mode:
                    raise
                show_usage_error(exc, self.locale)
                sys.exit(exc.exit_code)
        except Exit as exc:
            if not standalone_mode:
                return exc.exit_code
            sys.exit(exc.exit_code)
        except Abort:
            if not standalone_mode:
                raise
            print(t("help.ui.aborted", self.locale), file=sys.stderr)
            sys.exit(1)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            reader_gone()


class LazyTyper(typer.Typer):
    """A ``typer.Typer`` whose ``@app.command()`` functions and ``add_typer`` groups become Click
    commands only when one is run or asked for help. Building one reads its signature and type
    hints (a couple of milliseconds each): built all at once, every command paid for all the others
    at start-up. Its ``cls`` is a :class:`CatalogueGroup` subclass, which keeps them."""

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # type: ignore[override]
        register = super().command(name, **kwargs)

        def defer(f: Callable[..., Any]) -> Callable[..., Any]:
            register(f)
            info = self.registered_commands.pop()
            self._defer(info.name or typer.main.get_command_name(f.__name__),
                        lambda: typer.main.get_command_from_info(
                            info, pretty_exceptions_short=self.pretty_exceptions_short,
                            rich_markup_mode=self.rich_markup_mode))
            return f

        return defer

    def add_typer(self, typer_instance: typer.Typer, **kwargs: Any) -> None:  # type: ignore[override]
        super().add_typer(typer_instance, **kwargs)
        info = self.registered_groups[-1]
        if isinstance(info.name, str) and info.name:
            self.registered_groups.pop()
            self._defer(info.name, lambda: typer.main.get_group_from_info(
                info, pretty_exceptions_short=self.pretty_exceptions_short, rich_markup_mode=self.rich_markup_mode,
                suggest_commands=self.suggest_commands))

    def _defer(self, name: str, build: Callable[[], Any]) -> None:
        group = self.info.cls
        assert isinstance(group, type) and issubclass(group, CatalogueGroup), "LazyTyper(cls=<a CatalogueGroup>)"
        group.deferred = {**group.deferred, name: build}  # the subclass's own, in registration order


def reader_gone() -> NoReturn:
    """Exit quietly because whoever read the output stopped reading (``superfan fans | head``).

    What is still buffered can never be written; standard output is pointed at /dev/null so the
    interpreter's last flush does not complain about it either.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured output)
        pass
    sys.exit(BROKEN_PIPE_EXIT)


def usage_error_text(exc: ClickException, locale: str) -> str:
    """Click's usage errors, worded from the catalogue (the parts Click keeps: which option, which argument)."""
    ctx = getattr(exc, "ctx", None)
    cmd = ctx.command if ctx is not None else None
    if isinstance(exc, cli_values.ValueProblem):
        return exc.message
    if isinstance(exc, NoSuchOption):
        message = t("help.errors.no_such_option", locale, option=exc.option_name)
        if exc.possibilities:
            message += t("help.errors.did_you_mean", locale,
                         names=t("help.ui.sep", locale).join(sorted(exc.possibilities)))
        return message
    if isinstance(exc, BadOptionUsage):
        key = "option_takes_no_value" if "does not take a value" in exc.message else "option_needs_value"
        return t(f"help.errors.{key}", locale, option=exc.option_name)
    if isinstance(exc, MissingParameter) and exc.param is not None and cmd is not None:
        return t(f"help.errors.missing_{exc.param.param_type_name}", locale,
                 param=cli_i18n.label(cmd, exc.param, locale))
    if isinstance(exc, BadParameter) and exc.param is not None and cmd is not None:
        return t("help.errors.bad_value", locale, param=cli_i18n.label(cmd, exc.param, locale), reason=exc.message)
    if isinstance(exc, BadParameter) and exc.param_hint is None:
        return exc.message  # a command's own check, worded from the catalogue where it is raised
    extra = _EXTRA_ARGS.match(exc.message)
    if extra:
        return t("help.errors.extra_arguments", locale, args=extra.group(1))
    if exc.message == "Missing command.":
        return t("help.errors.missing_command", locale)
    return exc.format_message()


def show_usage_error(exc: ClickException, locale: str) -> None:
    """The error, the command's usage line, and where its help is (stderr)."""
    if isinstance(exc, NoArgsIsHelpError):  # a group run without a command: its help page
        print(exc.message)
        return
    lines = [t("help.ui.error", locale, message=usage_error_text(exc, locale))]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        lines.append(cli_i18n.usage_line(ctx.command, ctx, locale))
        lines.append(t("help.ui.try_help", locale, command=ctx.command_path))
    print("\n".join(lines), file=sys.stderr)


def confirm(question: str, locale: str) -> bool:
    """Ask a yes/no ``question`` on stderr; no is the default. End of input aborts (exit 1)."""
    yes = {a.strip().lower() for a in t("help.ui.yes_answers", locale).split(",")}
    no = {a.strip().lower() for a in t("help.ui.no_answers", locale).split(",")}
    while True:
        print(t("help.ui.confirm", locale, question=question), end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=sys.stderr)
            raise Abort()
        answer = line.strip().lower()
        if answer in yes:
            return True
        if answer in no or not answer:
            return False
        print(t("help.ui.yes_or_no", locale), file=sys.stderr)

