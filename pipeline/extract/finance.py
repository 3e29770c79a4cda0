"""Finance adapter: customer accounts, invoices and payments from Excel or CSV exports (GBK or UTF-8)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipeline.datasets import Dataset, datasets_of
from pipeline.extract.base import read_file, resolve_files
from pipeline.settings import Settings


def files(settings: Settings, dataset: Dataset) -> list[Path]:
    """The files of a finance dataset, in the order they are read (a setting may name a
    glob of monthly files)."""
    pattern = getattr(settings.sources, dataset.raw)
    return resolve_files(settings.sources.finance_dir, pattern, "finance")


def extract(
    settings: Settings, batch_id: str, extracted_at: datetime
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(dataset name, chunk)`` for every finance dataset."""
    sources = settings.sources
    for dataset in datasets_of("finance"):
        sheet = sources.finance_accounts_sheet if dataset.name == "finance_accounts" else None
        for number, path in enumerate(files(settings, dataset)):
            for chunk in read_file(
                path, dataset, batch_id, extracted_at, sources.chunk_rows, sheet, number
            ):
                yield dataset.name, chunk
