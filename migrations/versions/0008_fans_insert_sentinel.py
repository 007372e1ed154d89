"""fans.insert_sentinel: SQLAlchemy's insert sentinel for creating many fans in one statement

The live write path (crm.ingest) creates a group's new fans with one multi-row
``INSERT … RETURNING id`` and needs each id back in the order the rows were given. PostgreSQL
can promise that from its sequence; SQLite cannot, and SQLAlchemy then falls back to one INSERT
per fan unless the table has a sentinel column it fills per row and returns beside the id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTERs, not batch mode: rebuilding ``fans`` on SQLite would drop the old table, and its
# ON DELETE CASCADE would take every fan's history with it.
def upgrade() -> None:
    op.add_column('fans', sa.Column('insert_sentinel', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('fans', 'insert_sentinel')
