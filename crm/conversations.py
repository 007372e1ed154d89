"""Fan conversations and the reply promise: who is waiting, since when, and until when.

A fan's DM opens a conversation or joins their open one (:func:`note_inbound`, called by
``crm.ingest.record_many`` for every stored ``dm_in``). The first unanswered message starts a
*wait* (a :class:`~crm.models.ConversationWait` row) whose due time is ``reply_within_hours`` of
the creator's reply hours later (:mod:`crm.reply_hours`). A staff reply (:func:`note_reply`) ends
the wait and queues the relay to the fan; :func:`resolve` closes a conversation without a reply
(spam, a thank-you, answered elsewhere such as LINE Official Account Manager, which sends no
webhook for its replies). After a reply, a sticker or a short thank-you does not start a new wait.

The conversation row mirrors its current wait (``waiting_since``, ``due_at``, markers) so the fan
card and the inbox read one row; the waits are what the SLA figures, reminders and breaches use
(:mod:`crm.sla`). Everything here takes the caller's session and an explicit ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm import outbox
from crm.column_types import UTCDateTime
from crm.errors import BadInput, ConversationNotFound, CrmError
from crm.models import Conversation, ConversationWait, Identity, Interaction, table
from crm.reply_hours import add_reply_hours
from crm.settings import CrmSettings, SlaRules
from crm.sla import SlaFigures, Unanswered, claim_breaches, claim_reminders, sla_figures, unanswered

__all__ = ["Inbound", "SlaFigures", "Unanswered", "claim_breaches", "claim_reminders", "is_thanks",
           "note_inbound", "note_inbound_many", "note_reply", "open_conversation", "resolve", "sla_figures",
           "unanswered"]

WAITING, ANSWERED, RESOLVED = "waiting", "answered", "resolved"
OPEN = (WAITING, ANSWERED)
#: How staff may close a conversation without replying through superfan.
RESOLUTIONS = ("elsewhere", "spam", "thanks")
CHUNK = 500
_TRAILING = " \t\r\n.!?~,。！？～、…"

_c, _w = table(Conversation).c, table(ConversationWait).c
_OPEN_OF_FANS = (
    select(_c.id, _c.fan_id, _c.platform, _c.status, _c.opened_at, _c.waiting_since, _c.answered_at,
           _c.last_inbound_at)
    .where(_c.fan_id.in_(bindparam("fans", expanding=True)), _c.status.in_(OPEN))
    .order_by(_c.id)
)
_when = UTCDateTime()
#: How far a fan's last DM must move on before the conversation row is rewritten for it alone.
LAST_INBOUND_STEP = timedelta(minutes=1)
_TOUCH = (
    update(table(Conversation)).where(_c.id == bindparam("cid"))
    .values(platform=bindparam("p_platform"), last_inbound_at=bindparam("p_last", type_=_when))
)
_REOPEN = (  # an answered conversation gets a new question: a new wait, fresh markers
    update(table(Conversation)).where(_c.id == bindparam("cid"))
    .values(platform=bindparam("p_platform"), status=WAITING, opened_at=bindparam("p_opened", type_=_when),
            waiting_since=bindparam("p_since", type_=_when), due_at=bindparam("p_due", type_=_when),
            last_inbound_at=bindparam("p_last", type_=_when), reminded_at=None, breached_at=None)
)


@dataclass(frozen=True)
class Inbound:
    """One stored DM from a fan, as the ingest hook hands it over."""

    fan_id: int
    platform: str
    at: datetime
    text: str | None
    #: The fan was created by this very group: no conversation of theirs can exist yet.
    new_fan: bool = False


@dataclass
class _State:
    """A fan's open conversation while a group of DMs is folded into it."""

    id: int | None
    fan_id: int
    platform: str
    status: str
    opened_at: datetime
    waiting_since: datetime | None
    answered_at: datetime | None
    last_inbound_at: datetime | None
    new_wait: bool = False
    moved_wait: bool = False
    changed: bool = False
    stored_platform: str | None = None  # as the database has it: a write is needed only on a change
    stored_last: datetime | None = None

    def worth_writing(self) -> bool:
        """New, a wait started or moved, another platform, or the last DM moved on by a minute (a
        fan writing many lines in a row is not rewritten with every group)."""
        return (self.id is None or self.new_wait or self.moved_wait or self.platform != self.stored_platform
                or self.stored_last is None or self.last_inbound_at is None
                or self.last_inbound_at - self.stored_last >= LAST_INBOUND_STEP)


def is_thanks(text: str | None, rules: SlaRules) -> bool:
    """Whether a whole message is only a thank-you or a sticker (it does not reopen a wait)."""
    if not text:
        return False
    if text.startswith("[sticker]") and "[sticker]" in rules.thanks:
        return True
    said = text.strip().rstrip(_TRAILING).casefold()
    return any(said == phrase.strip().rstrip(_TRAILING).casefold() for phrase in rules.thanks)


