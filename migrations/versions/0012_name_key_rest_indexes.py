"""indexes on a name key without its first character (fans, identities): fuzzy lookup's candidates

``superfan fan 陳宜君`` for 陳怡君 is a typo; fuzzy matching scored every distinct name key (about
100k at 100,000 fans: 0.2-0.6 s). It now scores the keys that share a first character with what
was typed (the ``name_key`` indexes) or, for a typo in the first character, its second character
as their second (these indexes, on ``substr(name_key, 2)``). Both tables change rarely (a new fan,
a new display name), so the write path pays one more index entry per new fan or identity.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_fans_name_key_rest', 'fans', [sa.text('substr(name_key, 2)'), 'name_key'], unique=False)
    op.create_index('ix_identities_name_key_rest', 'identities', [sa.text('substr(name_key, 2)'), 'name_key'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_identities_name_key_rest', table_name='identities')
    op.drop_index('ix_fans_name_key_rest', table_name='fans')
