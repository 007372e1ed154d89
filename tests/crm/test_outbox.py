"""The outbox: a message is queued once per key, claimed by one sender, retried later, recovered after a crash."""

from __future__ import annotations

from datetime import timedelta

from crm import outbox


async def test_a_key_queues_one_message_and_one_claim_takes_it(sessions, now):
    async with sessions.begin() as s:
        first = await outbox.enqueue(s, platform="line", kind="answer", recipient="U1", payload={"text": "嗨"},
                                     now=now, key="digest:2026-11-22")
        again = await outbox.enqueue(s, platform="line", kind="answer", recipient="U1", payload={"text": "嗨"},
                                     now=now, key="digest:2026-11-22")
        assert s.info[outbox.QUEUED] == {"line"}
    assert first is not None and again is None
    async with sessions.begin() as s:
        (claimed,) = await outbox.claim_due(s, "line", now)
    assert claimed.payload == {"text": "嗨"} and claimed.attempts == 1
    async with sessions.begin() as s:  # a second sender finds nothing to take
        assert await outbox.claim_due(s, "line", now) == []
        assert await outbox.claim_due(s, "discord", now) == []


async def test_a_retry_waits_its_backoff_and_a_crash_mid_send_is_recovered(sessions, now):
    async with sessions.begin() as s:
        await outbox.enqueue(s, platform="discord", kind="relay", recipient="42", payload={}, now=now)
        (msg,) = await outbox.claim_due(s, "discord", now)
        at = await outbox.mark_retry(s, msg.id, now, "HTTP 503", jitter=lambda: 1.0)
    assert at == now + timedelta(seconds=outbox.BACKOFF_BASE_S)
    async with sessions.begin() as s:
        assert await outbox.claim_due(s, "discord", now + timedelta(seconds=1)) == []
        (msg,) = await outbox.claim_due(s, "discord", at)
    assert msg.attempts == 2
    # The process dies while sending: after a while the row is handed back, under the same key.
    async with sessions.begin() as s:
        assert await outbox.recover_interrupted(s, "discord", at + timedelta(seconds=30)) == []
        assert await outbox.recover_interrupted(s, "discord", at + timedelta(minutes=5)) == [msg.id]
        (again,) = await outbox.claim_due(s, "discord", at + timedelta(minutes=5))
        await outbox.mark_sent(s, again.id, at + timedelta(minutes=5))
        assert await outbox.pending_count(s) == 0
    assert again.idempotency_key == msg.idempotency_key and again.attempts == 3


def test_backoff_grows_and_is_capped():
    assert [outbox.backoff(n, lambda: 1.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert outbox.backoff(40, lambda: 1.0) == outbox.BACKOFF_MAX_S
    assert outbox.backoff(3, lambda: 0.0) == 4.0
