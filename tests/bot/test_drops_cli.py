"""``superfan drop create|list|show`` as staff use it: a preview that says who is left out and what
it costs on LINE, a refusal over the month's quota with the way out, and the results afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bot.cli import app
from bot.sandbox.line_emulator import LineEmulator
from crm.clock import utcnow
from crm.db import make_engine, make_sessionmaker
from crm.schema import migrate
from tests.crm.test_drops import add_fan

Cli = Callable[..., Any]


async def seed(url: str) -> None:
    await migrate(url)
    engine = make_engine(url)
    now = utcnow()
    try:
        async with make_sessionmaker(engine).begin() as s:
            for n in range(6):
                await add_fan(s, n, now, discord="member" if n < 2 else None)
            await add_fan(s, 6, now, line="unfollowed")
            await add_fan(s, 7, now, line=None, discord="dms_closed")
            await add_fan(s, 8, now, opted_out=True)
            await add_fan(s, 9, now, tier="fan")
    finally:
        await engine.dispose()


@pytest.fixture
async def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``superfan --config …`` over a seeded database, LINE pointed at the emulator (10 messages a
    month, 4 already spent), run in a thread since the CLI runs its own event loop."""
    db = tmp_path / "drops.db"
    await seed(f"sqlite+aiosqlite:///{db}")
    async with LineEmulator(monthly_quota=10) as emu:
        emu.total_usage = 4
        config = tmp_path / "superfan.toml"
        config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n[creator]\nlocale = "en"\n'
                          f'[line]\nenabled = true\napi_base = "{emu.base_url}"\nmonthly_quota = 10\n'
                          f'[discord]\nenabled = true\n[drops]\nprefer = "line"\n', encoding="utf-8")
        env = {"LINE_CHANNEL_ACCESS_TOKEN": emu.access_token, "SUPERFAN_CONFIG": ""}

        async def run(*args: str, expect: int = 0) -> Result:
            result = await asyncio.to_thread(CliRunner(env=env).invoke, app, ["--config", str(config), *args])
            assert result.exit_code == expect, (result.stdout, result.stderr)
            return result

        run.db = db  # type: ignore[attr-defined]
        yield run


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def test_dry_run_previews_and_writes_nothing(cli: Cli) -> None:
    out = (await cli("drop", "create", "--min-tier", "鐵粉", "--text", "New song, first listen", "--dry-run")).stdout
    assert "Fans who will receive it: 6 (LINE 6, Discord 0)" in out  # prefer = "line"
    assert "blocked or unfollowed the LINE account: 1" in out
    assert "Discord DMs closed: 1" in out and "opted out: 1" in out
    assert "LINE quota: this uses 6 messages; 6 left this month (limit 10)" in out
    assert "Sample recipients: fan0" in out and "nothing was sent" in out
    assert rows(cli.db, "SELECT count(*) FROM drops") == [(0,)]
    data = json.loads((await cli("drop", "create", "--min-tier", "鐵粉", "--text", "x", "--dry-run", "--json")).stdout)
    assert data["counts"] == {"line": 6, "discord": 0} and data["fits"] and data["quota_left"] == 6


async def test_over_the_quota_is_refused_and_discord_only_goes_ahead(cli: Cli) -> None:
    await cli("drop", "create", "--min-tier", "鐵粉", "--text", "first", "--platform", "line")
    refused = await cli("drop", "create", "--min-tier", "鐵粉", "--text", "second", expect=2)  # 6 queued, 6 left
    assert "needs 6 LINE messages but only 0 are left this month" in refused.stderr
    assert "--platform discord" in refused.stderr
    assert rows(cli.db, "SELECT count(*) FROM drops") == [(1,)]
    made = json.loads((await cli("drop", "create", "--min-tier", "鐵粉", "--text", "second", "--platform", "discord",
                                 "--json")).stdout)
    assert made["counts"] == {"line": 0, "discord": 2} and made["discord_dms"] == 2
    assert rows(cli.db, "SELECT kind, count(*) FROM outbox GROUP BY kind ORDER BY kind") == [
        ("drop_dm", 2), ("drop_multicast", 1)]


async def test_list_and_show_report_what_happened(cli: Cli) -> None:
    made = json.loads((await cli("drop", "create", "--min-tier", "鐵粉", "--text", "behind the scenes",
                                 "--link", "https://example.com/bts", "--sponsored", "--json")).stdout)
    listed = (await cli("drop", "list")).stdout
    assert f"#{made['id']} sending" in listed and "#sponsored" in listed and "pending 6" in listed
    shown = json.loads((await cli("drop", "show", str(made["id"]), "--json")).stdout)
    assert shown["per_platform"]["line"] == {"sent": 0, "failed": 0, "pending": 6}
    assert shown["text"] == "behind the scenes" and shown["sponsored"] and shown["quota_used"] == 0
    missing = await cli("drop", "show", "999", expect=2)
    assert "There is no drop #999." in missing.stderr


async def test_bad_input_is_a_usage_error_in_one_line(cli: Cli) -> None:
    for args, says in ((["--platform", "telegram"], "Platforms are line and/or discord, not “telegram”."),
                       (["--at", "tomorrow"], "--at “tomorrow” needs an ISO-8601 time with a UTC offset"),
                       (["--image", "http://cdn.example/a.png"], "is not usable"),
                       (["--min-tier", "king"], "Unknown tier “king”")):
        result = await cli("drop", "create", "--min-tier", "鐵粉", "--text", "x", *args, expect=2)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert rows(cli.db, "SELECT count(*) FROM drops") == [(0,)]


async def test_a_scheduled_drop_says_when_and_waits(cli: Cli) -> None:
    made = json.loads((await cli("drop", "create", "--min-tier", "鐵粉", "--text", "x", "--platform", "line",
                                 "--at", "2026-12-24T20:00:00+08:00", "--now", "2026-12-24T10:00:00+08:00",
                                 "--json")).stdout)
    assert rows(cli.db, "SELECT status FROM drops") == [("scheduled",)]
    due = rows(cli.db, "SELECT next_attempt_at FROM outbox")
    assert [d[0][:16] for d in due] == ["2026-12-24 12:00"]  # stored in UTC
    listed = (await cli("drop", "list", "--now", "2026-12-24T10:00:00+08:00")).stdout
    assert f"#{made['id']} scheduled" in listed and "at 2026-12-24 20:00" in listed
