"""``superfan fans | head``: the table ends like ``--json`` does when its reader leaves (exit 141, nothing on
stderr), through a real pipe the child writes into."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.cli_shell import BROKEN_PIPE_EXIT


@pytest.fixture
def crowd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two thousand fans: the table (about 170 kB) is far more than a pipe holds (64 kB)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    (tmp_path / "superfan.toml").write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "pipe.db"}"\n', encoding="utf-8")
    rows = ["platform,external_id,display_name,kind,occurred_at,amount,currency,event_id,text"]
    rows += [f"line,U{i:032x},粉絲{i},message,2026-11-02T20:15:00+08:00,,,m-{i},哈囉" for i in range(2000)]
    (tmp_path / "crowd.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["import", str(tmp_path / "crowd.csv")]).exit_code == 0
    return tmp_path


def read_then_close(cwd: Path, *args: str, lines: int) -> tuple[list[bytes], int, bytes]:
    """What ``superfan ARGS | head -n LINES`` sees: the first lines, the exit status, stderr."""
    child = subprocess.Popen([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    first = [child.stdout.readline() for _ in range(lines)]
    child.stdout.close()
    errors = child.stderr.read()
    return first, child.wait(timeout=120), errors


@pytest.mark.parametrize("args", [["fans"], ["fans", "--json"]])
def test_the_fans_table_piped_into_head_ends_like_json_does(crowd: Path, args: list[str]) -> None:
    first, status, errors = read_then_close(crowd, *args, lines=3)
    assert status == BROKEN_PIPE_EXIT  # the table used to end 0 with the rest of its rows dropped unsaid
    assert errors == b""  # no traceback, no "Broken pipe" line
    if args == ["fans"]:
        assert "粉絲排行" in first[0].decode()  # the table's title: the reader got the start of it


def test_the_whole_table_still_arrives_when_it_is_read_to_the_end(crowd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "fans"], cwd=crowd,
                          capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stderr == b""
    rows = [line for line in done.stdout.decode().splitlines() if "粉絲" in line and "│" in line]
    assert len(rows) == 2000
