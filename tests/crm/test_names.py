"""Name keys and stored display names: what makes two names the same for lookup."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from crm.names import clean_display_name, name_key

INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
# Names as fans type them: CJK, full-width letters, every kind of space, zero-width characters.
names = st.text(st.sampled_from(
    "小慧林ＸｉａｏXiao mika\t\n\u3000\u00a0\u2003\x1c" + INVISIBLE + "ß\u0130Ⅸ①ｶﾞ"
) | st.characters(), max_size=30)


def _key_by_definition(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and ch not in INVISIBLE)


@given(names)
def test_name_key_folds_width_case_spaces_and_invisible_characters(name):
    assert name_key(name) == _key_by_definition(name)


def test_name_key_examples():
    assert name_key("ｘｉａｏ") == name_key("XIAO") == "xiao"
    assert name_key(" 小\u3000慧\u200b ") == "小慧"
    assert name_key("Mika\u00a0Chen") == "mikachen"


@given(names)
def test_a_stored_display_name_is_trimmed_and_has_no_invisible_characters(name):
    cleaned = clean_display_name(name, "line:abc123")
    kept = "".join(ch for ch in name if ch not in INVISIBLE).strip()
    assert cleaned == (kept[:200] if kept else "line:abc123")


def test_an_invisible_only_name_falls_back():
    assert clean_display_name("\u200b \ufeff", "line:…abcd") == "line:…abcd"
    assert clean_display_name(None, "discord:123") == "discord:123"
