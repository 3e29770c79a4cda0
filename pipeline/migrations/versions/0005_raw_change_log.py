"""Where each landing table stands against its source (``raw_change_log``).

One row per landed dataset: the rows landed and their highest position (``source_row``:
a SQLite row's row id, a file row's line), and for a SQLite source that keeps a change log
(``pipeline.extract.changelog``) the log's id and the position (``seq``) up to which its
changes are landed; an incremental extract checks the first two against the source after
applying the log's changes. A dataset with no row was landed by an earlier version, whose
positions were row numbers: the next extract lands it whole.

``raw_files``: per file of a dataset landed from files, what was read of it (bytes, their
SHA-1, rows, encoding, whether it ended a line), so that the next incremental extract reads
only rows added at the end of a file, and skips a file that is the same.

``validation_state`` gains each dataset's staged and quarantined row counts, so that an
incremental validate need not count tables of millions of rows to check its totals.

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
FILES = "raw_files"


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
    if not sa.inspect(op.get_bind()).has_table(FILES):
        op.create_table(
            FILES,
            sa.Column("dataset", sa.Text, primary_key=True),
            sa.Column("file_no", sa.Integer, primary_key=True),
            sa.Column("path", sa.Text, nullable=False),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("digest", sa.Text, nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("encoding", sa.Text),
            sa.Column("ends_line", sa.Boolean, nullable=False),
        )

    state = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("validation_state")}
    for column in ("staged_rows", "quarantined_rows"):
        if column not in state:
            op.add_column("validation_state", sa.Column(column, sa.BigInteger))


def downgrade() -> None:
    op.drop_column("validation_state", "quarantined_rows")
    op.drop_column("validation_state", "staged_rows")
    op.drop_table(FILES)
    op.drop_table(TABLE)
