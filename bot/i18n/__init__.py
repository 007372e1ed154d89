"""The one message catalogue: zh-TW by default, English available (``bot/i18n/<locale>.toml``)."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

DEFAULT_LOCALE = "zh-TW"
LOCALES = ("zh-TW", "en")
_DIR = Path(__file__).parent


@cache
def catalogue(locale: str) -> dict[str, str]:
    """All keys of a locale: ``<locale>.toml`` plus per-area files such as ``<locale>.line.toml``."""
    flat: dict[str, str] = {}
    for path in sorted(_DIR.glob(f"{locale}*.toml")):
        if path.name == f"{locale}.toml" or path.name.startswith(f"{locale}."):
            with path.open("rb") as fh:
                _flatten(tomllib.load(fh), flat)
    return flat


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
    text = catalogue(loc).get(key) or catalogue(DEFAULT_LOCALE).get(key) or key
    return text.format(**params) if params else text
