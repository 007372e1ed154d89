"""``superfan tiers``: the calibration view as the creator runs it, text and ``--json``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bot.cli import app
from crm.clock import parse_iso
from crm.db import make_engine, make_read_sessionmaker
from crm.settings import CrmSettings
from tests.crm.test_tier_calibration import every_fan_view

EXAMPLE = Path(__file__).parents[2] / "examples" / "community.csv"
WHEN = "2026-10-20T00:00:00+00:00"


def superfan(tmp_path: Path, *args: str) -> Any:
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), *args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


async def _reference(db: Path, trial: dict[str, float]) -> dict[str, Any]:
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with make_read_sessionmaker(engine)() as session:
            return asdict(await every_fan_view(session, CrmSettings(), parse_iso(WHEN), trial))
    finally:
        await engine.dispose()


def test_tiers_json_is_every_fan_evaluated_and_the_text_names_who_moves(tmp_path: Path) -> None:
    superfan(tmp_path, "import", str(EXAMPLE))
    shown = json.loads(superfan(tmp_path, "tiers", "--json", "--now", WHEN, "--try", "鐵粉=12", "--try", "粉絲=3").stdout)
    reference = asyncio.run(_reference(tmp_path / "main.db", {"superfan": 12.0, "fan": 3.0}))
    assert shown == json.loads(json.dumps(reference, ensure_ascii=False))
    assert [(m["name"], m["from_tier"], m["to_tier"]) for m in shown["moves"]] == [("Alice Chen", "passerby", "fan")]
    text = superfan(tmp_path, "tiers", "--now", WHEN, "--try", "粉絲=3").stdout.splitlines()
    assert text[0] == "今天的分數分布（依等級，單位：分）"
    assert text[-2:] == ["改成 粉絲 3：會有 1 位粉絲變動", "  ↑ #3 Alice Chen：路人 → 粉絲"]
    assert superfan(tmp_path, "tiers", "--now", WHEN).stdout.splitlines()[-1] == \
        "採用新門檻前可以先試算：superfan tiers --try 鐵粉=50"
