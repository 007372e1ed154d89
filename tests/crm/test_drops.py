"""Who a drop reaches: the eligibility matrix (tiers × pins × opt-out × unfollowed/blocked × left ×
DMs closed × topic × platforms × prefer), what creating one writes, and its outcomes."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.drop_audience import plan_audience
from crm.drops import (
    DropDraft,
    QuotaRefused,
    create_drop,
    deliver_evergreen,
    drop_text,
    load_drop,
    note_dm_closed,
    note_dm_open,
    preview_drop,
    record_outcome,
)
from crm.errors import BadInput
from crm.models import Delivery, Drop, Fan, FanTopic, Identity, Interaction, Outbox
from crm.settings import CrmSettings, DropRules

TIERS = ("passerby", "fan", "superfan", "close_friend")


def line_id(n: int) -> str:
    return f"U{n:032x}"


def discord_id(n: int) -> str:
    return str(400_000_000_000_000_000 + n)


async def add_fan(s: AsyncSession, n: int, now: datetime, *, tier: str = "superfan", pinned: str | None = None,
                  line: str | None = "member", discord: str | None = None, opted_out: bool = False,
                  topics: tuple[str, ...] = ()) -> int:
    """A fan with LINE/Discord accounts in a state: ``member`` (followed / in the server),
    ``unfollowed`` (LINE: blocked or unfollowed), ``refollowed`` (unfollowed, then followed again),
    ``left`` (left the Discord server), ``dms_closed``; None: no account there."""
    fan = Fan(display_name=f"fan{n}", name_key=f"fan{n}", tier=tier, tier_pinned=pinned, opted_out=opted_out,
              score_base=0.0, first_seen_at=now, last_seen_at=now)
    s.add(fan)
    await s.flush()
    events = {"member": ["follow"], "unfollowed": ["follow", "unfollow"], "refollowed": ["unfollow", "follow"],
              "left": ["follow", "unfollow"], "dms_closed": ["follow"]}
    for platform, state, ext in (("line", line, line_id(n)), ("discord", discord, discord_id(n))):
        if state is None:
            continue
        s.add(Identity(fan_id=fan.id, platform=platform, external_id=ext, created_at=now,
                       dm_closed_at=now if state == "dms_closed" else None))
        for k, kind in enumerate(events[state]):
            s.add(Interaction(fan_id=fan.id, platform=platform, kind=kind, points=0.0, recorded_at=now,
                              occurred_at=now - timedelta(days=10 - k), source_event_id=f"{platform}-{n}-{k}"))
    for topic in topics:
        s.add(FanTopic(fan_id=fan.id, topic=topic, source="fan", created_at=now))
    await s.flush()
    return fan.id


async def add_line_fans(s: AsyncSession, numbers: range, now: datetime, *, tier: str = "superfan",
                        pinned: bool = False) -> None:
    """Many fans on LINE at once (set-based: thousands in well under a second); ``pinned``: staff
    pinned them to ``tier`` (else a tier refresh would drop them, having no score behind it)."""
    await s.execute(insert(Fan), [{"display_name": f"fan{n}", "name_key": f"fan{n}", "tier": tier, "score_base": 0.0,
                                   "tier_pinned": tier if pinned else None, "opted_out": False,
                                   "first_seen_at": now, "last_seen_at": now} for n in numbers])
    made = dict((await s.execute(select(Fan.name_key, Fan.id).where(
        Fan.name_key.in_([f"fan{n}" for n in numbers])))).all())
    await s.execute(insert(Identity), [{"fan_id": made[f"fan{n}"], "platform": "line", "external_id": line_id(n),
                                        "created_at": now} for n in numbers])


def rules(prefer: str) -> CrmSettings:
    return replace(CrmSettings(), drops=DropRules(prefer=prefer))


LINE_STATES = (None, "member", "unfollowed", "refollowed")
DISCORD_STATES = (None, "member", "left", "dms_closed")


def expected(tier: str, pinned: str | None, opted_out: bool, has_topic: bool, line: str | None,
             discord: str | None, want_topic: bool, platforms: tuple[str, ...], prefer: str) -> set[str] | str:
    """The rule, written out plainly: the platforms the fan receives it on, or why not (None: below)."""
    effective = pinned or tier
    if TIERS.index(effective) < TIERS.index("superfan"):
        return "below"
    if opted_out:
        return "opted_out"
    if want_topic and not has_topic:
        return "topic"
    ok = {p for p, state in (("line", line), ("discord", discord))
          if p in platforms and state in ("member", "refollowed")}
    if not ok:
        return "unreachable"
    if len(ok) == 2 and prefer != "both":
        return {prefer}
    return ok


async def test_eligibility_matrix(sessions, now) -> None:
    cases = list(itertools.product(TIERS, (None, "close_friend", "passerby"), (False, True), (False, True),
                                   LINE_STATES, DISCORD_STATES))
    ids = {}
    async with sessions.begin() as s:
        for n, (tier, pinned, opted, has_topic, line, discord) in enumerate(cases):
            ids[await add_fan(s, n, now, tier=tier, pinned=pinned, opted_out=opted, line=line, discord=discord,
                              topics=("烘焙",) if has_topic else ())] = (tier, pinned, opted, has_topic, line,
                                                                        discord)
    first = min(ids)
    for platforms, prefer, want_topic in itertools.product((("line",), ("discord",), ("line", "discord")),
                                                           ("discord", "line", "both"), (False, True)):
        async with sessions() as s:
            audience = await plan_audience(s, rules(prefer), min_tier="鐵粉", platforms=platforms,
                                           topic="＃烘焙" if want_topic else None)
        got: dict[int, set[str]] = {}
        for r in audience.recipients:
            got.setdefault(r.fan_id, set()).add(r.platform)
            assert r.external_id == (line_id if r.platform == "line" else discord_id)(r.fan_id - first)
        assert len(audience.recipients) == sum(len(p) for p in got.values())  # nobody twice on one platform
        reasons = {fan_id: why for why, fans in audience.left_out.items() for fan_id in fans}
        for fan_id, case in ids.items():
            want = expected(*case, want_topic, platforms, prefer)
            where = (platforms, prefer, want_topic, case)
            if isinstance(want, set):
                assert got.get(fan_id) == want, (where, got.get(fan_id))
            else:
                assert fan_id not in got, (where, want)
                if want == "below":
                    assert fan_id not in reasons, where
                elif want == "unreachable":
                    assert reasons[fan_id] in ("unfollowed", "left_server", "dms_closed", "no_platform"), where
                else:
                    assert reasons[fan_id] == want, where


async def test_left_out_fans_say_why(sessions, now) -> None:
    async with sessions.begin() as s:
        await add_fan(s, 1, now, line="unfollowed")
        await add_fan(s, 2, now, line=None, discord="left")
        await add_fan(s, 3, now, line=None, discord="dms_closed")
        await add_fan(s, 4, now, line=None)
        await add_fan(s, 5, now, opted_out=True)
        await add_fan(s, 6, now, line="refollowed")
    async with sessions() as s:
        audience = await plan_audience(s, CrmSettings(), min_tier="superfan", platforms=("line", "discord"))
    assert {k: len(v) for k, v in audience.left_out.items()} == {
        "unfollowed": 1, "left_server": 1, "dms_closed": 1, "no_platform": 1, "opted_out": 1}
    assert [r.display_name for r in audience.recipients] == ["fan6"]


async def test_create_writes_deliveries_and_batches_of_500_in_one_go(sessions, now) -> None:
    async with sessions.begin() as s:
        for n in range(1234):
            await add_fan(s, n, now)
        for n in range(1234, 1240):
            await add_fan(s, n, now, line=None, discord="member")
        await add_fan(s, 5000, now, tier="fan")
    async with sessions.begin() as s:
        made = await create_drop(s, CrmSettings(), DropDraft("獨家", "鐵粉"), now)
    assert (made.line_batches, made.discord_dms) == (3, 6)
    async with sessions() as s:
        rows = (await s.execute(select(Outbox).order_by(Outbox.id))).scalars().all()
        batches = [r for r in rows if r.kind == "drop_multicast"]
        assert [len(json.loads(r.payload)["to"]) for r in batches] == [500, 500, 234]
        assert [r.idempotency_key for r in batches] == [f"drop:{made.id}:line:{n}" for n in range(3)]
        everyone = [u for r in batches for u in json.loads(r.payload)["to"]]
        assert sorted(everyone) == sorted(line_id(n) for n in range(1234))
        dms = [r for r in rows if r.kind == "drop_dm"]
        assert {r.recipient for r in dms} == {discord_id(n) for n in range(1234, 1240)}
        per_row = dict((await s.execute(select(Delivery.outbox_id, func.count()).group_by(Delivery.outbox_id))).all())
        assert [per_row[r.id] for r in batches] == [500, 500, 234]
        assert all(per_row[r.id] == 1 for r in dms)
        drop = await s.get(Drop, made.id)
        assert drop is not None and drop.status == "sending" and drop.aggregation_unit == f"superfan_drop_{made.id}"


async def test_quota_refusal_writes_nothing_and_discord_only_goes_ahead(sessions, now) -> None:
    async with sessions.begin() as s:
        for n in range(30):
            await add_fan(s, n, now, discord="member" if n % 2 else None)
    settings = rules("line")
    with pytest.raises(QuotaRefused) as refused:
        async with sessions.begin() as s:
            await create_drop(s, settings, DropDraft("獨家", "鐵粉"), now, quota_left=20, quota=200)
    assert refused.value.params["needed"] == 30 and refused.value.params["left"] == 20
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Drop))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(Outbox))).scalar_one() == 0
    async with sessions.begin() as s:
        made = await create_drop(s, settings, DropDraft("獨家", "鐵粉", platforms=("discord",)), now, quota_left=20)
    assert made.preview.line_messages == 0 and made.discord_dms == 15


async def test_outcomes_finish_the_drop_and_count_line_quota(sessions, now) -> None:
    async with sessions.begin() as s:
        for n in range(3):
            await add_fan(s, n, now, discord="member" if n == 2 else None)
    async with sessions.begin() as s:
        made = await create_drop(s, rules("discord"), DropDraft("獨家", "鐵粉"), now)
    async with sessions.begin() as s:
        rows = {r.kind: r.id for r in (await s.execute(select(Outbox))).scalars()}
        await record_outcome(s, rows["drop_multicast"], sent=True, error=None, now=now)
    async with sessions() as s:
        drop = await s.get(Drop, made.id)
        assert drop is not None and (drop.status, drop.quota_used) == ("sending", 2)
    async with sessions.begin() as s:
        await record_outcome(s, rows["drop_dm"], sent=False, error="dms closed", now=now)
    async with sessions() as s:
        drop = await s.get(Drop, made.id)
        assert drop is not None and drop.status == "finished" and drop.finished_at is not None
        failed = (await s.execute(select(Delivery.error).where(Delivery.status == "failed"))).scalars().all()
        assert failed == ["dms closed"]


async def test_sponsored_text_starts_with_the_disclosure_and_ends_with_the_link(sessions, now) -> None:
    async with sessions.begin() as s:
        await add_fan(s, 1, now)
        made = await create_drop(s, CrmSettings(), DropDraft("新品搶先看", "鐵粉", link="https://shop.example/x",
                                                             sponsored=True), now)
    async with sessions() as s:
        view = await load_drop(s, made.id)
    assert view is not None
    assert drop_text(view, CrmSettings()) == "#廣告\n新品搶先看\nhttps://shop.example/x"
    assert drop_text(view, DropRules(disclosure="#贊助")).startswith("#贊助\n")
    assert drop_text(replace(view, sponsored=False), CrmSettings()) == "新品搶先看\nhttps://shop.example/x"


async def test_scheduled_rows_are_due_at_the_time(sessions, now) -> None:
    at = now + timedelta(hours=5)
    async with sessions.begin() as s:
        await add_fan(s, 1, now)
        await create_drop(s, CrmSettings(), DropDraft("晚點見", "鐵粉", scheduled_at=at), now)
    async with sessions.begin() as s:
        assert await outbox.claim_due(s, "line", now + timedelta(hours=4, minutes=59)) == []
        assert len(await outbox.claim_due(s, "line", at)) == 1


async def test_evergreen_reaches_a_fan_promoted_later_once(sessions, now) -> None:
    async with sessions.begin() as s:
        await add_fan(s, 1, now)
        later = await add_fan(s, 2, now, tier="fan")
        await create_drop(s, CrmSettings(), DropDraft("長期", "鐵粉", evergreen=True), now)
    async with sessions.begin() as s:
        assert await deliver_evergreen(s, CrmSettings(), now) == 0
        fan = await s.get(Fan, later)
        assert fan is not None
        fan.tier = "close_friend"
    for _ in range(2):
        async with sessions.begin() as s:
            await deliver_evergreen(s, CrmSettings(), now + timedelta(days=1))
    async with sessions() as s:
        rows = (await s.execute(select(Outbox.payload, Outbox.idempotency_key).order_by(Outbox.id))).all()
    assert [json.loads(p)["to"] for p, _ in rows] == [[line_id(1)], [line_id(2)]]
    assert rows[1][1].endswith(f":line:fan:{later}")


async def test_dms_closed_is_noted_and_cleared(sessions, now) -> None:
    async with sessions.begin() as s:
        await add_fan(s, 1, now, line=None, discord="member")
        await note_dm_closed(s, discord_id(1), now)
    async with sessions() as s:
        audience = await plan_audience(s, CrmSettings(), min_tier="superfan", platforms=("discord",))
    assert audience.left_out == {"dms_closed": [audience.left_out["dms_closed"][0]]}
    async with sessions.begin() as s:
        await note_dm_open(s, discord_id(1), now)
    async with sessions() as s:
        assert len((await plan_audience(s, CrmSettings(), min_tier="superfan", platforms=("discord",))).recipients) == 1


async def test_bad_drafts_are_refused(sessions, now) -> None:
    async with sessions() as s:
        for draft in (DropDraft(" ", "鐵粉"), DropDraft("x", "鐵粉", link="javascript:alert(1)"),
                      DropDraft("x", "鐵粉", image_url="http://insecure.example/a.png"),
                      DropDraft("x", "鐵粉", platforms=("telegram",)), DropDraft("x", "不存在")):
            with pytest.raises(BadInput):
                await preview_drop(s, CrmSettings(), draft)


async def test_show_reports_tallies_reasons_and_the_posts_reactions(sessions, now) -> None:
    from crm.drop_reports import drop_report
    from crm.drops import record_post

    settings = replace(CrmSettings(), drops=DropRules(prefer="both", tier_channel_ids={"superfan": 555}))
    async with sessions.begin() as s:
        for n in range(3):
            await add_fan(s, n, now, discord="member")
        made = await create_drop(s, settings, DropDraft("幕後", "鐵粉"), now)
    async with sessions.begin() as s:
        for r in (await s.execute(select(Outbox).where(Outbox.kind == "drop_dm"))).scalars():
            await record_outcome(s, r.id, sent=r.recipient != discord_id(1), error="dms_closed", now=now)
        await record_post(s, made.id, "555", "9001")
        fans = (await s.execute(select(Fan.id).order_by(Fan.id))).scalars().all()
        for k, fan_id in enumerate(fans[:2]):
            s.add(Interaction(fan_id=fan_id, platform="discord", kind="reaction", points=0.0, recorded_at=now,
                              occurred_at=now + timedelta(minutes=5), source_event_id=f"reaction:9001:{k}:🔥"))
    async with sessions() as s:
        report = await drop_report(s, made.id, now)
    assert report["per_platform"] == {"line": {"sent": 0, "failed": 0, "pending": 3},
                                      "discord": {"sent": 2, "failed": 1, "pending": 0}}
    assert report["failures"] == [{"platform": "discord", "reason": "dms_closed", "count": 1}]
    assert report["post"] == {"channel_id": "555", "message_id": "9001", "reactions": 2, "fans_reacting": 2}
