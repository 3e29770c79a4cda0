"""Where each landing table stands against its source (``raw_change_log``).

One row per landed dataset: the rows landed and their highest position (``source_row``:
a SQLite row's row id, a file row's line), and for a SQLite source that keeps a change log
(``pipeline.extract.changelog``) the log's id and the position (``seq``) up to which its
changes are landed; an incremental extract checks the first two against the source after
applying the log's changes. A dataset with no row was landed by an earlier version, whose
positions were row numbers: the next extract lands it whole.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "raw_change_log"


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table(TABLE):
        op.create_table(
            TABLE,
            sa.Column("dataset", sa.Text, primary_key=True),
            sa.Column("source_id", sa.Text),
            sa.Column("seq", sa.BigInteger),
            sa.Column("source_rows", sa.BigInteger, nullable=False),
            sa.Column("max_row", sa.BigInteger, nullable=False),
        )


def downgrade() -> None:
    op.drop_table(TABLE)
