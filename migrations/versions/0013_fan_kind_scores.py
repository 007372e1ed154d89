"""fan_kind_scores: each fan's score split by interaction kind, kept as rows are stored

A fan card explains its score per kind (rows, points, worth today). It was summed from the fan's
awarded interactions on every read: ``fans --top 100`` read 290k rows for it at 100k fans and
took 0.24 s. The table holds the sums, kept up to date by every path that stores, moves or
rescores interactions (crm.fan_kind_scores). This migration fills it from the interactions.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LN2 = math.log(2.0)


def upgrade() -> None:
    op.create_table(
        'fan_kind_scores',
        sa.Column('fan_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('awarded', sa.Integer(), nullable=False),
        sa.Column('points', sa.Float(), nullable=False),
        sa.Column('score_base', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['fan_id'], ['fans.id'], name=op.f('fk_fan_kind_scores_fan_id_fans'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('fan_id', 'kind', name=op.f('pk_fan_kind_scores')),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    state = bind.execute(sa.text("SELECT epoch, half_life_days FROM score_state WHERE id = 1")).first()
    if state is None:  # nothing has been scored yet
        return
    if bind.dialect.name == 'sqlite':
        days = "julianday(occurred_at) - julianday(:epoch)"
    else:
        days = "extract(epoch FROM occurred_at - CAST(:epoch AS timestamp with time zone)) / 86400.0"
    bind.execute(sa.text(
        "INSERT INTO fan_kind_scores (fan_id, kind, awarded, points, score_base) "
        f"SELECT fan_id, kind, count(*), sum(points), sum(points * exp({LN2!r} * ({days}) / :half_life)) "
        "FROM interactions WHERE points > 0 GROUP BY fan_id, kind"),
        {"epoch": state[0], "half_life": float(state[1])})


def downgrade() -> None:
    op.drop_table('fan_kind_scores')
