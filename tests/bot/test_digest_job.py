"""The scheduled digest through the real job and scheduler, and ``superfan digest`` on fixed data."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from bot import digest_job
from bot.app import Crm
from bot.cli import app
from bot.config import Config, CreatorConfig, DigestConfig, DiscordConfig, LineConfig
from bot.digest_job import DigestJob
from bot.jobs import build_scheduler
from crm.db import make_engine, make_sessionmaker
from crm.models import JobRun, Outbox
from crm.schema import migrate
from crm.settings import CrmSettings
from tests.crm.test_digest import NOW, expected_lists, seed, without_conversation_ids

STAFF_CHANNEL = 900_000_000_000_000_001
TAIPEI_10AM = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def config(timezone: str = "Asia/Taipei", line_user: str = "") -> Config:
    return Config(creator=CreatorConfig(timezone=timezone),
                  discord=DiscordConfig(enabled=True, staff_channel_id=STAFF_CHANNEL),
                  line=LineConfig(enabled=bool(line_user)), digest=DigestConfig(line_user_id=line_user))


def crm_of(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], cfg: Config) -> Crm:
    return Crm(cfg, engine, sessions, cfg.crm_settings())


async def rows(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[str], list[tuple[str, str, str]]]:
    async with sessions() as s:
        runs = list((await s.execute(select(JobRun.run_key))).scalars())
        out = [tuple(r) for r in (await s.execute(select(Outbox.platform, Outbox.kind, Outbox.recipient)
                                                  .where(Outbox.kind.in_(["digest", "digest_line"]))))]
    return runs, sorted(out)  # type: ignore[arg-type]


@pytest.mark.parametrize(("timezone", "after", "expected"), [
    ("Asia/Taipei", datetime(2026, 11, 22, 2, 0, tzinfo=UTC), "2026-11-23T09:00:00+08:00"),
    # New York springs forward on 8 March 2026 and falls back on 1 November: 09:00 stays 09:00.
    ("America/New_York", datetime(2026, 3, 7, 15, 0, tzinfo=UTC), "2026-03-08T09:00:00-04:00"),
    ("America/New_York", datetime(2026, 10, 31, 14, 0, tzinfo=UTC), "2026-11-01T09:00:00-05:00"),
])
def test_the_daily_trigger_is_nine_on_the_creators_wall_clock(engine, sessions, timezone, after, expected):
    job = DigestJob(crm_of(engine, sessions, config(timezone)))
    fire = job.trigger().get_next_fire_time(None, after)
    assert fire is not None and fire.isoformat() == expected


async def test_before_the_digest_time_nothing_is_claimed_and_after_it_once(engine, sessions):
    await seed(sessions, CrmSettings())
    crm = crm_of(engine, sessions, config(line_user="Ucreator"))
    assert await DigestJob(crm, clock=lambda: datetime(2026, 11, 22, 0, 30, tzinfo=UTC)).run() is None  # 08:30
    queued = await DigestJob(crm, clock=lambda: TAIPEI_10AM).run()
    assert queued is not None and len(queued) == 2
    assert await DigestJob(crm, clock=lambda: TAIPEI_10AM + timedelta(hours=5)).run() is None
    assert await rows(sessions) == (["2026-11-21", "2026-11-22"], [
        ("discord", "digest", str(STAFF_CHANNEL)), ("line", "digest_line", "Ucreator")])
    async with sessions() as s:
        payloads = {k: json.loads(p) for k, p in (await s.execute(select(Outbox.kind, Outbox.payload)
                                                                  .where(Outbox.kind.like("digest%")))).all()}
    assert payloads["digest"]["counts"]["unanswered"] == 3
    assert payloads["digest_line"]["text"].startswith("每日摘要 2026-11-22\n待回覆 3 位（逾時 1 位）")
    assert "小慧" not in payloads["digest_line"]["text"]  # the LINE push carries counts, no names


async def test_two_schedulers_on_one_database_queue_one_digest(engine, sessions, db_url):
    other_engine = make_engine(db_url)
    try:
        jobs = [DigestJob(crm_of(engine, sessions, config()), clock=lambda: TAIPEI_10AM),
                DigestJob(crm_of(other_engine, make_sessionmaker(other_engine), config()), clock=lambda: TAIPEI_10AM)]
        results = await asyncio.gather(*(job.run() for job in jobs))
    finally:
        await other_engine.dispose()
    assert sorted(r is None for r in results) == [False, True]
    assert await rows(sessions) == (["2026-11-22"], [("discord", "digest", str(STAFF_CHANNEL))])


async def test_a_crash_between_claim_and_commit_runs_again_and_a_committed_run_does_not(engine, sessions,
                                                                                     monkeypatch):
    crm = crm_of(engine, sessions, config())
    real_claim = digest_job.claim_digest

    async def claim_then_die(*args: Any, **kwargs: Any) -> Any:
        await real_claim(*args, **kwargs)
        raise ConnectionError("the process died before the commit")

    monkeypatch.setattr(digest_job, "claim_digest", claim_then_die)
    with pytest.raises(ConnectionError):
        await DigestJob(crm, clock=lambda: TAIPEI_10AM).run()
    assert await rows(sessions) == ([], [])
    monkeypatch.setattr(digest_job, "claim_digest", real_claim)
    assert await DigestJob(crm, clock=lambda: TAIPEI_10AM).run() is not None
    assert await DigestJob(crm, clock=lambda: TAIPEI_10AM).run() is None
    assert await rows(sessions) == (["2026-11-22"], [("discord", "digest", str(STAFF_CHANNEL))])


async def start_and_wait_for_the_check(crm: Crm, clock: Any) -> None:
    """Start the app's scheduler (as ``superfan run`` does) until the start-up digest check has run."""
    scheduler = build_scheduler(crm, clock=clock)
    done = asyncio.Event()

    def on_event(event: JobExecutionEvent) -> None:
        if event.job_id == "digest_check":
            done.set()

    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        scheduler.shutdown(wait=False)


