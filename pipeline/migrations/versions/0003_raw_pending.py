"""Incremental ingest: the record keys the extract changed that validate has not applied
yet (``raw_pending``), and what each staged dataset was validated with (``validation_state``).

``raw_pending`` has one row per (dataset, record key, batch); ``record_key`` NULL stands for
the whole dataset. Written by the extract stages, read and cleared by validate
(``pipeline.extract.changes``). Every dataset starts fully pending, so the first validate
after this migration checks everything. ``validation_state`` keeps a fingerprint of the
suite and settings each dataset was last validated with: when it differs, validate checks
the whole dataset again. ``raw_landing`` says whether a landing table's rows are in
source order (landed whole into a fresh table) or may not be (rows re-landed by an
incremental extract can take the place of deleted ones on PostgreSQL).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "raw_pending"
STATE = "validation_state"
LANDING = "raw_landing"


def upgrade() -> None:
    from pipeline.datasets import DATASETS

    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        pending = op.create_table(
            TABLE,
            sa.Column("dataset", sa.Text, nullable=False),
            sa.Column("record_key", sa.Text),
            sa.Column("batch_id", sa.Text),
        )
        op.create_index("ix_raw_pending_dataset", TABLE, ["dataset", "record_key"])
        op.bulk_insert(
            pending, [{"dataset": d, "record_key": None, "batch_id": "migration"} for d in DATASETS]
        )
    if not inspector.has_table(LANDING):
        op.create_table(
            LANDING,
            sa.Column("dataset", sa.Text, primary_key=True),
            sa.Column("in_source_order", sa.Boolean, nullable=False),
        )
    if not inspector.has_table(STATE):
        op.create_table(
            STATE,
            sa.Column("dataset", sa.Text, primary_key=True),
            sa.Column("fingerprint", sa.Text, nullable=False),
            sa.Column("batch_id", sa.Text),
        )


def downgrade() -> None:
    op.drop_table(STATE)
    op.drop_table(LANDING)
    op.drop_table(TABLE)
