"""``superfan`` starts with only what the command needs, checks the schema without Alembic, and
stops quietly when its reader does (``superfan fans --json | head``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.cli_shell import BROKEN_PIPE_EXIT
from crm.schema import _alembic_head, head_revision, read_head

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "community.csv"
XIAOHUI = "line:U4af4980629f1e0b7c1a2b3c4d5e6f701"
#: Modules no light command needs: the schema tool, Typer's Pydantic, the platforms' SDKs, HTTP.
HEAVY = ("alembic", "pydantic", "aiohttp", "discord", "linebot", "apscheduler")
#: Modules of other commands.
OTHERS = ("bot.inbox_cli", "bot.drops_cli", "bot.dead_letters_cli", "bot.exporter", "bot.importer", "bot.report",
          "bot.demo", "crm.rescore", "crm.merge")
SHOW_MODULES = ("import atexit, sys\n"
                "atexit.register(lambda: print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr))\n"
                "from bot.cli import main\nmain()\n")


def superfan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SHOW_MODULES, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def loaded(result: subprocess.CompletedProcess[str]) -> set[str]:
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def of(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages or m in packages
                  or any(m.startswith(p + ".") for p in packages))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    path = tmp_path / "superfan.toml"
    path.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "start.db"}"\n', encoding="utf-8")
    return path


def test_help_loads_no_command_and_no_database_code(config: Path) -> None:
    result = superfan("--help", cwd=config.parent)
    assert result.returncode == 0 and result.stdout.startswith("用法：superfan")
    modules = loaded(result)
    assert of(modules, (*HEAVY, *OTHERS, "sqlalchemy", "crm", "rich")) == []


def test_a_fan_card_loads_only_what_it_shows(config: Path) -> None:
    assert CliRunner().invoke(app, ["import", str(EXAMPLE)]).exit_code == 0  # migrated to head, one fan known
    result = superfan("fan", XIAOHUI, "--json", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["display_name"] == "小慧"
    modules = loaded(result)
    assert of(modules, HEAVY) == []  # the schema at head is read without Alembic
    assert of(modules, OTHERS) == []
    assert of(modules, ("rich",)) == []  # JSON needs no tables


def test_a_fan_card_on_screen_loads_no_fuzzy_matcher_and_no_other_command(config: Path) -> None:
    assert CliRunner().invoke(app, ["import", str(EXAMPLE)]).exit_code == 0
    result = superfan("fan", XIAOHUI, cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("小慧")  # the card, through rich
    assert "MODULES " in result.stderr  # the script's atexit handlers still run after the command
    modules = loaded(result)
    assert of(modules, (*HEAVY, *OTHERS)) == []
    assert of(modules, ("rapidfuzz",)) == []  # only a mistyped name needs it


def test_a_mistyped_name_still_finds_the_fan(config: Path) -> None:
    assert CliRunner().invoke(app, ["import", str(EXAMPLE)]).exit_code == 0
    result = superfan("fan", "小慧慧", "--json", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["display_name"] == "小慧"
    assert "rapidfuzz" in loaded(result)


def test_a_commands_help_loads_no_database_driver_no_rich_and_no_other_command(config: Path) -> None:
    result = superfan("fan", "--help", cwd=config.parent)
    assert result.returncode == 0 and result.stdout.startswith("用法：superfan fan")
    modules = loaded(result)
    assert of(modules, (*HEAVY, *OTHERS, "rich", "rapidfuzz", "aiosqlite", "bot.app", "crm.models")) == []


def test_a_command_collects_garbage_as_usual_once_it_has_started(config: Path) -> None:
    """The collector is paused only while the command imports what it needs (bot.cli_gc): a long
    command (``run``, ``import``) must not grow without it."""
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('COLLECTING', gc.isenabled(), file=sys.stderr))\n"
              "from bot.cli import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", script, "fans", "--json"], cwd=config.parent, capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
    assert "COLLECTING True" in result.stderr


def test_a_database_behind_head_is_still_migrated(config: Path) -> None:
    result = superfan("fans", "--json", cwd=config.parent)  # a new database file: no schema at all
    assert (result.returncode, result.stdout.strip()) == (0, "[]")
    assert "alembic" in loaded(result)


def test_the_head_revision_is_alembics() -> None:
    assert head_revision() == _alembic_head()


def write(folder: Path, name: str, revision: str, down: str) -> None:
    (folder / name).write_text(f'"""x"""\nrevision: str = {revision!r}\ndown_revision: str | None = {down}\n',
                               encoding="utf-8")


def test_the_head_is_what_no_migration_revises_whatever_the_file_names(tmp_path: Path) -> None:
    write(tmp_path, "b_second.py", "x2", "'x1'")
    write(tmp_path, "a_first.py", "x1", "None")
    write(tmp_path, "c_third.py", "x3", '"x2"')
    (tmp_path / "__init__.py").write_text("", encoding="utf-8")
    assert read_head(tmp_path) == "x3"
    write(tmp_path, "d_branch.py", "y3", "'x2'")  # two heads: Alembic decides
    assert read_head(tmp_path) is None
    write(tmp_path, "e_merge.py", "m4", "('x3', 'y3')")
    assert read_head(tmp_path) == "m4"
    (tmp_path / "f_odd.py").write_text("REVISION = make()\n", encoding="utf-8")  # not the usual shape
    assert read_head(tmp_path) is None


@pytest.fixture
def crowd(config: Path) -> Path:
    """Two thousand fans: far more output than a pipe holds."""
    rows = ["platform,external_id,display_name,kind,occurred_at,amount,currency,event_id,text"]
    rows += [f"line,U{i:032x},粉絲{i},message,2026-11-02T20:15:00+08:00,,,m-{i},哈囉" for i in range(2000)]
    path = config.parent / "crowd.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["import", str(path)]).exit_code == 0
    return config


@pytest.mark.parametrize("args", [["fans", "--json"], ["export"], ["fans"]])
def test_piping_into_head_ends_quietly(crowd: Path, args: list[str]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=crowd.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()  # what `head -1` reads before it exits
    child.stdout.close()
    errors = child.stderr.read()
    assert child.wait(timeout=120) in (0, BROKEN_PIPE_EXIT)
    assert first.strip()
    assert errors == b""  # no traceback, no "error: [Errno 32] Broken pipe"
