"""Every text reads the same whether its catalogue file was parsed for it or all files were read at
once: where two files hold a key, the later file in name order wins (as when all are read)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import bot.i18n
from bot.i18n import DEFAULT_LOCALE, LOCALES, catalogue, lookup, t

I18N = Path(bot.i18n.__file__).parent


def test_every_key_reads_as_in_the_whole_catalogue() -> None:
    keys = set(catalogue("zh-TW")) | set(catalogue("en"))
    for locale in LOCALES:
        for key in keys:
            assert t(key, locale) == (catalogue(locale).get(key) or catalogue(DEFAULT_LOCALE).get(key) or key), key


def test_the_demo_area_describes_the_demo_command() -> None:
    """``help.commands.demo`` is in the CLI's file and the demo's: the demo's (later) text is shown."""
    for locale in LOCALES:
        demo = tomllib.loads((I18N / f"{locale}.demo.toml").read_text(encoding="utf-8"))
        assert t("help.commands.demo", locale) == demo["help"]["commands"]["demo"]


@pytest.fixture
def own_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(bot.i18n, "_DIR", tmp_path)
    bot.i18n._areas.cache_clear()
    bot.i18n.catalogue.cache_clear()
    yield tmp_path
    bot.i18n._areas.cache_clear()
    bot.i18n.catalogue.cache_clear()


def test_a_file_of_another_shape_is_read_for_any_key(own_catalogue: Path) -> None:
    (own_catalogue / "xx.toml").write_text('[cli]\ngreeting = "main"\n', encoding="utf-8")
    (own_catalogue / "xx.quoted.toml").write_text('["cli"]\nfarewell = "quoted header"\n', encoding="utf-8")
    (own_catalogue / "xx.bare.toml").write_text('cli.thanks = "a dotted key before any table"\n', encoding="utf-8")
    (own_catalogue / "xx.zone.toml").write_text('[cli]\ngreeting = "zone"\n[line]\nhello = "line"\n',
                                                encoding="utf-8")
    assert lookup("cli.farewell", "xx") == "quoted header"
    assert lookup("cli.thanks", "xx") == "a dotted key before any table"
    assert lookup("line.hello", "xx") == "line"
    assert lookup("cli.greeting", "xx") == catalogue("xx")["cli.greeting"] == "zone"  # sorts after xx.toml
    assert lookup("cli.missing", "xx") is None
