"""Name keys for lookup: width-, case- and whitespace-insensitive, CJK-safe."""

from __future__ import annotations

import re
import unicodedata

#: Zero-width characters that make two names look alike but compare unequal.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")


def name_key(name: str) -> str:
    """``ｘｉａｏ`` → ``xiao``; ``小慧 `` → ``小慧``. NFKC folds full-width forms; casefold folds case.

    Whitespace goes by ``str.split`` and invisible characters by a regex scan, both in C: every
    new fan of an import gets a key or two, and a Python loop over characters cost 5 µs a name.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    if _INVISIBLE.search(folded):
        folded = _INVISIBLE.sub("", folded)
    return "".join(folded.split())


def clean_display_name(name: str | None, fallback: str) -> str:
    """A display name fit for storage: trimmed, invisible characters dropped, bounded length."""
    if name:
        cleaned = (_INVISIBLE.sub("", name) if _INVISIBLE.search(name) else name).strip()
        if cleaned:
            return cleaned[:200]
    return fallback[:200]
