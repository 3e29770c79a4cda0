"""The pipeline's stages: each is one function ``(StageContext) -> StageResult``.

The CLI and the Airflow tasks call these same functions; a stage reads its inputs
from the warehouse (or the sources) and replaces exactly its own output partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from pipeline.quarters import Quarter
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """What every stage gets: settings, the warehouse, the quarter being computed and the batch."""

    settings: Settings
    engine: Engine
    quarter: Quarter
    batch_id: str
    # When the batch was extracted (UTC, naive). Logic never reads the clock: this comes from
    # the caller (the Airflow data interval, or the CLI's start time).
    extracted_at: datetime


@dataclass
class StageResult:
    """Rows in and out of one stage, plus anything worth showing in the run summary."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


Stage = Callable[[StageContext], StageResult]
