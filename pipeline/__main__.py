"""``python -m pipeline``: the ``crm-pipeline`` command (used where the console script is not on PATH)."""

from pipeline.cli import app

app(prog_name="crm-pipeline")
