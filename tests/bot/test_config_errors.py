"""A config's mistakes reach the creator in their language: ``[creator] locale`` when the file could be
read that far, else zh-TW; key names, values as written and variable names stay as they are."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.i18n import catalogue
from tests.i18n.test_errors import CJK

ROOT = Path(__file__).parents[2]
SOURCES = (ROOT / "bot" / "config.py", ROOT / "bot" / "config_checks.py", ROOT / "bot" / "config_errors.py")
MISTAKES = ('[database]\nurl = 5\ncolour = "red"\n[creator]\ntimezone = "Mars/Base"\n{locale}'
            '[line]\nenabled = true\n[web]\nport = "80"\n[sla]\nhours = {{ mon = ["18:00-10:00"] }}\n[bogus]\nx = 1\n')


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for env in ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN", "DISCORD_TOKEN", "SUPERFAN_CONFIG"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.chdir(tmp_path)


def superfan(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr.splitlines()


def test_mistakes_read_in_zh_tw_when_the_file_names_no_locale(tmp_path: Path) -> None:
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(MISTAKES.format(locale=""), encoding="utf-8")
    assert superfan("--config", str(cfg), "run") == (2, [
        f"錯誤：{cfg}：database.url 必須是文字（加上引號），不能是 5",
        f"錯誤：{cfg}：沒有 database.colour 這個設定項（這個區段可用的有：url、auto_migrate、busy_timeout_seconds）",
        f'錯誤：{cfg}：web.port 必須是整數，不能是 "80"',
        f"錯誤：{cfg}：沒有 [bogus] 這個區段（可用的區段：[database]、[creator]、[web]、[line]、[discord]、[sla]、"
        "[digest]、[scoring]、[tiers]、[goal]、[purchases]、[checkin]、[privacy]、[drops]）",
        f'錯誤：{cfg}：creator.timezone 的 "Mars/Base" 不是已知的時區（例如 "Asia/Taipei"）',
        f'錯誤：{cfg}：sla.hours.mon 裡的 "18:00-10:00" 寫法有誤：請寫成 HH:MM-HH:MM，結束要晚於開始（午夜寫 24:00）',
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_SECRET",
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_ACCESS_TOKEN",
    ])


def test_the_same_mistakes_read_in_english_when_the_file_asks_for_it(tmp_path: Path) -> None:
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(MISTAKES.format(locale='locale = "en"\n'), encoding="utf-8")
    status, lines = superfan("--config", str(cfg), "run")
    assert status == 2
    assert lines == [
        f"Error: {cfg}: database.url must be a string, not 5",
        f"Error: {cfg}: unknown key database.colour (known: url, auto_migrate, busy_timeout_seconds)",
        f'Error: {cfg}: web.port must be a whole number, not "80"',
        f"Error: {cfg}: unknown section [bogus] (known: [database], [creator], [web], [line], [discord], [sla], "
        "[digest], [scoring], [tiers], [goal], [purchases], [checkin], [privacy], [drops])",
        f'Error: {cfg}: creator.timezone "Mars/Base" is not a known time zone (e.g. "Asia/Taipei")',
        f'Error: {cfg}: sla.hours.mon has "18:00-10:00": write HH:MM-HH:MM, ending after it starts (24:00 for midnight)',
        f"Error: {cfg}: line is enabled but environment variable LINE_CHANNEL_SECRET is not set",
        f"Error: {cfg}: line is enabled but environment variable LINE_CHANNEL_ACCESS_TOKEN is not set",
    ]
    # offline commands need no secrets: the file's own mistakes still stop them, in the same language
    status, offline = superfan("--config", str(cfg), "fans")
    assert status == 2 and offline == lines[:-2]


def test_a_locale_that_is_itself_the_mistake_is_said_in_zh_tw(tmp_path: Path) -> None:
    cfg = tmp_path / "superfan.toml"
    cfg.write_text('[creator]\nlocale = "fr"\n[digest]\nat = "9am"\n', encoding="utf-8")
    assert superfan("--config", str(cfg), "fans") == (2, [
        f'錯誤：{cfg}：creator.locale 只能是 "zh-TW" 或 "en"，不能是 "fr"',
        f'錯誤：{cfg}：digest.at 必須寫成 HH:MM（例如 "09:00"），不能是 "9am"',
    ])
    cfg.write_text('[creator]\nlocale = "en-US"\n', encoding="utf-8")  # readable as English: said in English
    assert superfan("--config", str(cfg), "fans") == (2, [
        f'Error: {cfg}: creator.locale must be "zh-TW" or "en", not "en-US"'])


@pytest.mark.parametrize(("content", "zh_tw"), [
    (None, "找不到設定檔"),
    (b'[creator]\nname = "x"\n[database\n', "不是有效的 TOML：第 3 行第 10 欄寫法有誤"),
    (b'[creator]\nname = "x"\nname = "unclosed\n', "不是有效的 TOML：第 3 行第 17 欄寫法有誤"),
    (b"[creator]\nname = [1,\n", "不是有效的 TOML：檔案在結尾處還沒寫完（例如少了結尾的引號或括號）"),
    (b'[creator]\nname = "\xff"\n', "設定檔不是 UTF-8 文字（請以 UTF-8 編碼存檔）"),
    ("folder", "這是資料夾，不是設定檔"),
])
def test_a_file_that_cannot_be_read_is_one_line_in_zh_tw(tmp_path: Path, content: bytes | str | None,
                                                          zh_tw: str) -> None:
    cfg = tmp_path / "superfan.toml"
    if content == "folder":
        cfg.mkdir()
    elif isinstance(content, bytes):
        cfg.write_bytes(content)
    assert superfan("--config", str(cfg), "fans") == (2, [f"錯誤：{cfg}：{zh_tw}"])  # no traceback, no English


def test_a_toml_mistake_below_the_locale_is_said_in_that_locale(tmp_path: Path) -> None:
    cfg = tmp_path / "superfan.toml"
    cfg.write_text('[creator]\nlocale = "en"\n[database]\nurl = "sqlite+aiosqlite:///x.db\n', encoding="utf-8")
    assert superfan("--config", str(cfg), "fans") == (2, [
        f"Error: {cfg}: not valid TOML at line 4, column 32: Illegal character '\\n'"])
    cfg.write_text('[creator]\nlocale = "en"\nkeywords = ["a",\n', encoding="utf-8")
    assert superfan("--config", str(cfg), "fans") == (2, [
        f"Error: {cfg}: not valid TOML: Invalid value (at end of document)"])
    # help and usage mistakes too: in English, as the lines above the mistake ask
    assert superfan("--config", str(cfg), "fans", "--bogus")[1][0] == "Error: No such option: --bogus."


def test_the_built_in_defaults_are_named_in_the_creators_language(tmp_path: Path) -> None:
    from bot.config import Config, ConfigError, LineConfig, require_secrets

    with pytest.raises(ConfigError) as caught:
        require_secrets(Config(line=LineConfig(enabled=True)))
    assert caught.value.lines() == ["內建預設值：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_SECRET",
                                    "內建預設值：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_ACCESS_TOKEN"]
    assert str(caught.value).splitlines()[0] == (  # the logs keep English
        "built-in defaults: line is enabled but environment variable LINE_CHANNEL_SECRET is not set")


def _codes_and_params() -> dict[str, set[str]]:
    """Every ``problem("code", name=…)`` in the config modules, and the codes its type check returns."""
    from bot.config import _NOT

    found: dict[str, set[str]] = {}
    for path in SOURCES:
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "problem":
                code = call.args[0]
                names = {kw.arg for kw in call.keywords if kw.arg}
                if isinstance(code, ast.Constant):
                    found.setdefault(str(code.value), set()).update(names)
                else:  # the type check's codes, all given key and value
                    for kind in _NOT.values():
                        for each in (kind, f"items_{kind}", f"values_{kind}"):
                            found.setdefault(each, set()).update(names)
                    for each in ("not_list", "not_table", "items_wrong", "values_wrong"):
                        found.setdefault(each, set()).update(names)
    return found


def test_every_config_problem_has_a_text_in_both_catalogues_that_fits_its_params() -> None:
    codes = _codes_and_params()
    assert {"unknown_key", "not_integer", "bad_timezone", "line_secret_missing", "file_not_found"} <= set(codes)
    for locale in ("zh-TW", "en"):
        texts = {k.removeprefix("config."): v for k, v in catalogue(locale).items() if k.startswith("config.")}
        assert not sorted(set(codes) - set(texts)), locale
        for code, params in codes.items():
            used = {field for _, field, _, _ in string.Formatter().parse(texts[code]) if field}
            assert used <= params, (locale, code, used - params)
    zh = {k: v for k, v in catalogue("zh-TW").items() if k.startswith("config.")}
    en = {k: v for k, v in catalogue("en").items() if k.startswith("config.")}
    assert set(zh) == set(en)
    assert all(CJK.search(text) for text in zh.values()), [k for k, v in zh.items() if not CJK.search(v)]
    assert not any(CJK.search(text) for text in en.values())
