"""The one message catalogue: zh-TW by default, English available (``bot/i18n/<locale>.toml``).

A locale is ``<locale>.toml`` plus per-area files such as ``<locale>.line.toml``; where two files
hold the same key, the later file in name order wins. :func:`t` and :func:`lookup` parse a file
only when a key that may be in it is first asked for (a ``superfan fan`` reads three of ten): which
keys a file may hold is read from its table headers (``[cli]``, ``[help.commands]``), not from
parsing it. :func:`catalogue` is every key of a locale at once, for tools and tests.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

DEFAULT_LOCALE = "zh-TW"
LOCALES = ("zh-TW", "en")
_DIR = Path(__file__).parent
#: A plain table header: ``[cli]``, ``[help.commands]``. A file with any other line starting with
#: ``[`` (quoted names, arrays of tables) or with keys before its first table may hold any key.
_HEADER = re.compile(r"\[([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\]\s*(?:#.*)?")
_KEY_LINE = re.compile(r"[^\s#\[]")


@cache
def catalogue(locale: str) -> dict[str, str]:
    """All keys of a locale: ``<locale>.toml`` plus per-area files such as ``<locale>.line.toml``."""
    flat: dict[str, str] = {}
    for area in _areas(locale):
        flat.update(area.keys())
    return flat


def lookup(key: str, locale: str) -> str | None:
    """The text for ``key`` in exactly ``locale`` (no fallback), or ``None``; as ``catalogue(locale).get(key)``,
    parsing only the files whose tables may hold ``key``, last file first."""
    for area in reversed(_areas(locale)):
        if area.may_hold(key):
            found = area.keys().get(key)
            if found is not None:
                return found
    return None


class _Area:
    """One catalogue file: the tables it declares now, its keys when first needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tables: tuple[str, ...] | None = _tables(path.read_text(encoding="utf-8"))
        self._keys: dict[str, str] | None = None

    def may_hold(self, key: str) -> bool:
        return self.tables is None or any(key.startswith(table + ".") for table in self.tables)

    def keys(self) -> dict[str, str]:
        if self._keys is None:
            self._keys = {}
            with self.path.open("rb") as fh:
                _flatten(tomllib.load(fh), self._keys)
        return self._keys


def _tables(text: str) -> tuple[str, ...] | None:
    """The tables a file's headers declare, or ``None`` when its shape does not say (any key may be there)."""
    tables: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            header = _HEADER.fullmatch(line)
            if header is None:
                return None
            tables.append(header[1])
        elif not tables and _KEY_LINE.match(line):
            return None  # a key before the first table
    return tuple(tables)


@cache
def _areas(locale: str) -> tuple[_Area, ...]:
    return tuple(_Area(path) for path in sorted(_DIR.glob(f"{locale}*.toml"))
                 if path.name == f"{locale}.toml" or path.name.startswith(f"{locale}."))


def _flatten(data: dict[str, object], flat: dict[str, str]) -> None:

    def walk(prefix: str, node: dict[str, object]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk("", data)


def pick_locale(locale: str | None, default: str = DEFAULT_LOCALE) -> str:
    """Map a platform locale (``zh-TW``, ``en-US``, ``en``, ``zh_TW``) onto a catalogue we have."""
    if locale:
        norm = locale.replace("_", "-")
        if norm in LOCALES:
            return norm
        if norm.lower().startswith("en"):
            return "en"
        if norm.lower().startswith("zh"):
            return "zh-TW"
    return default if default in LOCALES else DEFAULT_LOCALE


def t(key: str, locale: str | None = None, /, **params: object) -> str:
    """The text for ``key`` in ``locale`` (falling back to zh-TW, then the key itself)."""
    loc = pick_locale(locale)
    text = lookup(key, loc) or lookup(key, DEFAULT_LOCALE) or key
    return text.format(**params) if params else text
