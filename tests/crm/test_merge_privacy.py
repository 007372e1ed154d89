"""Merging two records of one person, erasing a fan, opting out."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from bot.exporter import write_export
from crm.errors import BadInput, FanNotFound
from crm.fan_actions import issue_link_code
from crm.fan_tables import FAN_REFERENCES, FAN_TABLES
from crm.ingest import record, record_many
from crm.interaction import InteractionIn
from crm.merge import merge_fans
from crm.models import Base, Conversation, Delivery, Drop, Fan, Identity, Interaction, Note
from crm.privacy import erase_fan, export_rows, forget_fan, set_opt_out
from crm.profiles import fan_documents
from crm.tiers_service import pin
from crm.topics import add_note, add_topic


async def _two_fans(sessions, settings, now):
    at = now - timedelta(days=3)
    async with sessions.begin() as s:
        d = await record_many(s, [
            InteractionIn("discord", "555", "message", at, "m1", "Hui#1"),
            InteractionIn("discord", "555", "share", at + timedelta(hours=1), "m2", "Hui#1"),
        ], settings, now)
        line = await record(s, InteractionIn("line", "Uhui", "purchase", at, "o1", "小慧",
                                             amount=Decimal(2000), currency="TWD"), settings, now)
        dfan, lfan = d.results[0].fan_id, line.fan_id
        await add_topic(s, dfan, "coffee", source="fan", now=now)
        await add_topic(s, lfan, "Coffee", source="fan", now=now)
        await add_topic(s, lfan, "便當", source="staff", now=now)
        await add_note(s, lfan, "likes bento, ask about Taipei meetup", author="staff", now=now)
    return dfan, lfan


async def test_merge_moves_everything_and_adds_scores(sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    async with sessions() as s:
        before = {f.id: f.score_base for f in (await s.execute(select(Fan))).scalars()}
    async with sessions.begin() as s:
        await merge_fans(s, settings, lfan, dfan, now=now)
    async with sessions() as s:
        assert await s.get(Fan, dfan) is None
        fan = await s.get(Fan, lfan)
        assert fan is not None
        assert fan.score_base == pytest.approx(before[dfan] + before[lfan])
        (doc,) = await fan_documents(s, [fan], settings, now)
    assert {i["platform"] for i in doc["identities"]} == {"discord", "line"}
    assert len(doc["interactions"]) == 3
    assert doc["preferences"] == ["coffee"] and doc["tags"] == ["便當"]
    assert doc["notes"][0]["text"].startswith("likes bento")
    assert set(doc["score_breakdown"]) == {"message", "share", "purchase"}


async def test_merge_keeps_the_stronger_pin(sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    async with sessions.begin() as s:
        await pin(s, settings, dfan, "close_friend", by="creator", now=now)
        await merge_fans(s, settings, lfan, dfan, now=now)
    async with sessions() as s:
        fan = await s.get(Fan, lfan)
        assert fan is not None and fan.tier == "close_friend" and fan.tier_pinned == "close_friend"


async def test_merge_refuses_self_and_unknown(sessions, settings, now):
    dfan, _ = await _two_fans(sessions, settings, now)
    async with sessions() as s:
        with pytest.raises(BadInput):
            await merge_fans(s, settings, dfan, dfan, now=now)
        with pytest.raises(FanNotFound):
            await merge_fans(s, settings, dfan, 999_999, now=now)


async def test_erase_leaves_nothing_of_the_fan_in_any_table(sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    async with sessions.begin() as s:
        await merge_fans(s, settings, lfan, dfan, now=now)
        await pin(s, settings, lfan, "close_friend", by="creator", now=now)
    async with sessions.begin() as s:
        assert await erase_fan(s, lfan) > 5
    async with sessions() as s:
        for table in Base.metadata.sorted_tables:
            rows = (await s.execute(select(table))).all()
            flat = " ".join(str(v) for row in rows for v in row)
            if "fan_id" in table.c:
                assert not [r for r in rows if r._mapping["fan_id"] == lfan], table.name
            assert "Uhui" not in flat and "555" not in flat and "小慧" not in flat, table.name
        assert (await s.execute(select(Interaction))).first() is None
        assert (await s.execute(select(Identity))).first() is None
        assert (await s.execute(select(Note))).first() is None


async def test_export_rows_cover_every_interaction(sessions, settings, now):
    await _two_fans(sessions, settings, now)
    async with sessions() as s:
        rows = [r async for r in export_rows(s)]
    assert sorted(r["event_id"] for r in rows) == ["m1", "m2", "o1"]
    purchase = next(r for r in rows if r["kind"] == "purchase")
    assert purchase["amount"] == "2000" and purchase["currency"] == "TWD" and purchase["display_name"] == "小慧"


async def test_a_merged_fan_has_one_daily_cap_across_both_identities(sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    async with sessions.begin() as s:
        await merge_fans(s, settings, dfan, lfan, now=now)
    day = now - timedelta(hours=2)
    cap = settings.scoring.daily_caps["message"]

    def chat(platform: str, ext: str, start: int) -> list[InteractionIn]:
        return [InteractionIn(platform, ext, "message", day + timedelta(minutes=n), f"{platform}-chat-{n}")
                for n in range(start, start + 10, 2)]

    async with sessions.begin() as s:  # Discord earns part of the day's cap …
        on_discord = await record_many(s, chat("discord", "555", 0)[:2], settings, now)
    async with sessions.begin() as s:  # … so LINE, the same fan, only earns the rest
        on_line = await record_many(s, chat("line", "Uhui", 1), settings, now)
    assert 0 < sum(on_discord.points) < cap
    assert sum(on_discord.points) + sum(on_line.points) == pytest.approx(cap)


async def test_forgetting_a_fan_who_stopped_tracking_keeps_only_their_accounts_marked_do_not_record(
        sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    async with sessions.begin() as s:
        await merge_fans(s, settings, lfan, dfan, now=now)  # one fan on Discord and LINE
        await set_opt_out(s, lfan, True)
        forgotten = await forget_fan(s, settings, lfan, now)
        assert forgotten.kept_opt_out and forgotten.rows > 5
    async with sessions() as s:
        assert (await s.execute(select(Interaction))).first() is None
        assert (await s.execute(select(Note))).first() is None
        left = (await s.execute(select(Identity.platform, Identity.external_id, Fan.display_name, Fan.opted_out,
                                       Fan.score_base).join(Fan, Fan.id == Identity.fan_id))).all()
    assert sorted(left) == [("discord", "555", "discord:555", True, 0.0), ("line", "Uhui", "line:Uhui", True, 0.0)]
    async with sessions.begin() as s:  # anything they do now is not recorded
        late = await record(s, InteractionIn("line", "Uhui", "message", now, "late"), settings, now)
    assert late.status == "opted_out"


async def test_forgetting_a_tracked_fan_leaves_nothing(sessions, settings, now):
    _, lfan = await _two_fans(sessions, settings, now)
    async with sessions.begin() as s:
        assert not (await forget_fan(s, settings, lfan, now)).kept_opt_out
    async with sessions() as s:
        assert (await s.execute(select(Identity).where(Identity.platform == "line"))).first() is None


def test_every_table_that_points_at_a_fan_is_in_the_one_list_of_fan_tables():
    """Merge, erasure and export walk ``crm.fan_tables``: a new table missing from it fails here."""
    listed = {(entry.name, entry.fan_column.key) for entry in FAN_TABLES}
    listed |= {(column.class_.__tablename__, column.key) for column in FAN_REFERENCES}
    pointing = {(table.name, fk.parent.name) for table in Base.metadata.sorted_tables
                for fk in table.foreign_keys if fk.column.table.name == "fans" and fk.column.name == "id"}
    assert pointing, "no table points at fans.id: the walk itself is broken"
    assert pointing - listed == set(), "add these to crm.fan_tables.FAN_TABLES"


async def _a_bit_of_everything(sessions, settings, now, fan_id, other_id):
    """A fan with a row in every fan table (tier history, link code, conversation, delivery too)."""
    async with sessions.begin() as s:
        await pin(s, settings, fan_id, "superfan", by="creator", now=now)
        await issue_link_code(s, fan_id, platform="discord", now=now)
        s.add(Conversation(fan_id=fan_id, platform="line", status="waiting", opened_at=now, waiting_since=now))
        drop = Drop(created_at=now, created_by="staff", text="新歌搶先聽", min_tier="fan", platforms="line",
                    status="sent")
        s.add(drop)
        await s.flush()
        s.add_all([Delivery(drop_id=drop.id, fan_id=fid, platform="line", external_id=f"U{fid}", status="pending")
                   for fid in (fan_id, other_id)])


async def test_merge_leaves_no_row_on_the_record_that_goes(sessions, settings, now):
    dfan, lfan = await _two_fans(sessions, settings, now)
    await _a_bit_of_everything(sessions, settings, now, dfan, lfan)
    async with sessions.begin() as s:
        await merge_fans(s, settings, lfan, dfan, now=now)
    async with sessions() as s:
        for entry in FAN_TABLES:
            left = (await s.execute(select(entry.model).where(entry.fan_column == dfan))).all()
            assert left == [], entry.name
        deliveries = (await s.execute(select(Delivery))).scalars().all()
    assert [d.fan_id for d in deliveries] == [lfan]  # one drop, one delivery: never sent twice


async def test_json_export_shows_every_fan_table(sessions, settings, now):
    """A staff export must hold everything stored about a fan, not only the fan card's fields."""
    dfan, lfan = await _two_fans(sessions, settings, now)
    await _a_bit_of_everything(sessions, settings, now, dfan, lfan)
    sink = io.StringIO()
    async with sessions() as s:
        await write_export(s, settings, "json", sink, now)
    fans = {doc["id"]: doc for doc in json.loads(sink.getvalue())["fans"]}
    stored = fans[dfan]["stored"]
    not_in_card = {entry.name for entry in FAN_TABLES if not entry.in_fan_document}
    assert set(stored) == not_in_card
    assert "superfan" in [row["to_tier"] for row in stored["tier_changes"]]
    assert stored["link_codes"][0]["platform"] == "discord"
    assert stored["conversations"][0]["status"] == "waiting"
    assert len(stored["deliveries"]) == 1 and len(fans[lfan]["stored"]["deliveries"]) == 1
