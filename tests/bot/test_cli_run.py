"""``superfan run`` says at start what is on, what is off and how to turn each on; a port already
taken names the setting that changes it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Config, DiscordConfig, LineConfig, with_overrides
from bot.run_status import announcement

WHERE = "http://127.0.0.1:8080 (LINE webhook /line/webhook, purchase hook /hooks/purchase, /healthz)"


def test_a_fresh_config_says_how_to_turn_each_part_on() -> None:
    lines = announcement(Config(), WHERE, "zh-TW", environ={})
    assert lines == [
        "網頁伺服器：開啟，http://127.0.0.1:8080（健康檢查：http://127.0.0.1:8080/healthz）",
        "LINE：關閉。要開啟：在 [line] 設 enabled = true，並設定環境變數 LINE_CHANNEL_SECRET 與 LINE_CHANNEL_ACCESS_TOKEN",
        "Discord：關閉。要開啟：在 [discord] 設 enabled = true 與 guild_id，並設定環境變數 DISCORD_TOKEN",
        "購買 webhook：關閉（送來的購買會被拒絕）。要開啟：設定環境變數 SUPERFAN_PURCHASE_SECRET（簽章用的密鑰）",
        "排程：開啟。每天 09:00（Asia/Taipei）的摘要送到：沒有地方（設定 [discord] staff_channel_id，或 [digest] "
        "line_user_id 並開啟 LINE；`superfan digest` 隨時可看）；每小時更新等級，每分鐘檢查回覆時限",
    ]


def test_everything_on_says_where_each_part_listens() -> None:
    config = with_overrides(Config(), line=LineConfig(enabled=True),
                            discord=DiscordConfig(enabled=True, guild_id=42, staff_channel_id=7, inbox_channel_id=8))
    lines = announcement(config, WHERE, "en", environ={"SUPERFAN_PURCHASE_SECRET": "s"})
    assert lines[1:] == [
        "LINE: on. In the LINE Developers console set the webhook URL to a public https address that forwards to "
        "http://127.0.0.1:8080/line/webhook",
        "Discord: on (server 42)",
        "Purchase hook: on, POST http://127.0.0.1:8080/hooks/purchase (signed with SUPERFAN_PURCHASE_SECRET)",
        "Scheduler: on. The digest every day at 09:00 (Asia/Taipei) goes to: the Discord staff channel 7; tiers "
        "refreshed hourly, reply deadlines checked every minute",
    ]


def test_the_web_app_off_says_what_cannot_arrive() -> None:
    config = with_overrides(Config(), line=LineConfig(enabled=True),
                            discord=DiscordConfig(enabled=True, guild_id=42))
    lines = announcement(config, "web app off", "zh-TW", environ={"SUPERFAN_PURCHASE_SECRET": "s"})
    assert lines[0].startswith("網頁伺服器：關閉") and "[web] 設 enabled = true" in lines[0]
    assert lines[1].startswith("LINE：開啟，但網頁伺服器關閉")
    assert "inbox_channel_id" in lines[3]  # Discord on without a DM inbox says so
    assert lines[4].startswith("購買 webhook：關閉（網頁伺服器關閉）")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "superfan.toml"
    path.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "run.db"}"\n[web]\nport = {port}\n',
                    encoding="utf-8")
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_port_in_use_names_the_setting_that_changes_it(tmp_path: Path, taken_port: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    config = write_config(tmp_path, taken_port)
    result = CliRunner().invoke(app, ["--config", str(config), "run"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (f"錯誤：127.0.0.1:{taken_port} 已經有別的程式在用（可能是另一個 "
                                              "superfan run）。請先停掉它，或在 superfan.toml 的 [web] port 換一個埠號。")


def test_superfan_run_announces_its_parts_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    write_config(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if k not in ("SUPERFAN_CONFIG", "SUPERFAN_PURCHASE_SECRET")}
    child = subprocess.Popen([sys.executable, "-c", "from bot.cli import main; main()", "run"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    said = []
    try:
        for line in child.stderr:
            said.append(line.rstrip("\n"))
            if line.startswith("superfan 已啟動"):
                break
        child.send_signal(signal.SIGINT)
        _, rest = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0
    shown = [line for line in said if " INFO " not in line]
    assert shown[0] == f"網頁伺服器：開啟，http://127.0.0.1:{port}（健康檢查：http://127.0.0.1:{port}/healthz）"
    assert [line.split("：")[0] for line in shown] == ["網頁伺服器", "LINE", "Discord", "購買 webhook", "排程",
                                                       "superfan 已啟動。按 Ctrl-C 停止。"]
    assert "superfan 已停止" in rest
