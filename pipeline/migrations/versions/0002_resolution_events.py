"""Resolution events: one row per merge or split of golden customers, with its evidence.

Written by the resolution stage (append-only, keyed by ``event_id`` so reruns add nothing)
and read by the archive-review report. Warehouses where the stage already created the table
get the columns they lack.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "core_resolution_events"
COLUMNS = (
    ("event_type", sa.Text),
    ("customer_id", sa.Text),
    ("other_customer_ids", sa.Text),
    ("source_records", sa.Text),
    ("match_probability", sa.Float),
    ("fields_agreed", sa.Text),
    ("evidence", sa.Text),
    ("quarter", sa.Text),
    ("event_id", sa.Text),
    ("batch_id", sa.Text),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        op.create_table(TABLE, *[sa.Column(name, kind()) for name, kind in COLUMNS])
    else:
        present = {column["name"] for column in inspector.get_columns(TABLE)}
        for name, kind in COLUMNS:
            if name not in present:
                op.add_column(TABLE, sa.Column(name, kind()))
    op.create_index(f"ix_{TABLE}_event_id", TABLE, ["event_id"], if_not_exists=True)
    op.create_index(f"ix_{TABLE}_batch_id", TABLE, ["batch_id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_batch_id", TABLE)
    op.drop_index(f"ix_{TABLE}_event_id", TABLE)
    op.drop_table(TABLE)