async def note_inbound(session: AsyncSession, settings: CrmSettings, *, fan_id: int, platform: str,
                       at: datetime, text: str | None, now: datetime) -> int:
    """Record one DM from a fan; returns its conversation's id (see :func:`note_inbound_many`)."""
    (conversation_id,) = await note_inbound_many(session, settings, [Inbound(fan_id, platform, at, text)], now)
    return conversation_id


async def note_inbound_many(session: AsyncSession, settings: CrmSettings, messages: Sequence[Inbound],
                            now: datetime) -> list[int]:
    """Fold a group of stored DMs into their fans' conversations; the conversation id of each.

    One query finds the open conversations of all the senders; each DM then opens one, joins the
    waiting one (an earlier message moves the wait's start back), or restarts the clock on an
    answered one unless it is a thank-you or arrived before the reply. ``text`` is the full text
    (not the stored summary). With a staff inbox, every DM is queued for it (``inbox_message``).
    """
    if not messages:
        return []
    rules = settings.sla
    states = await _open_states(session, sorted({m.fan_id for m in messages if not m.new_fan}))
    order = sorted(range(len(messages)), key=lambda n: messages[n].at)
    for n in order:
        m = messages[n]
        st = states.get(m.fan_id)
        if st is None:
            states[m.fan_id] = _State(None, m.fan_id, m.platform, WAITING, m.at, m.at, None, m.at,
                                      new_wait=True, changed=True)
            continue
        st.changed = True
        if st.last_inbound_at is None or m.at >= st.last_inbound_at:
            st.platform, st.last_inbound_at = m.platform, m.at
        if st.status == WAITING and st.waiting_since is not None and m.at < st.waiting_since:
            st.waiting_since, st.opened_at = m.at, min(st.opened_at, m.at)
            st.moved_wait = True
        elif st.status == ANSWERED and not (st.answered_at and m.at <= st.answered_at) and not is_thanks(m.text, rules):
            st.status, st.waiting_since, st.new_wait = WAITING, m.at, True
    await _write_states(session, rules, [st for st in states.values() if st.changed and st.worth_writing()])
    ids = [states[m.fan_id].id for m in messages]
    if rules.inbox:
        for m, cid in zip(messages, ids, strict=True):
            await outbox.enqueue(session, platform="discord", kind="inbox_message", recipient="inbox",
                                 payload={"conversation_id": cid, "text": m.text, "at": m.at.isoformat()},
                                 now=now, fan_id=m.fan_id, conversation_id=cid)
    return [int(cid) for cid in ids if cid is not None]


async def _open_states(session: AsyncSession, fan_ids: list[int]) -> dict[int, _State]:
    states: dict[int, _State] = {}
    for start in range(0, len(fan_ids), CHUNK):
        rows = await session.execute(_OPEN_OF_FANS, {"fans": fan_ids[start : start + CHUNK]})
        for cid, fan_id, platform, status, opened, since, answered, last in rows:
            states[fan_id] = _State(cid, fan_id, platform, status, opened, since, answered, last,  # newest wins
                                    stored_platform=platform, stored_last=last)
    return states


async def _write_states(session: AsyncSession, rules: SlaRules, states: list[_State]) -> None:
    due = {st.fan_id: add_reply_hours(st.waiting_since, rules.reply_within_hours, rules.calendar)
           for st in states if st.waiting_since is not None and st.status == WAITING}
    new = [st for st in states if st.id is None]
    known = [st for st in states if st.id is not None]  # split before the new ones get their ids
    if new:
        result = await session.execute(
            insert(table(Conversation)).returning(_c.id, _c.fan_id),
            [{"fan_id": st.fan_id, "platform": st.platform, "status": WAITING, "opened_at": st.opened_at,
              "waiting_since": st.waiting_since, "due_at": due[st.fan_id], "last_inbound_at": st.last_inbound_at}
             for st in new])
        made = dict((fan_id, cid) for cid, fan_id in result)
        for st in new:
            st.id = made[st.fan_id]
    reopened = [st for st in known if st.new_wait]
    if reopened:
        await session.execute(_REOPEN, [
            {"cid": st.id, "p_platform": st.platform, "p_opened": st.opened_at, "p_since": st.waiting_since,
             "p_due": due[st.fan_id], "p_last": st.last_inbound_at} for st in reopened])
    await _touch(session, [st for st in known if not st.new_wait], due)
    waits = [st for st in states if st.new_wait]
    if waits:
        await session.execute(insert(table(ConversationWait)), [
            {"conversation_id": st.id, "fan_id": st.fan_id, "started_at": st.waiting_since,
             "due_at": due[st.fan_id]} for st in waits])
    for st in states:
        if st.moved_wait and not st.new_wait:
            await session.execute(update(table(ConversationWait))
                                  .where(_w.conversation_id == st.id, _w.ended_at.is_(None))
                                  .values(started_at=st.waiting_since, due_at=due[st.fan_id]))


