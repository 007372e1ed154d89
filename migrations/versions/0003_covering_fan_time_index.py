"""covering index for a fan's interactions by time

The cap/cooldown window query (a batch's fans, their awarded rows of the day) and "a fan's latest
interactions" read ``(fan_id, occurred_at)`` ranges; carrying ``kind`` and ``points`` in the index
answers the first from the index alone, instead of visiting every row of a busy fan's day.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interactions_fan_id_occurred_at'))
        batch_op.create_index(batch_op.f('ix_interactions_fan_id_occurred_at_kind_points'),
                              ['fan_id', 'occurred_at', 'kind', 'points'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interactions_fan_id_occurred_at_kind_points'))
        batch_op.create_index(batch_op.f('ix_interactions_fan_id_occurred_at'), ['fan_id', 'occurred_at'], unique=False)
