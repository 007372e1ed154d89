"""the (platform, source_event_id) uniqueness as a unique index instead of a table constraint

The same rule and the same name; on SQLite a table constraint's index cannot be dropped, and a
first bulk import into an empty table now builds this index once, after its rows are in, instead
of inserting into it at a random place per row (about a fifth of the import's database work).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 22:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = 'uq_interactions_platform_source_event_id'


def upgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_constraint(NAME, type_='unique')
        batch_op.create_index(NAME, ['platform', 'source_event_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index(NAME)
        batch_op.create_unique_constraint(NAME, ['platform', 'source_event_id'])
