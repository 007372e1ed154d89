"""``superfan link-code``: the stand-in for Discord's /link until the Discord adapter issues codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "cli.db"}"\n', encoding="utf-8")

    def run(*args: str, expect: int = 0):
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    return run


def test_link_code_for_a_discord_user_creates_the_fan_and_prints_a_code(cli) -> None:
    out = cli("link-code", "discord:123456789012345678").stdout
    code = re.search(r"綁定碼：([A-Z0-9]{6})", out)
    assert code, out
    assert f"綁定 {code.group(1)}" in out
    fan = json.loads(cli("fan", "discord:123456789012345678", "--json").stdout)
    assert fan["identities"][0]["platform"] == "discord"
    assert cli("link-code", str(fan["id"])).stdout != out  # any fan query works too, with a new code


def test_link_code_refuses_what_is_not_a_discord_id(cli) -> None:
    result = cli("link-code", "discord:mika", expect=2)
    assert "Discord 使用者 ID 是一串數字" in result.stderr
    assert cli("link-code", "nobody", expect=2).stderr == "錯誤：找不到符合「nobody」的粉絲。\n"
