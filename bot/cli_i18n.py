"""The ``superfan`` command's own words, from the catalogue: help pages, usage lines, parameter names.

Every text lives in ``bot/i18n/<locale>.cli.toml`` (zh-TW by default, en with ``[creator] locale``):

- ``[help.commands]``: a command's help, keyed by how it is typed (``fan``, ``"inbox done"``;
  ``superfan`` is the command itself). Its first line is what the command list shows.
- ``[help.params]``: an option's help keyed ``"<command> --flag"``, an argument's
  ``"<command> <name>"`` (the function parameter's name); a key without the command
  (``"--json"``) serves every command that has the option.
- ``[help.metavars]``: the word that stands for an option's value or an argument, same keys;
  without one, a word for the value's type (``help.types``).

A command another module adds needs only these keys (``tests/bot/test_cli_help.py`` names any
that are missing); the ``help=`` strings and docstrings in code are a fallback nobody should see.
Click's and Typer's own English (``Usage:``, ``Options``, ``Show this message and exit.`` …) is
never printed: :mod:`bot.cli_shell` renders help and usage errors with these functions instead.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.i18n import DEFAULT_LOCALE, lookup, pick_locale, t

ROOT = "superfan"
#: Help pages wrap at this width at most (and at the terminal's width when it is narrower).
MAX_WIDTH = 100


def cli_locale(args: Sequence[str], environ: dict[str, str] | None = None) -> str:
    """The creator's language for this run: ``[creator] locale`` of the config the command will
    load (``--config``, ``$SUPERFAN_CONFIG`` or ``./superfan.toml``, as :func:`bot.config.config_path`),
    read without validating the rest, so help shows even while the config has mistakes."""
    env = os.environ if environ is None else environ
    path: str | None = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
            break
        if arg.startswith("--config="):
            path = arg.partition("=")[2]
            break
    if path is None:
        path = env.get("SUPERFAN_CONFIG") or ("superfan.toml" if Path("superfan.toml").exists() else None)
    if not path:
        return DEFAULT_LOCALE
    try:
        text = Path(path).read_text(encoding="utf-8")
        creator = tomllib.loads(text).get("creator", {})
    except (OSError, UnicodeDecodeError):
        return DEFAULT_LOCALE
    except tomllib.TOMLDecodeError as exc:  # the lines above the mistake may still name it
        from bot.config_errors import locale_above_mistake

        return locale_above_mistake(text, exc)
    locale = creator.get("locale") if isinstance(creator, dict) else None
    return pick_locale(locale if isinstance(locale, str) else None)


def text(key: str, locale: str) -> str | None:
    """The catalogue's text for ``key`` in ``locale``, falling back to zh-TW; ``None`` if neither has it."""
    return lookup(key, pick_locale(locale)) or lookup(key, DEFAULT_LOCALE)


def command_path(cmd: Any) -> str:
    """How a command is typed after ``superfan`` (``inbox done``), or ``superfan`` for the command itself."""
    return getattr(cmd, "catalogue_path", None) or cmd.name or ROOT


def param_key(param: Any) -> str:
    """An option by its first long flag (``--json``), an argument by its name (``query``)."""
    if param.param_type_name == "option":
        return next((o for o in param.opts if o.startswith("--")), param.opts[0])
    return str(param.name)


def command_help(cmd: Any, locale: str) -> str:
    found = text(f"help.commands.{command_path(cmd)}", locale)
    return found if found is not None else (cmd.help or "").strip()


def short_help(cmd: Any, locale: str) -> str:
    return command_help(cmd, locale).split("\n", 1)[0].strip()


def _lookup(kind: str, cmd: Any, param: Any, locale: str) -> str | None:
    key = param_key(param)
    path = command_path(cmd)
    return text(f"help.{kind}.{path} {key}", locale) or text(f"help.{kind}.{key}", locale)


def param_help(cmd: Any, param: Any, locale: str) -> str:
    found = _lookup("params", cmd, param, locale)
    return found if found is not None else (getattr(param, "help", None) or "")


def metavar(cmd: Any, param: Any, locale: str) -> str:
    """The word for an option's value (``--limit 筆數``) or for an argument (``粉絲``)."""
    found = _lookup("metavars", cmd, param, locale)
    if found:
        return found
    if param.param_type_name == "argument":
        return str(param.name).upper()
    return t(f"help.types.{value_type(param)}", locale)


