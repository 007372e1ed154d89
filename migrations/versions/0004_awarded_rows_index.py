"""partial index over awarded interactions for the cap/cooldown window

0003's covering index still made a batch read every row of a busy fan's day (``points > 0`` was
not part of the key), so a fan writing thousands of capped messages slowed every batch they were
in. The window query now reads a partial index of awarded rows only; a plain ``(fan_id,
occurred_at)`` index serves a fan's history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interactions_fan_id_occurred_at_kind_points'))
        batch_op.create_index(batch_op.f('ix_interactions_fan_id_occurred_at'), ['fan_id', 'occurred_at'], unique=False)
        batch_op.create_index('ix_interactions_awarded', ['fan_id', 'occurred_at', 'kind', 'points'], unique=False,
                              sqlite_where=sa.text('points > 0'), postgresql_where=sa.text('points > 0'))


def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_interactions_awarded')
        batch_op.drop_index(batch_op.f('ix_interactions_fan_id_occurred_at'))
        batch_op.create_index(batch_op.f('ix_interactions_fan_id_occurred_at_kind_points'),
                              ['fan_id', 'occurred_at', 'kind', 'points'], unique=False)
