"""drops: schedule, sponsored, evergreen, LINE aggregation unit, Discord post, quota used; deliveries.outbox_id; identities.dm_closed_at

Issue #17: a drop's deliveries go out as outbox rows (a LINE multicast batch of up to 500
deliveries, or one Discord DM), each delivery pointing at the row that carries it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crm.column_types import UTCDateTime

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTERs on drops: rebuilding it on SQLite would cascade to its deliveries.
    op.add_column('drops', sa.Column('scheduled_at', UTCDateTime(timezone=True), nullable=True))
    op.add_column('drops', sa.Column('sponsored', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('drops', sa.Column('evergreen', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('drops', sa.Column('aggregation_unit', sa.String(length=30), nullable=True))
    op.add_column('drops', sa.Column('post_channel_id', sa.String(length=32), nullable=True))
    op.add_column('drops', sa.Column('post_message_id', sa.String(length=32), nullable=True))
    op.add_column('drops', sa.Column('quota_used', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('drops', sa.Column('finished_at', UTCDateTime(timezone=True), nullable=True))
    op.add_column('identities', sa.Column('dm_closed_at', UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('deliveries') as batch:  # nothing points at deliveries: a rebuild is safe
        batch.add_column(sa.Column('outbox_id', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_deliveries_outbox_id'), ['outbox_id'], unique=False)
        batch.create_foreign_key(batch.f('fk_deliveries_outbox_id_outbox'), 'outbox', ['outbox_id'], ['id'],
                                 ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_constraint(batch.f('fk_deliveries_outbox_id_outbox'), type_='foreignkey')
        batch.drop_index(batch.f('ix_deliveries_outbox_id'))
        batch.drop_column('outbox_id')
    for column in ('finished_at', 'quota_used', 'post_message_id', 'post_channel_id', 'aggregation_unit',
                   'evergreen', 'sponsored', 'scheduled_at'):
        op.drop_column('drops', column)
    op.drop_column('identities', 'dm_closed_at')
