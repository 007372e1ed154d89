"""Every error code raised anywhere has a text in both catalogues, and error_text renders it."""

from __future__ import annotations

import ast
import re
import string
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.i18n.errors import error_text
from crm.errors import AmbiguousFan, BadInput, CrmError, FanNotFound, SchemaOutOfDate
from crm.tiers import TierRules

ROOT = Path(__file__).parents[2]
I18N = ROOT / "bot" / "i18n"
SOURCES = sorted([*(ROOT / "crm").glob("*.py"), *(ROOT / "bot").rglob("*.py")])
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # CJK text or full-width punctuation


def error_texts(locale: str) -> dict[str, str]:
    """The ``[errors]`` section of ``<locale>.toml``, flattened to code → text."""
    data = tomllib.loads((I18N / f"{locale}.toml").read_text(encoding="utf-8"))["errors"]
    flat: dict[str, str] = {}

    def walk(prefix: str, node: dict[str, object]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk("", data)
    return flat


@dataclass(frozen=True)
class Site:
    where: str
    code: str
    params: frozenset[str]


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """``CrmError`` and every class that derives from it (by name) in crm/ and bot/."""
    bases = {cls.name: {_name(b) for b in cls.bases} for tree in trees.values()
             for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)}
    found = {"CrmError"}
    while True:
        more = {name for name, parents in bases.items() if parents & found} - found
        if not more:
            return found
        found |= more


def _sites(trees: dict[Path, ast.Module]) -> Iterator[tuple[str, str, ast.Call]]:
    """(where, class, call) for every construction of an error and every ``super().__init__`` in one."""
    errors = _error_classes(trees)
    for path, tree in trees.items():
        for cls in [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]:
            if cls.name in errors - {"CrmError"}:  # CrmError's own super() is Exception's
                for call in ast.walk(cls):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr == "__init__" and isinstance(call.func.value, ast.Call)
                            and _name(call.func.value.func) == "super"):
                        yield f"{path.relative_to(ROOT)}:{call.lineno}", cls.name, call
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and _name(call.func) in errors:
                yield f"{path.relative_to(ROOT)}:{call.lineno}", str(_name(call.func)), call


def raise_sites() -> tuple[list[Site], list[str]]:
    """Sites that pass a code, and complaints about those that pass none or not a literal."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in SOURCES}
    fixed = {"FanNotFound", "AmbiguousFan", "SchemaOutOfDate", "QuotaExceeded", "ConversationNotFound"}  # their __init__ sets the code
    sites, problems = [], []
    for where, cls, call in _sites(trees):
        keywords = {kw.arg: kw.value for kw in call.keywords}
        if None in keywords:
            problems.append(f"{where}: pass params by name, not **spread")
            continue
        code = keywords.get("code")
        if code is None:
            if cls not in fixed:
                problems.append(f"{where}: {cls}(...) without code=")
            continue
        if not (isinstance(code, ast.Constant) and isinstance(code.value, str)):
            problems.append(f"{where}: code= must be a string literal")
            continue
        sites.append(Site(where, code.value, frozenset(k for k in keywords if k and k != "code")))
    return sites, problems


def placeholders(text: str) -> set[str]:
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(text) if field}


def test_every_code_raised_in_crm_and_bot_has_a_text_in_both_catalogues() -> None:
    sites, problems = raise_sites()
    assert not problems
    codes = {s.code for s in sites}
    assert {"tier.unknown", "topic.bad", "link.expired", "referral.self", "fan.not_found", "fan.ambiguous",
            "schema.out_of_date"} <= codes  # the scan sees crm/
    assert len({s.code for s in sites if s.where.startswith("crm/")}) >= 25
    for locale in ("zh-TW", "en"):
        texts = error_texts(locale)
        missing = sorted(codes - set(texts))
        assert not missing, f"{locale}.toml [errors] lacks {missing}"
        for site in sites:
            unknown = placeholders(texts[site.code]) - site.params
            assert not unknown, f"{locale} errors.{site.code} uses {unknown}, which {site.where} does not pass"
    unused = sorted(set(error_texts("zh-TW")) - codes)
    assert not unused, f"catalogue error texts no code raises: {unused}"


def test_both_locales_have_the_same_error_codes_and_zh_tw_is_chinese() -> None:
    zh, en = error_texts("zh-TW"), error_texts("en")
    assert set(zh) == set(en)
    assert all(CJK.search(text) for text in zh.values()), [c for c, x in zh.items() if not CJK.search(x)]
    assert not any(CJK.search(text) for text in en.values())


@pytest.mark.parametrize(("locale", "expected"), [
    ("zh-TW", "沒有「king」這個等級；可用的等級：路人、粉絲、鐵粉、摯友。"),
    ("en-US", "Unknown tier “king”; the tiers are: Passer-by, Fan, True fan, Close friend."),
    ("ja", "沒有「king」這個等級；可用的等級：路人、粉絲、鐵粉、摯友。"),  # no Japanese catalogue: the default
])
def test_params_lists_and_translated_values_are_rendered_per_locale(locale: str, expected: str) -> None:
    with pytest.raises(BadInput) as caught:
        TierRules().resolve("king")
    assert caught.value.code == "tier.unknown"
    assert str(caught.value) == "unknown tier 'king'; tiers are: 路人, 粉絲, 鐵粉, 摯友"  # logs stay English
    assert error_text(caught.value, locale) == expected


def test_subclasses_keep_their_attributes_and_render() -> None:
    missing = FanNotFound("Zed")
    assert missing.query == "Zed" and (missing.code, missing.params) == ("fan.not_found", {"query": "Zed"})
    assert error_text(missing, "zh-TW") == "找不到符合「Zed」的粉絲。"
    many = AmbiguousFan("Amy", [(n, f"Amy {n}") for n in range(1, 13)])
    assert many.candidates[-1] == (12, "Amy 12")
    assert error_text(many, "en").endswith("instead: #1 Amy 1, #2 Amy 2, #3 Amy 3, #4 Amy 4, #5 Amy 5, "
                                           "#6 Amy 6, #7 Amy 7, #8 Amy 8, #9 Amy 9, #10 Amy 10, …")
    assert error_text(AmbiguousFan("Amy", [(3, "Amy Chen"), (4, "Amy Lin")]), "zh-TW") == \
        "「Amy」符合多位粉絲，請改用編號指定（例如 #12）：#3 Amy Chen、#4 Amy Lin"
    assert error_text(SchemaOutOfDate("not migrated"), "zh-TW").startswith("資料庫結構不是最新版本")


def test_a_cause_is_rendered_in_the_same_language() -> None:
    cause = BadInput("a purchase amount needs a currency", code="currency.missing")
    row = BadInput(f"shop.csv:7: {cause}", code="import.row", where="shop.csv:7", reason=cause)
    assert error_text(row, "zh-TW") == "shop.csv:7：購買金額需要註明幣別（例如 TWD）。"
    assert error_text(row, "en") == "shop.csv:7: A purchase amount needs a currency (e.g. TWD)."


def test_unknown_codes_and_params_that_do_not_fit_fall_back_to_the_english_message() -> None:
    assert error_text(CrmError("the moon is down", code="moon.down"), "zh-TW") == "the moon is down"
    assert error_text(BadInput("bad topic 'x'", code="topic.bad"), "zh-TW") == "bad topic 'x'"  # no params
