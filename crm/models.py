"""The schema. Alembic migrations in ``migrations/`` must agree with it (a test checks)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, orm_insert_sentinel

from crm.column_types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def FanRef() -> ForeignKey:  # noqa: N802 - reads like a type in column definitions
    return ForeignKey("fans.id", ondelete="CASCADE")


class Fan(Base):
    __tablename__ = "fans"
    #: A name key without its first character: fuzzy lookup's candidates for a typo there (migration 0012).
    __table_args__ = (Index("ix_fans_name_key_rest", sql_text("substr(name_key, 2)"), "name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), index=True)
    locale: Mapped[str | None] = mapped_column(String(16))
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # score(t) = score_base * 2^(-(t - epoch)/H); the epoch lives in score_state.
    score_base: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)  # fans per tier (stats, digest)
    tier_pinned: Mapped[str | None] = mapped_column(String(32))
    tier_pinned_by: Mapped[str | None] = mapped_column(String(200))
    tier_pinned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    referral_code: Mapped[str | None] = mapped_column(String(16), unique=True)
    referred_by: Mapped[int | None] = mapped_column(ForeignKey("fans.id", ondelete="SET NULL"))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # anniversaries
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: SQLAlchemy's insert sentinel: lets one multi-row ``INSERT … RETURNING`` hand back each new
    #: fan's id in the order the rows were given, on SQLite as on PostgreSQL (crm.ingest).
    insert_sentinel: Mapped[int | None] = orm_insert_sentinel("insert_sentinel")


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("platform", "external_id"),
                      Index("ix_identities_name_key_rest", sql_text("substr(name_key, 2)"), "name_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(200))
    name_key: Mapped[str | None] = mapped_column(String(200), index=True)
    profile_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Discord said this user takes no DMs from the bot (error 50007); cleared by a DM that goes through.
    dm_closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        # A unique index, not a table constraint, so that SQLite can build it after a first bulk
        # import instead of row by row (crm.interaction_sink). The event id leads: ``platform``
        # has two or three values, and a first column that nearly always ties made every
        # comparison take two steps (migration 0006).
        Index("uq_interactions_platform_source_event_id", "source_event_id", "platform", unique=True),
        Index(None, "fan_id", "occurred_at"),  # a fan's history; deleting a fan
        # The cap/cooldown window reads a fan's *awarded* rows of a day: a handful even for a fan
        # who writes 10^4 messages a day, most of them past the cap and worth nothing.
        Index("ix_interactions_awarded", "fan_id", "occurred_at", "kind", "points",
              sqlite_where=sql_text("points > 0"), postgresql_where=sql_text("points > 0")),
        # Recent activity across all fans, newest first: the digest's "asked after you", reports
        # per week. Rows arrive in time order, so it grows at its right end (migration 0010).
        Index(None, "occurred_at"),
        # An unsend or an edit on LINE names the message, not the webhook event (migration 0007).
        Index("ix_interactions_message_ref", "platform", "message_ref",
              sqlite_where=sql_text("message_ref IS NOT NULL"), postgresql_where=sql_text("message_ref IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef())
    platform: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    points: Mapped[float] = mapped_column(Float, default=0.0)
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    summary: Mapped[str | None] = mapped_column(String(280))
    source_event_id: Mapped[str] = mapped_column(String(128))
    #: The platform's id of the message (LINE ``message.id``) when it differs from the event id.
    message_ref: Mapped[str | None] = mapped_column(String(128))


class FanKindScore(Base):
    """Per fan and interaction kind: how many rows earned points, those points as earned, and their
    ``score_base`` terms (the fan's score split by kind, on the same epoch: see crm.scoring).

    Kept up to date by every path that stores or rescores interactions (crm.fan_kind_scores), so
    a fan's score breakdown is a few rows instead of a sum over every awarded interaction (a
    ranked list of heavy fans read 290k rows for it; migration 0013).
    """

    __tablename__ = "fan_kind_scores"
    #: One b-tree keyed (fan, kind) on SQLite: a new fan's first row is one insert, not a row and
    #: an index entry, and a fan's kinds lie together.
    __table_args__ = {"sqlite_with_rowid": False}

    fan_id: Mapped[int] = mapped_column(FanRef(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    awarded: Mapped[int] = mapped_column(Integer, default=0)
    points: Mapped[float] = mapped_column(Float, default=0.0)
    score_base: Mapped[float] = mapped_column(Float, default=0.0)


class FanTopic(Base):
    """A topic a fan cares about. ``source`` fan/inferred are preferences; staff are tags."""

    __tablename__ = "fan_topics"
    __table_args__ = (UniqueConstraint("fan_id", "topic", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    topic: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    author: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Conversation(Base):
    """A fan's DM thread with the creator: one open at a time per fan and platform.

    ``status``: ``waiting`` (a fan message is unanswered), ``answered`` (staff replied last) or
    ``resolved`` (closed by staff, with ``resolution``). The current wait's clock is
    ``waiting_since``/``due_at``; each wait is also a row of :class:`ConversationWait`, which the
    SLA figures read. ``thread_ref`` is the Discord inbox thread, claimed before it is created.
    """

    __tablename__ = "conversations"
    __table_args__ = (Index(None, "status", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # waiting | answered | resolved
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_seconds: Mapped[float | None] = mapped_column(Float)
    thread_ref: Mapped[str | None] = mapped_column(String(64))
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(String(16))  # replied | elsewhere | spam | thanks
    #: Set when an instance starts creating the inbox thread (so no two instances create one).
    thread_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConversationWait(Base):
    """One stretch of a fan waiting for an answer: from their first unanswered message to the
    staff reply (or resolution) that ended it. The SLA figures and the reminders read these."""

    __tablename__ = "conversation_waits"
    __table_args__ = (Index(None, "ended_at", "due_at"), Index(None, "started_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(16))  # reply | elsewhere | spam | thanks
    #: Wall-clock seconds from ``started_at`` to the reply (None when resolved without one).
    response_seconds: Mapped[float | None] = mapped_column(Float)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Outbox(Base):
    """Something superfan will send, written in the same transaction as the change that causes it.

    One drainer per platform sends due rows (``status`` pending, ``next_attempt_at`` passed),
    retrying with backoff; ``idempotency_key`` is unique and is what the platform sees (LINE's
    ``X-Line-Retry-Key``, Discord's message nonce), so a send repeated after a crash is not doubled.
    ``payload`` is JSON: what to send, in the shape the platform's sender knows for ``kind``.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "platform", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))  # line | discord
    kind: Mapped[str] = mapped_column(String(32))  # answer | relay | reminder | breach | digest | drop | ...
    recipient: Mapped[str] = mapped_column(String(128))  # a LINE user id, a Discord user/channel/thread id
    payload: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fan_id: Mapped[int | None] = mapped_column(FanRef(), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    #: LINE: a fan's reply token (free to answer with until ``reply_until``), else a push.
    reply_token: Mapped[str | None] = mapped_column(String(256))
    reply_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(16))  # score | decay | pin | unpin | rescore | merge
    actor: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    roles_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Drop(Base):
    __tablename__ = "drops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(500))
    image_url: Mapped[str | None] = mapped_column(String(500))
    min_tier: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(64))
    platforms: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    #: When it goes out (None: at once); the outbox rows are due then.
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sponsored: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    #: Fans who reach the tier later receive it then (once).
    evergreen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    #: LINE's custom aggregation unit its multicasts carry (impressions and clicks read back by it).
    aggregation_unit: Mapped[str | None] = mapped_column(String(30))
    #: The Discord post in the tier's channel, if any (its reactions are counted).
    post_channel_id: Mapped[str | None] = mapped_column(String(32))
    post_message_id: Mapped[str | None] = mapped_column(String(32))
    #: LINE messages it consumes against the monthly quota (one per recipient and message bubble).
    quota_used: Mapped[int] = mapped_column(Integer, default=0, server_default=sql_text("0"))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("drop_id", "fan_id", "platform"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("drops.id", ondelete="CASCADE"))
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The outbox row that carries it: a LINE multicast batch (up to 500 deliveries) or one DM.
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"), index=True)


