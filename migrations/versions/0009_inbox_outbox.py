"""the inbox and the outbox: conversation waits, the outbox table, conversation resolution columns

Every message superfan sends becomes an ``outbox`` row first; every stretch of a fan waiting for
an answer becomes a ``conversation_waits`` row (the SLA figures and reminders read them).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:16:15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm.models


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conversation_waits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('fan_id', sa.Integer(), nullable=False),
    sa.Column('started_at', crm.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_at', crm.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', crm.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=16), nullable=True),
    sa.Column('response_seconds', sa.Float(), nullable=True),
    sa.Column('reminded_at', crm.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('breached_at', crm.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_conversation_waits_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['fan_id'], ['fans.id'], name=op.f('fk_conversation_waits_fan_id_fans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_waits'))
    )
    with op.batch_alter_table('conversation_waits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_waits_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_waits_ended_at_due_at'), ['ended_at', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_waits_fan_id'), ['fan_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_waits_started_at'), ['started_at'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', crm.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', crm.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', crm.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('fan_id', sa.Integer(), nullable=True),
    sa.Column('conversation_id', sa.Integer(), nullable=True),
    sa.Column('reply_token', sa.String(length=256), nullable=True),
    sa.Column('reply_until', crm.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_outbox_conversation_id_conversations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['fan_id'], ['fans.id'], name=op.f('fk_outbox_fan_id_fans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_fan_id'), ['fan_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_platform_status_next_attempt_at'), ['platform', 'status', 'next_attempt_at'], unique=False)

    # Plain ALTERs: rebuilding ``conversations`` on SQLite would cascade to the tables that point at it.
    for column in ('last_inbound_at', 'resolved_at', 'thread_claimed_at'):
        op.add_column('conversations', sa.Column(column, crm.models.UTCDateTime(timezone=True), nullable=True))
    op.add_column('conversations', sa.Column('resolution', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_platform_status_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_outbox_fan_id'))

    op.drop_table('outbox')
    with op.batch_alter_table('conversation_waits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversation_waits_started_at'))
        batch_op.drop_index(batch_op.f('ix_conversation_waits_fan_id'))
        batch_op.drop_index(batch_op.f('ix_conversation_waits_ended_at_due_at'))
        batch_op.drop_index(batch_op.f('ix_conversation_waits_conversation_id'))

    op.drop_table('conversation_waits')
    for column in ('resolution', 'thread_claimed_at', 'resolved_at', 'last_inbound_at'):
        op.drop_column('conversations', column)
