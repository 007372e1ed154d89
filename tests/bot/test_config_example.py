"""config.example.toml is the documentation of every key: it must load, and it must name them all."""

from __future__ import annotations

import tomllib
import typing
from dataclasses import fields
from pathlib import Path

from bot.config import Config, load_config

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def test_example_loads_and_equals_the_built_in_defaults():
    assert load_config(str(EXAMPLE)).crm_settings() == Config().crm_settings()


def test_every_key_of_every_section_is_in_the_example():
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    hints = typing.get_type_hints(Config)
    missing = []
    for section in fields(Config):
        if section.name == "source":
            continue
        documented = data.get(section.name, {})
        missing += [f"{section.name}.{f.name}" for f in fields(hints[section.name]) if f.name not in documented]
    assert missing == []


def test_config_mistakes_are_reported_one_line_each():
    import pytest

    from bot.config import ConfigError, parse

    with pytest.raises(ConfigError) as exc:
        parse({"line": {"profile_requests_per_second": 5000}, "sla": {"reply_within_hours": 0},
               "digest": {"at": "9am"}}, "superfan.toml")
    lines = str(exc.value).splitlines()
    assert "superfan.toml: line.profile_requests_per_second must be above 0 and at most 2000 (LINE's own limit)" in lines
    assert "superfan.toml: sla.reply_within_hours must be positive" in lines
    assert 'superfan.toml: digest.at must be HH:MM, not "9am"' in lines  # as it is written in the file