class LinkCode(Base):
    __tablename__ = "link_codes"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    fan_id: Mapped[int] = mapped_column(FanRef(), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    """A meetup or live event fans check in to with a code (``打卡 CODE`` / ``/checkin CODE``)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRun(Base):
    """A marker that a scheduled job ran for a key (usually a local date): makes jobs idempotent."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    run_key: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str | None] = mapped_column(Text)


class ProcessedEvent(Base):
    """A platform event (a LINE command, …) that has been acted on: a redelivery finds it here.

    Holds nothing personal beyond the platform's event id, so erasure leaves it alone.
    """

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    result: Mapped[str | None] = mapped_column(Text)


class DeadLetter(Base):
    """A signed event superfan could not understand, kept whole so it can be replayed after an upgrade.

    ``reason`` is short and never holds fan content; ``raw`` is the event's JSON as it arrived.
    A redelivered event (same platform and event id) is kept once.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(128))
    event_type: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(200))
    raw: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ScoreState(Base):
    """One row: the epoch T0 that every fan's ``score_base`` is relative to (see crm.scoring)."""

    __tablename__ = "score_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[datetime] = mapped_column(UTCDateTime)
    half_life_days: Mapped[float] = mapped_column(Float)


def table(model: type[Base]) -> Table:
    """The Core table of a model, for set-based statements (executemany without the ORM)."""
    return cast(Table, model.__table__)
