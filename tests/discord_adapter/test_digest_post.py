"""The queued digest reaches the staff channel as one embed, once, through the real Discord sender."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.discord_adapter.client import SuperfanBot
from bot.discord_adapter.digest_post import digest_embed
from bot.discord_adapter.outbox_sender import DiscordOutboxSender, nonce_of
from bot.outbox_drain import OutboxDrainer
from bot.sandbox.discord_emulator import DiscordEmulator
from crm import outbox
from crm.digest import build_digest
from crm.digest_runs import Destinations, claim_digest
from crm.models import Outbox
from crm.settings import CrmSettings
from tests.crm.test_digest import NOW, seed
from tests.discord_adapter.conftest import GENERAL
from tests.discord_adapter.test_outbox_sender import transactor


async def test_the_digest_is_one_embed_in_the_staff_channel_and_a_resend_is_the_same_message(
        emu: DiscordEmulator, bot: SuperfanBot, sessions: async_sessionmaker[AsyncSession],
        settings: CrmSettings) -> None:
    await seed(sessions, settings)
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    async with sessions.begin() as s:
        (row_id,) = await claim_digest(s, "2026-11-22", NOW, digest=digest,  # type: ignore[misc]
                                       to=Destinations(discord_channel=str(GENERAL)))
    drainer = OutboxDrainer("discord", transactor(sessions), DiscordOutboxSender(lambda: bot), clock=lambda: NOW)
    assert await drainer.drain_once() == 1
    sent = [m for m in emu.world.sent if m["channel_id"] == str(GENERAL)]
    assert len(sent) == 1
    (embed,) = sent[0]["embeds"]
    assert embed["title"] == "每日摘要 2026-11-22"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["待回覆：3 位（已逾時 1 位）"].splitlines()[0] == "⚠️ 小慧（摯友，Discord）等了 48 小時，11-21 20:00 前要回覆"
    assert "阿明（鐵粉）已 30 天沒互動" in fields["鐵粉沉寂中（14 天以上沒互動）：1 位"]
    assert "鐵粉以上：3 / 目標 1000 位（0.3%）" in embed["description"]

    async with sessions.begin() as s:  # a crash after Discord took it, before "sent" was stored
        stored = (await s.execute(select(Outbox).where(Outbox.id == row_id))).scalar_one()
        assert sent[0]["nonce"] == str(nonce_of(stored.idempotency_key))
        await s.execute(Outbox.__table__.update().where(Outbox.id == row_id).values(status="sending"))
        assert await outbox.recover_interrupted(s, "discord", NOW + timedelta(minutes=5)) == [row_id]
    later = OutboxDrainer("discord", transactor(sessions), DiscordOutboxSender(lambda: bot),
                          clock=lambda: NOW + timedelta(minutes=5))
    assert await later.drain_once() == 1
    assert len([m for m in emu.world.sent if m["channel_id"] == str(GENERAL)]) == 1


def test_long_lists_fit_discords_embed_limits_and_say_how_many_more() -> None:
    person = {"display_name": "很長的名字" * 8, "tier": "鐵粉", "last_seen": None, "days_quiet": 20, "fan_id": 1}
    digest = {"generated_at": "2026-11-22T09:00:00+08:00", "locale": "en", "since": "2026-11-21T09:00:00+08:00",
              "unanswered": [], "tier_changes": [], "asked_after_you": [], "anniversaries": [],
              "quiet_superfans": [person] * 50, "quiet_after_days": 14,
              "sla": {"window_days": 7, "conversations": 0, "answered": 0, "within_sla": 0, "within_sla_pct": None,
                      "median_first_response_hours": None, "breaches": 0},
              "true_fans": {"count": 0, "goal": 1000, "progress_pct": 0.0, "tier": "True fan"},
              "counts": {"unanswered": 0, "overdue": 0, "tier_changes": 0, "quiet_superfans": 700,
                         "asked_after_you": 0, "anniversaries": 0}}
    embed = digest_embed(digest)
    assert len(embed) <= 6000 and all(len(f.value or "") <= 1024 for f in embed.fields)
    quiet = next(f.value or "" for f in embed.fields if (f.name or "").startswith("True fans gone quiet"))
    shown = quiet.count("quiet for 20 days")
    assert quiet.splitlines()[-1] == f"…and {700 - shown} more"
    assert "Waiting for an answer: nobody" in (embed.description or "")
