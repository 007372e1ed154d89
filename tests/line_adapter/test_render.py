"""LINE texts: both locales complete, answers fit LINE's limits, English when the creator asks for it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bot.i18n import _flatten
from bot.line_adapter.commands import AskConfirm, Done, Refused
from bot.line_adapter.render import my_data, outcome
from crm.errors import BadInput
from crm.fan_actions import CheckinResult

I18N = Path(__file__).parents[2] / "bot" / "i18n"


def keys(name: str) -> set[str]:
    flat: dict[str, str] = {}
    _flatten(tomllib.loads((I18N / name).read_text(encoding="utf-8")), flat)
    return set(flat)


def test_both_locales_have_every_line_text() -> None:
    assert keys("zh-TW.line.toml") == keys("en.line.toml")


def test_answers_in_english() -> None:
    ok = Done("checkin", {"result": CheckinResult("checked_in", 1, 3), "code": None})
    [message] = outcome(ok, "en")
    assert message.text == "Checked in! ✅ 3-day streak."
    [refused] = outcome(Refused("link", BadInput("this link code has expired; ask for a new one",
                                                  code="link.expired")), "en")
    assert refused.text == "This link code has expired; ask for a new one.\nRun /link on Discord for a new code."
    [self_referral] = outcome(Refused("refer", BadInput("no", code="referral.self")), "zh-TW")
    assert self_referral.text == "不能使用自己的推薦碼喔。"
    [ask] = outcome(AskConfirm("forget"), "en")
    assert ask.template.text.startswith("Erase everything")
    assert [a.data for a in ask.template.actions] == ["action=forget&confirm=yes", "action=forget&confirm=no"]
    assert all(len(a.label) <= 20 for a in ask.template.actions)


def test_my_data_lists_what_is_kept() -> None:
    doc = {"display_name": "Mika", "tier": "Fan", "score": 12.345, "opted_out": True, "preferences": ["cats"],
           "identities": [{"platform": "line"}, {"platform": "discord"}],
           "interactions": [{"kind": "dm_in"}, {"kind": "dm_in"}, {"kind": "galaxy_brain"}]}
    text = my_data(doc, "en")
    assert "Mika" in text and "12.3" in text and "Discord, LINE" in text and "cats" in text
    assert "DM ×2" in text and "galaxy_brain ×1" in text
    assert "stopped tracking" in text
    assert my_data(None, "zh-TW") == "我們目前沒有存任何關於你的資料。"