def value_type(param: Any) -> str:
    """``text``, ``integer``, ``number`` or ``path``: how the value is read, for help and errors."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", str)
    inner = getattr(annotation, "__args__", None)
    if inner and len(inner) == 1:
        annotation = inner[0]
    if descriptor is not None and descriptor.is_path:
        return "path"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    return "text"


def label(cmd: Any, param: Any, locale: str) -> str:
    """How an error names a parameter: an option by its flag, an argument by its word."""
    return param_key(param) if param.param_type_name == "option" else metavar(cmd, param, locale)


def usage_line(cmd: Any, ctx: Any, locale: str) -> str:
    """``superfan fan [選項] 粉絲``: options, then arguments (``[optional]``, ``…`` repeated), then
    ``指令`` for a group."""
    pieces = [ctx.command_path if ctx is not None else ROOT, f"[{t('help.ui.options_word', locale)}]"]
    for param in cmd.params:
        if param.param_type_name != "argument" or getattr(param, "hidden", False):
            continue
        word = metavar(cmd, param, locale) + ("…" if param.nargs == -1 else "")
        pieces.append(word if param.required else f"[{word}]")
    if hasattr(cmd, "commands"):
        word = t("help.ui.command_word", locale)
        pieces.append(f"[{word}]" if getattr(cmd, "invoke_without_command", False) else word)
    return t("help.ui.usage", locale, usage=" ".join(pieces))


def help_page(cmd: Any, ctx: Any, locale: str, subcommands: Sequence[tuple[str, str]] = ()) -> str:
    """The whole ``--help`` page of ``cmd``; ``subcommands`` are a group's (name, short help) pairs."""
    width = min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)
    lines = [usage_line(cmd, ctx, locale), ""]
    body = command_help(cmd, locale)
    if body:
        for paragraph in body.split("\n"):
            lines += wrap(paragraph, width) if paragraph.strip() else [""]
        lines.append("")
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [(metavar(cmd, p, locale), _described(cmd, p, locale)) for p in params
                 if p.param_type_name == "argument"]
    options = [(_option_name(cmd, p, locale), _described(cmd, p, locale)) for p in params
               if p.param_type_name == "option"]
    sections = (("arguments", arguments), ("options", options), ("commands", list(subcommands)))
    left = min(max((cell_width(name) for _, rows in sections for name, _ in rows), default=0), 24)
    for title, rows in sections:
        if rows:
            lines.append(t(f"help.ui.{title}", locale))
            lines += _table(rows, width, left)
            lines.append("")
    if subcommands:
        lines += wrap(t("help.ui.more", locale, command=ctx.command_path if ctx is not None else ROOT), width)
    return "\n".join(lines).rstrip("\n") + "\n"


def _option_name(cmd: Any, param: Any, locale: str) -> str:
    names = ", ".join([*(o for o in param.opts if o.startswith("--")), *(o for o in param.opts if not o.startswith("--"))])
    return names if getattr(param, "is_flag", False) else f"{names} {metavar(cmd, param, locale)}"


def _described(cmd: Any, param: Any, locale: str) -> str:
    """The parameter's help and, in brackets, what else a creator needs: required, default, bounds."""
    notes = []
    if param.required:
        notes.append(t("help.ui.required", locale))
    default = param.default
    shown = getattr(param, "show_default", True)
    if (shown and not getattr(param, "is_flag", False) and default not in (None, "", (), [])
            and not callable(default)):
        notes.append(t("help.ui.default", locale, value=default))
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None:
        notes.append(t("help.ui.at_least", locale, value=low))
    if high is not None:
        notes.append(t("help.ui.at_most", locale, value=high))
    if param.param_type_name == "option" and getattr(param, "multiple", False):
        notes.append(t("help.ui.repeatable", locale))
    described = param_help(cmd, param, locale)
    if notes:
        described = f"{described}{t('help.ui.notes', locale, notes=t('help.ui.sep', locale).join(notes))}"
    return described


def _table(rows: list[tuple[str, str]], width: int, left: int) -> list[str]:
    """Two columns (the first ``left`` wide), the second wrapped and aligned under itself; a longer
    first cell gets a line of its own."""
    out = []
    for name, described in rows:
        indent = 2 + left + 2
        body = wrap(described, max(width - indent, 20)) or [""]
        if cell_width(name) > left:
            out.append(f"  {name}")
            out += [" " * indent + line for line in body]
            continue
        out.append(f"  {name}{' ' * (left - cell_width(name))}  {body[0]}")
        out += [" " * indent + line for line in body[1:]]
    return out


def cell_width(s: str) -> int:
    """Columns ``s`` takes in a terminal: CJK and full-width characters take two."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


_TOKENS = re.compile(r"[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]"
                     r"|[^\s\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]+"
                     r"|\s+")
#: Punctuation that may not start a line: it stays with what it closes (a Latin word carries its own).
_NO_LINE_START = set("，。、；：！？）」』》〉】,.;:!?)]")


def wrap(paragraph: str, width: int) -> list[str]:
    """Break ``paragraph`` into lines of at most ``width`` columns: between words, or between any two
    CJK characters (which need no spaces), never before closing punctuation."""
    lines: list[str] = []
    line, used = "", 0
    for token in _TOKENS.findall(paragraph.strip()):
        size = cell_width(token)
        if token.isspace():
            if line:
                line, used = line + " ", used + 1
            continue
        if used + size > width and line.strip() and token not in _NO_LINE_START:
            lines.append(line.rstrip())
            line, used = "", 0
        line, used = line + token, used + size
    if line.strip():
        lines.append(line.rstrip())
    return lines
