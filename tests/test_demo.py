"""``superfan demo`` and ``superfan run --sandbox``: the real app, the emulators, a simulated community.

Everything is checked from what the demo leaves behind (the database it was asked to keep, what
the emulators received, the HTML file), never from its own summary alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console
from sqlalchemy import func, select

from bot.config import Config
from bot.demo import command as demo_command
from bot.demo.command import DemoResult, run_demo
from bot.demo.sandbox import run_sandboxed
from bot.demo.traffic import LINE_GROUP, plan_traffic, snowflake
from bot.i18n import t
from crm.db import make_engine, make_sessionmaker
from crm.models import Conversation, Delivery, Fan, Identity, Interaction, Outbox
from crm.tiers import DEFAULT_TIERS

FANS, DAYS, SEED = 60, 14, 3
#: DMs at this community's size are few; more of them make the inbox part of the test certain.
DM_RATE = 30.0
SECRETS = ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN", "DISCORD_TOKEN", "SUPERFAN_PURCHASE_SECRET")
TRUE_FAN_TIERS = {t.key for t in DEFAULT_TIERS[2:]}  # 鐵粉 and 摯友


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder to run in, and the database the first run keeps."""
    folder = tmp_path_factory.mktemp("demo")
    return folder, folder / "kept.db"


@pytest.fixture(scope="module")
async def first_run(kept: tuple[Path, Path]) -> tuple[DemoResult, str]:
    folder, database = kept
    before = {name: os.environ.get(name) for name in SECRETS}
    console = Console(file=io.StringIO(), width=120)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(demo_command, "DM_RATE", DM_RATE)
            result = await run_demo(Config(), console, fans=FANS, days=DAYS, seed=SEED, database=database)
    finally:
        os.chdir(cwd)
    assert {name: os.environ.get(name) for name in SECRETS} == before  # the sandbox's secrets are gone again
    return result, console.file.getvalue()  # type: ignore[attr-defined]


async def _rows(database: Path, stmt):  # noqa: ANN001, ANN202
    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with make_sessionmaker(engine)() as session:
            return (await session.execute(stmt)).all()
    finally:
        await engine.dispose()


async def test_the_traffic_went_through_the_adapters_with_its_own_times(first_run, kept) -> None:
    result, _ = first_run
    _, database = kept
    traffic = result.traffic
    platforms = {p for (p,) in await _rows(database, select(Identity.platform).distinct())}
    assert platforms == {"line", "discord"}
    stored = Counter({(p, k): n for p, k, n in await _rows(database, select(
        Interaction.platform, Interaction.kind, func.count()).group_by(Interaction.platform, Interaction.kind))})
    group = sum(e["source"]["type"] == "group" for e in traffic.line_events)
    assert stored["line", "message"] == group > 0
    assert stored["line", "checkin"] + stored["line", "dm_in"] == len(traffic.line_events) - group
    assert stored["discord", "message"] == len(traffic.discord_messages) > 0
    assert stored["discord", "dm_in"] == len(traffic.discord_dms)
    assert stored["discord", "reaction"] == len(set(traffic.discord_reactions))
    assert stored["line", "purchase"] + stored["discord", "purchase"] == len(traffic.purchases) > 0
    # Discord stored the time each message id carries, not the time it arrived
    times = {at for (at,) in await _rows(database, select(Interaction.occurred_at).where(
        Interaction.platform == "discord", Interaction.kind == "message"))}
    sent = {datetime.fromtimestamp((((mid >> 22) + 1_420_070_400_000) / 1000), UTC)
            for _, mid, _ in traffic.discord_messages}
    assert {t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in times} == sent
    assert (max(sent) - min(sent)).days >= DAYS - 3  # two weeks of history, stored in seconds


async def test_tiers_the_inbox_and_a_drop_to_exactly_the_true_fans(first_run, kept) -> None:
    result, _ = first_run
    _, database = kept
    tiers = Counter(tier for (tier,) in await _rows(database, select(Fan.tier)))
    assert set(tiers) - {DEFAULT_TIERS[0].key}, tiers  # the refresh and the write path moved fans up
    eligible = {fan for fan, tier, opted_out in await _rows(database, select(Fan.id, Fan.tier, Fan.opted_out))
                if tier in TRUE_FAN_TIERS and not opted_out}
    assert eligible
    drop = result.shown.drop
    assert drop is not None
    deliveries = await _rows(database, select(Delivery.fan_id, Delivery.platform, Delivery.external_id,
                                              Delivery.status).where(Delivery.drop_id == drop.drop_id))
    assert {fan for fan, *_ in deliveries} == eligible
    assert len(deliveries) == len(eligible)  # each true fan once, on one platform
    assert {status for *_, status in deliveries} == {"sent"}
    # what the emulators received: the same people, nobody else
    assert drop.line_received == {ext for _, platform, ext, _ in deliveries if platform == "line"}
    assert drop.discord_received == {ext for _, platform, ext, _ in deliveries if platform == "discord"}

    statuses = Counter(s for (s,) in await _rows(database, select(Conversation.status)))
    assert statuses["answered"] >= 1 and statuses["waiting"] >= 1, statuses
    relays = await _rows(database, select(Outbox.platform, Outbox.status).where(Outbox.kind == "relay"))
    assert len(relays) == statuses["answered"] and {s for _, s in relays} == {"sent"}
    waiting = result.shown.digest["unanswered"]
    assert result.shown.digest["counts"]["unanswered"] == statuses["waiting"]
    assert [u["overdue"] for u in waiting] == sorted((u["overdue"] for u in waiting), reverse=True)


