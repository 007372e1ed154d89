"""The ``superfan`` command in the creator's language: every help page, usage error and prompt
comes from the catalogue; none of Click's or Typer's English reaches a zh-TW creator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bot.cli import app
from bot.cli_i18n import ROOT, param_help, param_key
from bot.cli_shell import localize
from bot.i18n import catalogue, t

EXAMPLE = Path(__file__).parents[2] / "examples" / "community.csv"
#: What Click and Typer print in English on their own (help layout, usage errors, prompts).
CLICK_ENGLISH = ("Usage:", "Options", "Arguments", "Commands", "Show this message and exit", "default:",
                 "[required]", "required", "<bool>", "<str>", "<int", "<path>", "<float", "COMMAND [ARGS]",
                 "[OPTIONS]", "Try '", "for help", "Error", "Missing argument", "Missing option", "Missing command",
                 "No such command", "No such option", "Invalid value", "unexpected extra argument", "Did you mean",
                 "Possible options", "Aborted", "is not a valid", "does not exist", "Input should be", "x>=",
                 "[y/N]", "Repeat for confirmation", "--no-")


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "100")  # help pages wrap to the terminal


def commands() -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
    """Every command as it is typed (``[]`` is ``superfan`` itself), the lazily built ones included."""
    root = typer.main.get_command(app)
    localize(root, ROOT)

    def walk(cmd: typer.core.TyperCommand, words: list[str]) -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
        yield words, cmd
        for name in getattr(cmd, "list_commands", lambda _: [])(None):
            yield from walk(cmd.get_command(None, name), [*words, name])

    yield from walk(root, [])


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def english_in(text: str) -> list[str]:
    return [s for s in CLICK_ENGLISH if s in text]


def config(tmp_path: Path, locale: str) -> str:
    path = tmp_path / f"{locale}.toml"
    path.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "cli.db"}"\n[creator]\nlocale = "{locale}"\n',
                    encoding="utf-8")
    return str(path)


def test_every_help_page_is_the_catalogues_chinese() -> None:
    pages = 0
    for words, cmd in commands():
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
        page = result.stdout
        path = " ".join(words) or ROOT
        assert english_in(page) == [], (path, page)
        assert page.startswith(f"用法：superfan {path} [選項]".replace("superfan superfan", "superfan")), page
        flat = squash(page)  # texts wrap to the terminal's width
        assert squash(t(f"help.commands.{path}", "zh-TW")) in flat
        for param in cmd.params:
            assert squash(param_help(cmd, param, "zh-TW")) in flat, (path, param.name)
        pages += 1
    assert pages >= 20  # every command, lazily built ones (inbox, drop …) included


def test_every_command_and_parameter_has_texts_in_both_languages() -> None:
    """A command added anywhere needs only catalogue keys: this names the ones missing."""
    missing = []
    for words, cmd in commands():
        path = " ".join(words) or ROOT
        for locale in ("zh-TW", "en"):
            if f"help.commands.{path}" not in catalogue(locale):
                missing.append(f"{locale}: [help.commands] \"{path}\"")
            for param in cmd.params:
                key = param_key(param)
                texts = catalogue(locale)
                if f"help.params.{path} {key}" not in texts and f"help.params.{key}" not in texts:
                    missing.append(f"{locale}: [help.params] \"{path} {key}\" (or \"{key}\")")
                needs_word = param.param_type_name == "argument" or not getattr(param, "is_flag", False)
                if needs_word and f"help.metavars.{path} {key}" not in texts and f"help.metavars.{key}" not in texts:
                    missing.append(f"{locale}: [help.metavars] \"{path} {key}\" (or \"{key}\")")
    assert missing == [], "add to bot/i18n/<locale>.cli.toml:\n" + "\n".join(missing)


def test_flags_show_as_flags_and_values_by_what_they_are() -> None:
    page = CliRunner().invoke(app, ["fan", "--help"]).stdout
    assert re.search(r"^  --json +以 JSON 輸出。$", page, re.MULTILINE), page
    assert re.search(r"^  --limit 筆數 +顯示最近幾筆互動。（預設 20、最少 0）$", page, re.MULTILINE), page
    assert re.search(r"^  粉絲 +粉絲編號.*（必填）$", page, re.MULTILINE), page
    assert "用法：superfan fan [選項] 粉絲\n" in page


def test_english_follows_the_configs_locale(tmp_path: Path) -> None:
    en = config(tmp_path, "en")
    page = CliRunner().invoke(app, ["--config", en, "fan", "--help"]).stdout
    assert page.startswith("Usage: superfan fan [OPTIONS] FAN\n")
    assert "One fan's history, score (explained), preferences and notes." in page
    assert re.search(r"^  --limit N +How many recent interactions\. \(default 20, at least 0\)$", page, re.MULTILINE)
    assert not re.search(r"[\u4e00-\u9fff]", page.replace("鐵粉", ""))
    root = CliRunner().invoke(app, ["--config", en, "--help"]).stdout
    assert "Commands:" in root and "Fans ranked by today's score." in root
    wrong = CliRunner().invoke(app, ["--config", en, "fan", "--limit", "many", "x"])
    assert (wrong.exit_code, wrong.stderr.splitlines()[0]) == (2, "Error: --limit needs a whole number, not “many”.")


@pytest.mark.parametrize(("args", "message"), [
    (["fnas"], "錯誤：沒有「fnas」這個指令。你是不是要用：fans？"),
    (["fan"], "錯誤：少了「粉絲」。"),
    (["fan", "--limit", "x", "小慧"], "錯誤：--limit 要是整數，「x」不是。"),
    (["fan", "--limit", "-1", "小慧"], "錯誤：--limit 最少是 0，「-1」太小了。"),
    (["fans", "--jsn"], "錯誤：沒有 --jsn 這個選項。你是不是要用：--json、--now？"),
    (["fans", "--top"], "錯誤：--top 後面要接一個值。"),
    (["fans", "extra"], "錯誤：多了用不到的參數：extra"),
    (["line", "richmenu", "missing.png"], "錯誤：找不到「missing.png」（圖片）。"),
    (["dead-letters", "replay", "one"], "錯誤：編號 要是整數，「one」不是。"),
    (["dead-letters", "replay"], "錯誤：請寫出要重新處理的事件編號，或加上 --all。"),
])
def test_usage_errors_say_what_is_wrong_in_chinese(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    first, usage, hint = result.stderr.splitlines()
    assert first == message
    assert usage.startswith("用法：superfan ") and hint.startswith("說明：superfan ")
    assert english_in(result.stderr) == []
    assert result.stdout == ""


def test_superfan_alone_shows_its_help_in_chinese() -> None:
    result = CliRunner().invoke(app, [])
    assert result.stdout.startswith("用法：superfan [選項] 指令\n")
    assert "指令：" in result.stdout and english_in(result.stdout) == []


def test_forget_asks_in_chinese_and_no_keeps_the_fan(tmp_path: Path) -> None:
    zh = config(tmp_path, "zh-TW")
    assert CliRunner().invoke(app, ["--config", zh, "import", str(EXAMPLE)]).exit_code == 0
    kept = CliRunner().invoke(app, ["--config", zh, "forget", "小慧"], input="不要\n")
    assert kept.exit_code == 1
    assert kept.stderr.startswith("確定要刪除 #1 小慧 的所有資料嗎？刪除後無法復原。（y/N）")
    assert english_in(kept.stderr) == []
    gone = CliRunner().invoke(app, ["--config", zh, "forget", "小慧"], input="")  # end of input: aborted
    assert (gone.exit_code, gone.stderr.splitlines()[-1]) == (1, "已取消。")
    assert CliRunner().invoke(app, ["--config", zh, "fan", "小慧", "--json"]).exit_code == 0  # still there
    erased = CliRunner().invoke(app, ["--config", zh, "forget", "小慧"], input="maybe\ny\n")
    assert erased.exit_code == 0
    assert "請回答 y（是）或 n（否）。" in erased.stderr
    assert CliRunner().invoke(app, ["--config", zh, "fan", "小慧", "--json"]).exit_code == 2
