"""Fan documents for many fans at once (the JSON export, lists): each fan's own newest interactions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan
from crm.profiles import CHUNK, fan_documents


@pytest.mark.parametrize("few_fans", [0, 10], ids=["ranked in chunks", "a query per fan"])
async def test_each_fan_gets_its_own_newest_interactions_newest_first(sessions, settings, now, monkeypatch,
                                                                      few_fans):
    monkeypatch.setattr("crm.profiles.FEW_FANS", few_fans)
    monkeypatch.setattr("crm.profiles.CHUNK", 2)  # several fans per query, and more than one query
    assert CHUNK > 2
    start = now - timedelta(days=10)
    items = [InteractionIn("line", f"U{fan}", "message", start + timedelta(hours=n * 5 + fan), f"e{fan}-{n}",
                           f"粉絲{fan}", text=f"{fan}:{n}")
             for fan in range(5) for n in range(fan + 1)]  # fan k has k + 1 messages
    async with sessions.begin() as s:
        await record_many(s, items, settings, now)
    async with sessions() as s:
        fans = list((await s.execute(select(Fan).order_by(Fan.id))).scalars())
        capped = await fan_documents(s, fans, settings, now, interactions=3)
        everything = await fan_documents(s, fans, settings, now, interactions=10**9)
        bare = await fan_documents(s, fans, settings, now, interactions=None)
    by_name = {d["display_name"]: d for d in capped}
    for fan in range(5):
        summaries = [i["summary"] for i in by_name[f"粉絲{fan}"]["interactions"]]
        newest = [f"{fan}:{n}" for n in reversed(range(fan + 1))]
        assert summaries == newest[:3]
    assert [len(d["interactions"]) for d in everything] == [1, 2, 3, 4, 5]
    assert all("interactions" not in d for d in bare)