async def test_the_report_and_the_screen(first_run, kept) -> None:
    result, screen = first_run
    folder, _ = kept
    assert result.html == (folder / "demo-report.html").resolve()
    html = result.html.read_text(encoding="utf-8")
    assert "<svg" in html and "鐵粉" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "鐵粉" in screen and str(result.html) in screen
    top = result.shown.stats["top"][0]["display_name"]
    assert top in screen  # the top fan's card


async def test_a_second_run_in_the_same_folder_works(first_run, kept) -> None:
    folder, _ = kept
    before = (folder / "demo-report.html").read_text(encoding="utf-8")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        again = await run_demo(Config(), Console(file=io.StringIO()), fans=FANS, days=DAYS, seed=SEED + 1)
    finally:
        os.chdir(cwd)
    assert again.html == (folder / "demo-report.html").resolve()
    assert again.html.read_text(encoding="utf-8") != before
    assert again.shown.drop is not None and again.shown.stats["fans"] > 0


def test_each_row_goes_to_its_adapter_with_its_time_or_is_skipped_for_a_reason() -> None:
    end = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def row(platform: str, kind: str, hours_ago: float, n: int, **extra: str) -> dict[str, str]:
        ext = "U" + f"{n:032x}" if platform == "line" else str(10**17 + n)
        at = datetime.fromtimestamp(end.timestamp() - hours_ago * 3600, UTC).isoformat()
        return {"platform": platform, "external_id": ext, "display_name": f"fan{n}", "kind": kind, "occurred_at": at,
                "amount": "", "currency": "", "event_id": f"sim-{n}", "text": "hi", **extra}

    rows = [row("line", "message", 200, 1), row("line", "dm_in", 200, 2), row("line", "dm_in", 5, 3),
            row("line", "checkin", 100, 4), row("line", "reaction", 1, 5), row("discord", "message", 300, 6),
            row("discord", "message", 3, 7), row("discord", "reaction", 100, 8), row("discord", "reaction", 2, 9),
            row("discord", "checkin", 1, 10), row("discord", "checkin", 90, 11), row("discord", "dm_in", 1, 12),
            row("discord", "purchase", 50, 13, amount="990", currency="TWD"), row("line", "share", 1, 14)]
    traffic = plan_traffic(rows, end=end, checkin_keyword="打卡")
    line = traffic.line_events
    assert [(e["source"]["type"], e["message"]["text"]) for e in line] == [("group", "hi"), ("user", "hi"),
                                                                          ("user", "打卡")]
    assert line[0]["timestamp"] == int(datetime.fromisoformat(rows[0]["occurred_at"]).timestamp() * 1000)
    assert traffic.line_replies == [1]  # only the recent 1:1 message gets a reply token
    assert [a for a, _, _ in traffic.discord_messages] == [10**17 + 6, 10**17 + 7]
    assert [(u, m) for u, m, _ in traffic.discord_reactions] == [(10**17 + 9, traffic.discord_messages[1][1])]
    assert traffic.discord_checkins == [10**17 + 10] and [a for a, _, _ in traffic.discord_dms] == [10**17 + 12]
    assert traffic.purchases == [{"order_id": "sim-13", "amount": 990, "currency": "TWD",
                                  "time": rows[12]["occurred_at"], "customer": {"discord_user_id": str(10**17 + 13)},
                                  "display_name": "fan13"}]
    assert traffic.skipped == Counter({"line:dm_in": 1, "line:reaction": 1, "discord:reaction": 1,
                                       "discord:checkin": 1, "line:share": 1})
    assert "line:checkin" in plan_traffic(rows, end=end, checkin_keyword=None).skipped


def test_snowflakes_carry_the_time_and_stay_apart() -> None:
    at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    a, b = snowflake(at, 1), snowflake(at, 2)
    assert a != b
    assert datetime.fromtimestamp(((a >> 22) + 1_420_070_400_000) / 1000, UTC) == at


async def test_run_sandbox_takes_signed_line_webhooks_with_no_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    said: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_sandboxed(Config(), said.append, stop=stop))
    try:
        ready = t("run.ready", "zh-TW")
        for _ in range(600):
            if ready in said or task.done():
                break
            await asyncio.sleep(0.05)
        web = re.search(r"(http://127\.0\.0\.1:\d+)/line/webhook", "\n".join(said))
        assert web, said
        database = Path(re.search(r"(/\S+sandbox\.db)", said[0]).group(1))  # type: ignore[union-attr]
        assert await asyncio.to_thread(database.exists)
        body = json.dumps({"destination": "U" + "0" * 32, "events": [{
            "type": "message", "mode": "active", "timestamp": 1_764_000_000_000, "webhookEventId": "01SANDBOXTEST",
            "deliveryContext": {"isRedelivery": False}, "source": {"type": "group", "groupId": LINE_GROUP,
                                                                    "userId": "U" + "1" * 32},
            "message": {"id": "1", "type": "text", "quoteToken": "q", "text": "哈囉"}}]}).encode()
        secret = re.search(r"channel secret ([0-9a-f]{32})", said[0]).group(1).encode()  # type: ignore[union-attr]
        signature = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
        async with aiohttp.ClientSession() as http:
            async with http.post(web.group(1) + "/line/webhook", data=body, headers={
                    "Content-Type": "application/json", "X-Line-Signature": signature}) as answer:
                assert answer.status == 200 and (await answer.json())["stored"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert not await asyncio.to_thread(database.parent.exists)  # the temporary database is gone
    assert not any(os.environ.get(name) for name in SECRETS)


def test_ctrl_c_stops_the_demo_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGINT while the community is being sent: exit 130, the temporary folder removed."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen([str(Path(sys.executable).parent / "superfan"), "demo", "--fans", "200", "--days", "30"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "LINE webhook" in line and line.startswith("…"):  # the app is up and the community is on its way
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(lines) + rest
    assert list(temp.iterdir()) == []
    assert not (tmp_path / "demo-report.html").exists()
