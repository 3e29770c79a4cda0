"""What a pending record's change can do to the records that refer to it (``raw_pending.reach``).

An extract that changes a record says whether its key is still landed with the same
carried value (0: the records referring to it are judged as before), may have appeared
(1: records that referred to it were orphans, quarantined as such) or may have gone or
changed its carried value (2: every record referring to it is judged again). NULL, as on
the rows written before this migration, counts as 2. Validate carries a change to the
referring records by it (``pipeline.extract.changes.propagate``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "raw_pending"


def upgrade() -> None:
    if "reach" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(TABLE)}:
        op.add_column(TABLE, sa.Column("reach", sa.SmallInteger))


def downgrade() -> None:
    op.drop_column(TABLE, "reach")
