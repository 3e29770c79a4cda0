"""Remembered results of slow functions of one text value (``memo_values``).

One row per (kind, version, value): phone numbers parsed, company names split, USCCs
checked (``pipeline.memo``). Read whole per kind and version, so the index is on those.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "memo_values"


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table(TABLE):
        op.create_table(
            TABLE,
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("version", sa.Text, nullable=False),
            sa.Column("value", sa.Text, nullable=False),
            sa.Column("result", sa.Text),
        )
    op.create_index(f"ix_{TABLE}_kind", TABLE, ["kind", "version"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_kind", TABLE)
    op.drop_table(TABLE)
