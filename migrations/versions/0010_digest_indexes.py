"""indexes for the digest: interactions.occurred_at, fans.tier, fans.first_seen_at

The daily digest looks for fans who asked after the creator in the last days; without an index
on time it reached their rows through every recently seen fan (about 200 ms at 100k fans and 1M
interactions, 54 ms with it). Reports per week read the same way. Rows arrive roughly in time
order, so the index grows at its right end and costs the live write path little. Fans per tier
(the true-fans goal) and first-seen dates (anniversaries) were full scans of ``fans``: 27 and 22 ms
at 100k fans, 6 and 0.1 ms with their indexes; both columns change rarely.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:32:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f('ix_interactions_occurred_at'), 'interactions', ['occurred_at'], unique=False)
    op.create_index(op.f('ix_fans_tier'), 'fans', ['tier'], unique=False)
    op.create_index(op.f('ix_fans_first_seen_at'), 'fans', ['first_seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_fans_first_seen_at'), table_name='fans')
    op.drop_index(op.f('ix_fans_tier'), table_name='fans')
    op.drop_index(op.f('ix_interactions_occurred_at'), table_name='interactions')
