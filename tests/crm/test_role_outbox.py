"""The tier-change outbox that role sync drains: pending rows, platform tiers, marking."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from crm import role_outbox
from crm.ingest import record_many
from crm.interaction import InteractionIn


async def test_pending_changes_are_drained_and_marked(sessions, settings, now):
    buys = [InteractionIn("discord", "42", "purchase", now - timedelta(days=n), f"o{n}", "阿明",
                          amount=Decimal(2000), currency="TWD") for n in range(5)]
    async with sessions.begin() as s:
        result = await record_many(s, buys + [InteractionIn("line", "Uq", "message", now, "m", "小慧")], settings, now)
    fan_id = result.results[0].fan_id
    async with sessions.begin() as s:
        pending = await role_outbox.pending_changes(s)
        assert [fid for _, fid in pending] == [fan_id]
        assert await role_outbox.platform_tiers(s, "discord", fan_ids=[fan_id]) == [(fan_id, "42", "superfan")]
        assert await role_outbox.platform_tiers(s, "discord", external_ids=["42", "999"]) == [(fan_id, "42", "superfan")]
        assert await role_outbox.mark_synced(s, [cid for cid, _ in pending], now) == 1
    async with sessions.begin() as s:
        assert await role_outbox.pending_changes(s) == []
        assert await role_outbox.latest_change_id(s) == pending[0][0]
        assert await role_outbox.mark_synced_through(s, pending[0][0], now) == 0
