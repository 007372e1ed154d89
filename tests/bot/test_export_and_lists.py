"""Exports and fan lists as a creator reads them: times in their timezone, every fan once, best first."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from bot.cli import app
from crm.db import make_engine, make_sessionmaker
from crm.models import Identity

EXAMPLE = Path(__file__).parents[2] / "examples" / "community.csv"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``superfan`` on a fresh SQLite file; ``timezone`` sets ``[creator] timezone``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)

    def run(*args: str, timezone: str = "Asia/Taipei", expect: int = 0):
        cfg = tmp_path / "superfan.toml"
        cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n'
                       f'[creator]\ntimezone = "{timezone}"\n', encoding="utf-8")
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    return run


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))


@pytest.mark.parametrize("timezone", ["Asia/Taipei", "America/New_York"])  # New York: across the end of summer time
def test_export_times_are_in_the_creators_timezone_like_fans_shows_them(cli, tmp_path, timezone):
    cli("import", str(EXAMPLE))
    out = tmp_path / "export.csv"
    cli("export", "--format", "csv", "--out", str(out), timezone=timezone)
    rows = _csv(out)
    source = {r["event_id"]: r["occurred_at"] for r in _csv(EXAMPLE)}
    assert len(rows) == len(source)
    for row in rows:
        at = datetime.fromisoformat(source[row["event_id"]])
        assert row["occurred_at"] == at.astimezone(ZoneInfo(timezone)).isoformat()
    assert [r["occurred_at"] for r in rows] == sorted((r["occurred_at"] for r in rows),
                                                     key=lambda at: datetime.fromisoformat(at).astimezone(UTC))
    fan = json.loads(cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "--json", timezone=timezone).stdout)
    lines = [json.loads(line) for line in cli("export", "--format", "jsonl", timezone=timezone).stdout.splitlines()]
    shown = {i["at"] for i in fan["interactions"]}
    assert shown <= {r["occurred_at"] for r in lines}  # the same text the fan card shows


async def _second_line_account(db: Path, fan_id: int) -> None:
    """A second LINE account on the fan (what merging two LINE fans leaves)."""
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with make_sessionmaker(engine).begin() as s:
            s.add(Identity(fan_id=fan_id, platform="line", external_id="Uold", display_name="舊帳號",
                           name_key="舊帳號", created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    finally:
        await engine.dispose()


def test_a_fan_with_two_accounts_on_one_platform_has_each_interaction_exported_once(cli, tmp_path):
    cli("import", str(EXAMPLE))
    fan = json.loads(cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "--json").stdout)
    asyncio.run(_second_line_account(tmp_path / "main.db", fan["id"]))
    out = tmp_path / "export.csv"
    cli("export", "--format", "csv", "--out", str(out))
    rows = _csv(out)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(_csv(EXAMPLE))
    assert len(json.loads(cli("fan", str(fan["id"]), "--json").stdout)["identities"]) == 2


def test_fans_json_is_every_fan_best_first_whatever_the_chunk(cli, monkeypatch):
    cli("import", str(EXAMPLE))
    whole = json.loads(cli("fans", "--json").stdout)
    monkeypatch.setattr("crm.profiles.CHUNK", 2)  # written two fans at a time
    chunked = cli("fans", "--json").stdout
    assert json.loads(chunked) == whole
    assert chunked == json.dumps(whole, ensure_ascii=False, indent=2) + "\n"  # the same text as before streaming
    assert [f["score"] for f in whole] == sorted((f["score"] for f in whole), reverse=True)
    assert {f["display_name"] for f in whole} >= {"小慧", "ｘｉａｏ"}
    assert json.loads(cli("fans", "--json", "--top", "3").stdout) == whole[:3]
    assert cli("fans", "--json", "--tier", "摯友").stdout in ("[]\n", json.dumps(
        [f for f in whole if f["tier_key"] == "close_friend"], ensure_ascii=False, indent=2) + "\n")


def test_the_json_export_is_the_same_however_the_fans_are_split_by_history(cli, tmp_path, monkeypatch):
    cli("import", str(EXAMPLE))
    whole = tmp_path / "whole.json"
    cli("export", "--format", "json", "--out", str(whole))
    monkeypatch.setattr("bot.exporter.ROWS_PER_CHUNK", 2)  # a fan or two per run: each of them has 1-3 rows
    split = tmp_path / "split.json"
    cli("export", "--format", "json", "--out", str(split))
    fans = json.loads(whole.read_text(encoding="utf-8"))["fans"]
    assert json.loads(split.read_text(encoding="utf-8"))["fans"] == fans
    assert sum(len(f["interactions"]) for f in fans) == len(_csv(EXAMPLE))
