"""Finance adapter: customer accounts, invoices and payments from Excel or CSV exports (GBK or UTF-8)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pandas as pd

from pipeline.datasets import datasets_of
from pipeline.extract.base import read_file, resolve_files
from pipeline.settings import Settings


def extract(
    settings: Settings, batch_id: str, extracted_at: datetime
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(dataset name, chunk)`` for every finance dataset; a setting may name a glob of monthly files."""
    sources = settings.sources
    for dataset in datasets_of("finance"):
        pattern = getattr(sources, dataset.raw)
        sheet = sources.finance_accounts_sheet if dataset.name == "finance_accounts" else None
        for path in resolve_files(sources.finance_dir, pattern, "finance"):
            for chunk in read_file(
                path, dataset, batch_id, extracted_at, sources.chunk_rows, sheet=sheet
            ):
                yield dataset.name, chunk
