"""Hypothesis: random DMs, replies and resolutions at random times, with and without reply hours;
due times, breaches and the SLA figures always agree with a naive recomputation (a plain state
machine and the minute-by-minute clock of test_reply_hours)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from crm import conversations as conv
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Base, Conversation, ConversationWait
from crm.settings import CrmSettings, SlaRules
from tests.crm.test_reply_hours import calendars, naive_due, naive_open, starts


@dataclass
class _Wait:
    start: datetime
    due: datetime
    end: datetime | None = None
    how: str | None = None


@dataclass
class _Conv:
    opened: datetime
    status: str = "waiting"
    first_response: float | None = None


ops = st.lists(st.tuples(st.integers(1, 26 * 60),
                         st.sampled_from(["ask", "ask", "thanks", "reply", "reply", "elsewhere", "spam"])),
               min_size=1, max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calendar=calendars(), start=starts, steps=ops, within=st.sampled_from([1, 4, 24]),
       tail=st.integers(0, 3 * 24 * 60))
async def test_due_times_breaches_and_figures_agree_with_a_naive_recount(sessions, start, calendar, steps, within,
                                                                      tail):
    rules = replace(CrmSettings(), sla=replace(SlaRules(), reply_within_hours=within, calendar=calendar))
    async with sessions.begin() as s:
        for table in reversed(Base.metadata.sorted_tables):
            await s.execute(delete(table))
        rec = await record_many(s, [InteractionIn("line", "U1", "message", start, "seed", "小美")], rules, start)
    fan_id = rec.fan_ids[0]
    convs: list[_Conv] = []
    waits: list[_Wait] = []
    at = start
    for gap, op in steps:
        at += timedelta(minutes=gap)
        current = convs[-1] if convs else None
        async with sessions.begin() as s:
            if op in ("ask", "thanks"):
                text = "請問？" if op == "ask" else "謝謝"
                await conv.note_inbound(s, rules, fan_id=fan_id, platform="line", at=at, text=text, now=at)
                if current is None or current.status == "resolved":
                    convs.append(_Conv(at))
                    waits.append(_Wait(at, naive_due(at, within * 60, calendar)))
                elif current.status == "answered" and op == "ask":
                    current.status = "waiting"
                    waits.append(_Wait(at, naive_due(at, within * 60, calendar)))
                continue
            if current is None:
                continue
            cid = (await s.execute(select(Conversation.id).order_by(Conversation.id.desc()).limit(1))).scalar_one()
            if op == "reply":
                await conv.note_reply(s, rules, cid, text="好的", by="staff", now=at)
                if current.status == "waiting":
                    waits[-1].end, waits[-1].how = at, "reply"
                if current.first_response is None:
                    current.first_response = (at - current.opened).total_seconds()
                if current.status != "resolved":
                    current.status = "answered"
            else:
                await conv.resolve(s, rules, cid, how=op, by="staff", now=at)
                if current.status == "waiting":
                    waits[-1].end, waits[-1].how = at, op
                current.status = "resolved"
    now = at + timedelta(minutes=tail)

    async with sessions.begin() as s:
        stored = list((await s.execute(select(ConversationWait).order_by(ConversationWait.id))).scalars())
        assert [(w.started_at, w.due_at, w.ended_at, w.ended_by) for w in stored] == [
            (w.start, w.due, w.end, w.how) for w in waits]
        row = (await s.execute(select(Conversation).order_by(Conversation.id.desc()).limit(1))).scalar_one_or_none()
        if convs and convs[-1].status == "waiting":
            assert (row.waiting_since, row.due_at) == (waits[-1].start, waits[-1].due)
        figures = await conv.sla_figures(s, rules, now)
        breached = await conv.claim_breaches(s, rules, now)
        listed = await conv.unanswered(s, rules, now)

    since = now - timedelta(days=7)
    window = [w for w in waits if since <= w.start <= now and w.how not in ("spam", "thanks")]
    answered = [w for w in window if w.how in ("reply", "elsewhere")]
    within_sla = [w for w in answered if w.end <= w.due]
    late = [w for w in window if (w.end is not None and w.how in ("reply", "elsewhere") and w.end > w.due)
            or (w.end is None and w.due <= now)]
    firsts = [c.first_response for c in convs if since <= c.opened <= now and c.first_response is not None]
    assert (figures.answered, figures.within_sla, figures.breaches) == (len(answered), len(within_sla), len(late))
    assert figures.median_first_response_hours == (round(statistics.median(firsts) / 3600, 2) if firsts else None)
    open_wait = waits[-1] if waits and waits[-1].end is None else None
    assert len(breached) == (1 if open_wait and open_wait.due <= now else 0)
    assert [u.overdue for u in listed] == ([open_wait.due <= now] if open_wait else [])
    if open_wait and open_wait.due > now:  # the due time is always inside reply hours
        assert naive_open(rules.sla.calendar, open_wait.due - timedelta(minutes=1))
