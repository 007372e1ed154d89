"""What can be wrong with a config and how it reads: a :class:`Problem` is a catalogue code
(``config.<code>`` in ``bot/i18n/<locale>.config.toml``) and its params, so the creator reads it in
their language; key names, values and variable names stay as written. :class:`ConfigError` carries
every problem of one config and the locale to tell them in.
"""

from __future__ import annotations

import errno
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from bot.i18n import DEFAULT_LOCALE, pick_locale, t

PREFIX = "config."


@dataclass(frozen=True)
class Problem:
    """One mistake in the config: the text ``config.<code>`` with ``params`` filled in.

    A list param is joined with the locale's separator; values quoted from the file are given as
    :func:`literal` renders them, the same in every language.
    """

    code: str
    params: dict[str, object] = field(default_factory=dict)

    def text(self, locale: str | None) -> str:
        sep = t(PREFIX + "sep", locale)
        params = {k: sep.join(str(x) for x in v) if isinstance(v, list | tuple) else v
                  for k, v in self.params.items()}
        return t(PREFIX + self.code, locale, **params)


def problem(code: str, **params: object) -> Problem:
    return Problem(code, params)


def literal(value: object) -> str:
    """A value as it would be written in the TOML file (``"Mars/Base"``, ``5``, ``true``, ``["x"]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {literal(v)}" for k, v in value.items()) + " }"
    return str(value)


#: ``Config.source`` when no file was read.
DEFAULT_SOURCE = "built-in defaults"


class ConfigError(Exception):
    """The configuration cannot be used: every problem in it, one line each.

    :meth:`text` words it in a locale; ``locale`` is the one the creator asked for in the config
    (zh-TW when the file could not be read that far). ``str()`` is the English text, for logs. A
    plain string is shown as it is (for callers that have no catalogue text yet).
    """

    def __init__(self, *found: Problem | str, source: str = "", locale: str = DEFAULT_LOCALE) -> None:
        self.problems = found
        self.source = source
        self.locale = locale
        super().__init__(self.text("en"))

    def lines(self, locale: str | None = None) -> list[str]:
        loc = locale or self.locale
        where = self.source
        if where.startswith(DEFAULT_SOURCE):
            where = t("config.defaults", loc) + where[len(DEFAULT_SOURCE):]
        texts = [p if isinstance(p, str) else p.text(loc) for p in self.problems]
        return [t("config.at", loc, source=where, problem=x) if where else x for x in texts]

    def text(self, locale: str | None = None) -> str:
        """Every problem in ``locale`` (default: the config's own), one per line."""
        return "\n".join(self.lines(locale))


def unreadable(exc: OSError) -> Problem:
    """Why the config file could not be opened or read (errno → catalogue code)."""
    if exc.errno == errno.ENOENT:
        return problem("file_not_found")
    if exc.errno == errno.EISDIR:
        return problem("file_is_directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return problem("file_not_permitted")
    return problem("file_unreadable", reason=errno.errorcode.get(exc.errno or 0, str(exc.errno)))


#: Where ``tomllib`` says a mistake is.
TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def locale_above_mistake(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The ``[creator] locale`` of a file that is not valid TOML, as far as the lines above the
    mistake say (zh-TW otherwise): the error and the help are told in the creator's language."""
    at = TOML_AT.search(str(exc))
    return locale_of(_readable_start(text, int(at[1]) if at else None))


def _readable_start(text: str, bad_line: int | None) -> dict[str, Any]:
    """What the lines before a TOML mistake say (``[creator] locale`` is usually near the top), so the
    mistake can be told in the creator's language; ``{}`` when even they do not read."""
    lines = text.splitlines()
    ends = [bad_line - 1] if bad_line else range(len(lines) - 1, max(len(lines) - 20, 0), -1)
    for end in ends:
        try:
            return tomllib.loads("\n".join(lines[:end]))
        except tomllib.TOMLDecodeError:
            continue
    return {}


def locale_of(data: dict[str, Any]) -> str:
    """``[creator] locale`` as far as it can be read, for the error lines (zh-TW otherwise)."""
    creator = data.get("creator")
    value = creator.get("locale") if isinstance(creator, dict) else None
    return pick_locale(value if isinstance(value, str) else None)
