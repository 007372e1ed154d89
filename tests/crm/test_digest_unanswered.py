"""The digest's waiting list is the inbox's (crm.conversations.unanswered) cut at list_limit: the same
order (overdue first, higher tiers, longest wait, then the conversation), and the counts whole."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from crm.conversations import unanswered
from crm.digest import build_digest
from crm.models import Conversation, Fan, table

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


async def test_the_digest_lists_the_inboxs_first_waiting_conversations_in_its_order(sessions, settings):
    rng = random.Random(19)
    tiers = [*settings.tiers.keys, "retired_tier"]  # a tier no longer configured ranks below every other
    fans = [{"id": n, "display_name": f"粉絲{n}", "name_key": f"粉絲{n}", "opted_out": False, "score_base": 0.0,
             "tier": rng.choice(tiers), "first_seen_at": NOW - 90 * 24 * H, "last_seen_at": NOW - H}
            for n in range(1, 61)]
    conversations = []
    for n, fan in enumerate(fans, start=1):
        # Few distinct times, so ties on tier and wait fall back to the conversation's id.
        since = NOW - rng.choice((2, 5, 30, 47)) * H
        status = rng.choice(("waiting", "waiting", "waiting", "answered"))
        conversations.append({"id": 1000 - n, "fan_id": fan["id"], "platform": rng.choice(("line", "discord")),
                              "status": status, "opened_at": since, "waiting_since": since,
                              "due_at": since + rng.choice((4, 24)) * H})
    async with sessions.begin() as s:
        await s.execute(insert(table(Fan)), fans)
        await s.execute(insert(table(Conversation)), conversations)
    small = replace(settings, digest=replace(settings.digest, list_limit=7))
    async with sessions() as s:
        inbox = await unanswered(s, settings, NOW)
        digest = (await build_digest(s, small, NOW)).as_json()
    assert len(inbox) > 20 and 5 < sum(u.overdue for u in inbox) < len(inbox)
    assert [(u["conversation_id"], u["overdue"], u["tier_key"], u["hours_waiting"]) for u in digest["unanswered"]] \
        == [(u.conversation_id, u.overdue, u.tier, u.hours_waiting) for u in inbox[:7]]
    assert digest["counts"]["unanswered"] == len(inbox)
    assert digest["counts"]["overdue"] == sum(u.overdue for u in inbox)
    async with sessions() as s:
        whole = (await build_digest(s, replace(settings, digest=replace(settings.digest, list_limit=100)),
                                    NOW)).as_json()
    assert [u["conversation_id"] for u in whole["unanswered"]] == [u.conversation_id for u in inbox]


async def test_with_nobody_waiting_the_counts_are_zero(sessions, settings):
    async with sessions() as s:
        digest = (await build_digest(s, settings, NOW)).as_json()
    assert digest["unanswered"] == [] and digest["counts"]["unanswered"] == 0 and digest["counts"]["overdue"] == 0
