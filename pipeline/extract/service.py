"""Service desk adapter: accounts, tickets and complaints, surveys and the contact log from a SQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pandas as pd

from pipeline.datasets import datasets_of
from pipeline.extract.base import read_sql_table
from pipeline.settings import Settings


def extract(
    settings: Settings, batch_id: str, extracted_at: datetime
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(dataset name, chunk)`` for every service dataset; one row per source record."""
    for dataset in datasets_of("service"):
        for chunk in read_sql_table(
            settings.sources.service_url,
            dataset,
            batch_id,
            extracted_at,
            settings.sources.chunk_rows,
        ):
            yield dataset.name, chunk
