"""The scheduled tier refresh: decay demotes quiet fans through the real job function."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.app import Crm
from bot.config import Config
from bot.jobs import build_scheduler, refresh_tiers_job
from bot.writer import GroupWriter
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan


async def test_refresh_job_demotes_after_months_of_silence(engine, sessions, settings, now):
    crm = Crm(Config(), engine, sessions, settings)
    async with sessions.begin() as s:
        r = await record_many(s, [InteractionIn("line", "Uq", "purchase", now - timedelta(days=n), f"q{n}", "阿明",
                                                amount=Decimal(2000), currency="TWD") for n in range(5)],
                              settings, now)
    assert await refresh_tiers_job(crm, clock=lambda: now) == 0
    assert await refresh_tiers_job(crm, clock=lambda: now + timedelta(days=240)) == 1
    async with sessions() as s:
        fan = await s.get(Fan, r.results[0].fan_id)
        assert fan is not None and fan.tier == "fan"


def test_scheduler_has_the_tier_job(engine, sessions, settings):
    scheduler = build_scheduler(Crm(Config(), engine, sessions, settings))
    assert {job.id for job in scheduler.get_jobs()} >= {"refresh_tiers", "digest", "digest_check", "sla_clock"}


async def test_a_job_due_while_the_loop_was_busy_runs_late_instead_of_being_skipped(engine, sessions, settings):
    ran: list[str] = []

    async def reconcile() -> None:
        ran.append("reconcile_roles")

    scheduler = build_scheduler(Crm(Config(), engine, sessions, settings), extra={"reconcile_roles": reconcile})
    job = scheduler.get_job("reconcile_roles")
    scheduler.start(paused=True)
    try:
        job.modify(next_run_time=datetime.now(UTC) - timedelta(seconds=30))  # its time passed 30 s ago
        for other in scheduler.get_jobs():
            if other.id != "reconcile_roles":
                other.pause()
        scheduler.resume()
        for _ in range(200):
            if ran:
                break
            await asyncio.sleep(0.01)
    finally:
        scheduler.shutdown(wait=False)
    assert ran == ["reconcile_roles"]


async def test_with_the_app_writer_the_refresh_queues_with_webhook_writes_in_chunks(engine, sessions, settings, now,
                                                                                    monkeypatch):
    crm = Crm(Config(), engine, sessions, settings)
    async with sessions.begin() as s:
        r = await record_many(s, [InteractionIn("line", f"U{k}", "purchase", now - timedelta(days=n), f"q{k}-{n}",
                                                f"阿明{k}", amount=Decimal(2000), currency="TWD")
                                  for k in range(3) for n in range(5)], settings, now)
    writer = GroupWriter(sessions, settings)
    await writer.start()
    monkeypatch.setattr("bot.jobs.REFRESH_CHUNK", 2)

    def own_transaction(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the job took SQLite's write lock beside the writer")

    monkeypatch.setattr(sessions, "begin", own_transaction)
    try:
        assert await refresh_tiers_job(crm, clock=lambda: now + timedelta(days=240), writer=writer) == 3
    finally:
        await writer.close()
    assert writer.ops == 1 + 2  # the score epoch, then three fans two at a time
    async with sessions() as s:
        tiers = {(await s.get(Fan, fan_id)).tier for fan_id in set(r.fan_ids)}  # type: ignore[union-attr]
    assert tiers == {"fan"}


async def test_the_sla_clock_reminds_before_due_and_records_the_breach_once_each(engine, sessions, now):
    from dataclasses import replace

    from sqlalchemy import select

    from bot.jobs import sla_clock_job
    from crm.models import ConversationWait, Outbox

    config = Config()
    settings = config.crm_settings()
    settings = replace(settings, sla=replace(settings.sla, inbox=True))  # a Discord inbox is configured
    crm = Crm(config, engine, sessions, settings)
    asked = now - timedelta(hours=21)  # due in 3 h: inside the 4-hour reminder window
    async with sessions.begin() as s:
        await record_many(s, [InteractionIn("line", "Uw", "dm_in", asked, "dm-1", "小美", text="請問有貨嗎？")],
                          settings, now)
    writer = GroupWriter(sessions, settings)
    await writer.start()
    try:
        assert await sla_clock_job(crm, clock=lambda: now, writer=writer) == (1, 0)
        assert await sla_clock_job(crm, clock=lambda: now + timedelta(minutes=1), writer=writer) == (0, 0)
        assert await sla_clock_job(crm, clock=lambda: now + timedelta(hours=3), writer=writer) == (0, 1)
        assert await sla_clock_job(crm, clock=lambda: now + timedelta(hours=4), writer=writer) == (0, 0)
    finally:
        await writer.close()
    async with sessions() as s:
        kinds = sorted((await s.execute(select(Outbox.kind).where(Outbox.kind.like("sla_%")))).scalars())
        (wait,) = (await s.execute(select(ConversationWait))).scalars()
    assert kinds == ["sla_breach", "sla_reminder"]
    assert wait.reminded_at == now and wait.breached_at == now + timedelta(hours=3)
