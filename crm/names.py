"""Name keys for lookup: width-, case- and whitespace-insensitive, CJK-safe."""

from __future__ import annotations

import unicodedata

_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}


def name_key(name: str) -> str:
    """``ｘｉａｏ`` → ``xiao``; ``小慧 `` → ``小慧``. NFKC folds full-width forms; casefold folds case."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and ch not in _INVISIBLE)


def clean_display_name(name: str | None, fallback: str) -> str:
    """A display name fit for storage: trimmed, invisible characters dropped, bounded length."""
    if name:
        cleaned = "".join(ch for ch in name if ch not in _INVISIBLE).strip()
        if cleaned:
            return cleaned[:200]
    return fallback[:200]
