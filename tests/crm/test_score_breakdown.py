"""A fan card's score explained per kind (summed in SQL) is what the stored rows say, for one fan or a list."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Fan, Interaction
from crm.profiles import fan_documents, ranked_fan_chunks, ranked_fans
from crm.scoring import breakdown, current_scores
from crm.tiers_service import evidence_for


def _history(now):
    """Three fans over 120 days: chat (capped per day), shares, check-ins, purchases."""
    items = []
    for fan in range(3):
        for day in range(0, 120, fan + 1):
            at = now - timedelta(days=day, hours=fan)
            ext = f"U{fan}"
            items += [InteractionIn("line", ext, "message", at + timedelta(minutes=m), f"m{fan}-{day}-{m}", f"粉絲{fan}",
                                    text="hi") for m in range(4)]
            if day % 7 == 0:
                items.append(InteractionIn("line", ext, "share", at, f"s{fan}-{day}"))
            if day % 5 == 0:
                items.append(InteractionIn("line", ext, "checkin", at, f"c{fan}-{day}"))
            if day % 30 == 0:
                items.append(InteractionIn("line", ext, "purchase", at, f"p{fan}-{day}", amount=Decimal(1280 + day),
                                           currency="TWD"))
    return items


async def test_the_breakdown_and_the_tier_standing_match_the_stored_rows(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, _history(now), settings, now)
    later = now + timedelta(days=3)  # read at another time than written: decay is worked out at read time
    async with sessions() as s:
        fans = list((await s.execute(select(Fan).order_by(Fan.id))).scalars())
        docs = await fan_documents(s, fans, settings, later, interactions=None)
        state, _ = await current_scores(s, settings.scoring, later)
        for fan, doc in zip(fans, docs, strict=True):
            rows = (await s.execute(select(Interaction.kind, Interaction.points, Interaction.occurred_at)
                                    .where(Interaction.fan_id == fan.id))).all()
            expected = breakdown(rows, later, state.half_life_days)
            assert set(doc["score_explained"]) == set(expected) == {"message", "share", "checkin", "purchase"}
            for kind, figures in expected.items():
                got = doc["score_explained"][kind]
                assert got["count"] == figures["count"]
                assert abs(got["points"] - figures["points"]) <= 0.011 and abs(got["decayed"] - figures["decayed"]) <= 0.011
            assert doc["score_breakdown"] == {k: v["decayed"] for k, v in doc["score_explained"].items()}
            evidence = await evidence_for(s, settings, fan, later)
            standing = settings.tiers.standing(fan.tier, doc["score"], fan.tier_pinned, evidence)
            assert doc["tier_standing"] == asdict(standing)
        (one,) = await fan_documents(s, fans[1:2], settings, later, interactions=3)  # a card: the same figures
        assert one["score_explained"] == docs[1]["score_explained"] and len(one["interactions"]) == 3


async def test_a_list_in_chunks_is_the_ranked_list(sessions, settings, now):
    async with sessions.begin() as s:
        await record_many(s, _history(now), settings, now)
    async with sessions() as s:
        ranked = await ranked_fans(s, settings, now)
        chunks = [chunk async for chunk in ranked_fan_chunks(s, settings, now, chunk=2)]
        assert [len(c) for c in chunks] == [2, 1]
        assert [f.id for c in chunks for f in c] == [f.id for f in ranked]
        assert [f.id for c in [x async for x in ranked_fan_chunks(s, settings, now, top=1)] for f in c] == [ranked[0].id]
        whole = await fan_documents(s, ranked, settings, now, interactions=None)
        assert [d for c in chunks for d in await fan_documents(s, c, settings, now, interactions=None)] == whole