async def _touch(session: AsyncSession, states: list[_State], due: dict[int, datetime]) -> None:
    """DMs joined open conversations without starting a wait: keep the platform and time (one
    statement for the group; an earlier DM that moves a wait's start back is rare, and alone)."""
    if states:
        await session.execute(_TOUCH, [{"cid": st.id, "p_platform": st.platform, "p_last": st.last_inbound_at}
                                       for st in states])
    for st in states:
        if st.moved_wait:
            await session.execute(update(table(Conversation)).where(_c.id == st.id).values(
                opened_at=st.opened_at, waiting_since=st.waiting_since, due_at=due[st.fan_id]))


async def note_reply(session: AsyncSession, settings: CrmSettings, conversation_id: int, *, text: str, by: str,
                     now: datetime, source: str = "inbox") -> int:
    """A staff reply: ends the wait (its response time), marks the conversation answered, records a
    ``dm_out`` interaction, and queues the relay to the fan on their latest DM's platform (outbox
    kind ``relay``, payload ``{"text"}``); returns the outbox row's id.

    ``by`` (the staff member) and ``source`` (inbox, slash, cli) say where it came from; they are
    not stored yet. A reply to a resolved conversation is relayed but leaves it resolved.
    """
    conv = (await session.execute(
        select(_c.fan_id, _c.platform, _c.status, _c.opened_at, _c.first_response_seconds)
        .where(_c.id == conversation_id))).first()
    if conv is None:
        raise ConversationNotFound(conversation_id)
    fan_id, platform, status, opened_at, first = conv
    recipient = (await session.execute(
        select(Identity.external_id).where(Identity.fan_id == fan_id, Identity.platform == platform)
        .order_by(Identity.id.desc()).limit(1))).scalar_one_or_none()
    if recipient is None:
        raise CrmError(f"conversation {conversation_id} has no {platform} identity to reply to",
                       code="conversation.unreachable", platform=platform)
    await _end_wait(session, conversation_id, "reply", now)
    values: dict[str, object] = {"answered_at": now, "waiting_since": None, "due_at": None, "reminded_at": None,
                                 "breached_at": None}
    if status != RESOLVED:
        values["status"] = ANSWERED
    if first is None:
        values["first_response_seconds"] = max(0.0, (now - opened_at).total_seconds())
    await session.execute(update(table(Conversation)).where(_c.id == conversation_id).values(**values))
    row_id = await outbox.enqueue(session, platform=platform, kind="relay", recipient=recipient,
                                  payload={"text": text}, now=now, fan_id=fan_id,
                                  conversation_id=conversation_id)
    assert row_id is not None  # a fresh key is never taken
    summary = " ".join(text.split())[: settings.summary_chars] if settings.store_text else None
    await session.execute(insert(table(Interaction)).values(
        fan_id=fan_id, platform=platform, kind="dm_out", occurred_at=now, recorded_at=now, points=0.0,
        summary=summary, source_event_id=f"outbox:{row_id}"))
    return row_id


async def resolve(session: AsyncSession, settings: CrmSettings, conversation_id: int, *, how: str, by: str,
                  now: datetime) -> None:
    """Close a conversation without a reply through superfan: ``elsewhere`` (answered in LINE
    Official Account Manager or in person), ``spam`` or ``thanks``. Ends any wait (no response
    time: superfan never saw the answer). Resolving twice changes nothing; the fan's next DM
    opens a new conversation."""
    if how not in RESOLUTIONS:
        raise BadInput(f"resolution must be one of {', '.join(RESOLUTIONS)}, not {how!r}",
                       code="conversation.bad_resolution", how=how)
    status = (await session.execute(select(_c.status).where(_c.id == conversation_id))).scalar_one_or_none()
    if status is None:
        raise ConversationNotFound(conversation_id)
    if status == RESOLVED:
        return
    await _end_wait(session, conversation_id, how, now)
    await session.execute(update(table(Conversation)).where(_c.id == conversation_id, _c.status != RESOLVED)
                          .values(status=RESOLVED, resolution=how, resolved_at=now, waiting_since=None,
                                  due_at=None))


async def _end_wait(session: AsyncSession, conversation_id: int, how: str, now: datetime) -> None:
    open_wait = (await session.execute(select(_w.id, _w.started_at).where(
        _w.conversation_id == conversation_id, _w.ended_at.is_(None)))).all()
    for wait_id, started in open_wait:
        seconds = max(0.0, (now - started).total_seconds()) if how == "reply" else None
        await session.execute(update(table(ConversationWait)).where(_w.id == wait_id, _w.ended_at.is_(None))
                              .values(ended_at=now, ended_by=how, response_seconds=seconds))


async def open_conversation(session: AsyncSession, fan_id: int) -> Conversation | None:
    """The fan's open (waiting or answered) conversation, newest first, or None."""
    result = await session.execute(select(Conversation).where(Conversation.fan_id == fan_id,
                                                              Conversation.status.in_(OPEN))
                                   .order_by(Conversation.id.desc()).limit(1))
    return result.scalar_one_or_none()
