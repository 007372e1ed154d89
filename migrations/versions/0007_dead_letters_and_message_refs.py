"""dead letters for events superfan could not understand; interactions remember their message id

``dead_letters`` keeps a signed event that could not be parsed, whole, with a short reason, so it
is never lost silently and ``superfan dead-letters replay`` can record it after an upgrade.
``interactions.message_ref`` holds LINE's ``message.id``: an unsend or an edit names the message,
not the webhook event. Its index is partial (only rows that have one), like ix_interactions_awarded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm.models

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = 'message_ref IS NOT NULL'


def upgrade() -> None:
    op.create_table(
        'dead_letters',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('event_id', sa.String(length=128), nullable=True),
        sa.Column('event_type', sa.String(length=32), nullable=True),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.Column('raw', sa.Text(), nullable=False),
        sa.Column('received_at', crm.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('replayed_at', crm.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
        sa.UniqueConstraint('platform', 'event_id', name=op.f('uq_dead_letters_platform_event_id')),
    )
    op.add_column('interactions', sa.Column('message_ref', sa.String(length=128), nullable=True))
    op.create_index('ix_interactions_message_ref', 'interactions', ['platform', 'message_ref'], unique=False,
                    sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index('ix_interactions_message_ref', table_name='interactions')
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_column('message_ref')
    op.drop_table('dead_letters')
