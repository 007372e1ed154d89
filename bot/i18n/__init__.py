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
    with (_DIR / f"{locale}.toml").open("rb") as fh:
        data = tomllib.load(fh)
    flat: dict[str, str] = {}

    def walk(prefix: str, node: dict[str, object]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk("", data)
    return flat


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