async def test_a_digest_missed_during_downtime_goes_out_once_at_start(engine, sessions):
    crm = crm_of(engine, sessions, config())
    # Down at 09:00; started at 10:00 local: the check at start sends today's digest.
    await start_and_wait_for_the_check(crm, lambda: TAIPEI_10AM)
    assert await rows(sessions) == (["2026-11-22"], [("discord", "digest", str(STAFF_CHANNEL))])
    # Restarted the same day: nothing more.
    await start_and_wait_for_the_check(crm, lambda: TAIPEI_10AM + timedelta(hours=3))
    assert await rows(sessions) == (["2026-11-22"], [("discord", "digest", str(STAFF_CHANNEL))])


def test_superfan_digest_json_prints_the_exact_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'digest.db'}"

    async def prepare() -> dict[str, int]:
        await migrate(url)
        eng = make_engine(url)
        try:
            return await seed(make_sessionmaker(eng), CrmSettings())
        finally:
            await eng.dispose()

    ids = asyncio.run(prepare())
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["--config", str(cfg), "digest", "--json", "--now", NOW.isoformat()])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    digest = json.loads(result.stdout)
    expected = expected_lists(ids)
    assert without_conversation_ids(digest["unanswered"]) == expected["unanswered"]
    assert {k: digest[k] for k in ("tier_changes", "quiet_superfans", "asked_after_you", "anniversaries")} == {
        k: expected[k] for k in ("tier_changes", "quiet_superfans", "asked_after_you", "anniversaries")}
    assert digest["drops"] == [] and digest["generated_at"] == "2026-11-22T20:00:00+08:00"

    text = CliRunner().invoke(app, ["--config", str(cfg), "digest", "--now", NOW.isoformat()])
    assert text.exit_code == 0, text.stderr
    assert "待回覆：3 位（已逾時 1 位）" in text.stdout
    assert "⚠️ 小慧（摯友，Discord）等了 48 小時，11-21 20:00 前要回覆" in text.stdout
    assert "Ken（粉絲，LINE）說了「are you ok」" in text.stdout
    assert "阿明（鐵粉）認識第 2 年了" in text.stdout
