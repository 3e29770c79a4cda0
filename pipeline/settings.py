"""One typed settings object for the whole pipeline.

Values come, in rising priority, from the defaults below, a TOML file (the path in
``CRM_CONFIG``, else ``crm-pipeline.toml`` in the working directory when present),
and environment variables prefixed ``CRM_`` with ``__`` between nested names
(``CRM_TIERS__VALUE_A_SHARE=0.8``). Inside Airflow, :mod:`pipeline.airflow_settings`
overlays Airflow Connections on top. Every default is a business default from
DOMAIN.md and is printed in the reports' appendix.
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("data")


class _Section(BaseModel):
    # A misspelt key (``value_a_shar``) is an error, not a silently kept default.
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Section):
    """Where the three source systems are read from."""

    sales_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/sources/sales.db"
    service_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/sources/service.db"
    finance_dir: Path = DEFAULT_DATA_DIR / "sources" / "finance"
    finance_accounts_file: str = "accounts.xlsx"
    finance_accounts_sheet: str | None = "客户"
    finance_invoices_file: str = "invoices.csv"
    finance_payments_file: str = "payments.csv"
    # Source systems store naive local timestamps in this zone.
    source_timezone: str = "Asia/Shanghai"
    chunk_rows: int = Field(200_000, gt=0)
    # Land only what changed since the last extract (rows compared by hash; the sources are
    # still read whole) and validate only the changed records. Off: every run lands and
    # validates everything.
    incremental: bool = False


class ValidationSettings(_Section):
    """Row-level quarantine thresholds: a run stops when a dataset's quarantined share passes its limit."""

    default_max_quarantine_share: float = Field(0.10, ge=0, le=1)
    max_quarantine_share: dict[str, float] = Field(default_factory=dict)
    # A batch whose row count falls below this share of the previous batch fails.
    min_row_count_ratio: float = Field(0.5, ge=0, le=1)
    phone_region: str = "CN"
    stale_after_days: int = Field(92, gt=0)
    # Plausible window for event dates: from this day to extraction time plus this many days.
    earliest_plausible_date: date = date(2000, 1, 1)
    latest_plausible_days_ahead: int = Field(366, ge=0)
    # Worker processes validating datasets at once on PostgreSQL (0: one per CPU core). A
    # SQLite warehouse takes one writer at a time, so there validation runs in one process.
    workers: int = Field(0, ge=0)


class ResolutionSettings(_Section):
    """Entity resolution: match thresholds and the human-review band."""

    match_threshold: float = Field(0.9, ge=0, le=1)
    review_lower: float = Field(0.5, ge=0, le=1)
    review_upper: float = Field(0.9, ge=0, le=1)
    # Survivorship: which system wins a field when several hold a valid value.
    source_priority: list[str] = Field(default_factory=lambda: ["sales", "finance", "service"])
    decisions_file: Path | None = None
    # The trained match model is kept and used again for this many days, unless the
    # number of customer records moved by more than a tenth (0: train on every run).
    retrain_after_days: int = Field(7, ge=0)
    # With a kept model, a run resolves only what changed since the last run (the result
    # is the same as a whole run's); false resolves everything every time.
    partial: bool = True

    @field_validator("source_priority")
    @classmethod
    def _known_systems(cls, systems: list[str]) -> list[str]:
        # A misspelt system ("Sales", "finanse") would silently rank last.
        known = ("sales", "finance", "service")
        unknown = [s for s in systems if s not in known]
        if unknown or len(set(systems)) != len(systems):
            raise ValueError(
                f"must list distinct source systems of {', '.join(known)}; "
                f"unknown or repeated: {unknown or systems}"
            )
        return systems

    @model_validator(mode="after")
    def _review_band(self) -> ResolutionSettings:
        if self.review_lower > self.review_upper:
            raise ValueError(
                f"review_lower ({self.review_lower}) is above review_upper "
                f"({self.review_upper}): no pair would ever be queued for review"
            )
        return self


class TierSettings(_Section):
    """Value tier, credit grade and lifecycle rules (DOMAIN.md defaults)."""

    value_a_share: float = Field(0.70, gt=0, le=1)
    value_b_share: float = Field(0.20, ge=0, le=1)
    value_window_months: int = 12
    credit_window_months: int = 24
    # grade: (minimum share collected, longest payment cycle in days)
    credit_grades: dict[str, tuple[float, int]] = Field(
        default_factory=lambda: {
            "A": (0.90, 45),
            "B": (0.75, 75),
            "C": (0.60, 105),
            "D": (0.30, 255),
        }
    )
    overdue_risk_days: int = 90
    new_customer_quarters: int = 2
    loyal_min_active_quarters: int = 3
    loyal_window_quarters: int = 4
    at_risk_drop_share: float = 0.5
    churn_quiet_quarters: int = 4
    both_ends_top_n: int = 20


class MetricSettings(_Section):
    """Satisfaction and service metric rules."""

    first_response_sla_hours: float = 24.0
    csat_top_box_min: int = 4
    nps_promoter_min: int = 9
    nps_detractor_max: int = 6
    small_group_n: int = 30
    trend_quarters: int = 8


class SmtpSettings(_Section):
    """SMTP delivery from the CLI (inside Airflow an SMTP Connection is used instead)."""

    host: str = "localhost"
    port: int = 25
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_ssl: bool = False
    sender: str = "crm-pipeline@localhost"
    timeout_seconds: float = 30.0
    retries: int = 3
    retry_backoff_seconds: float = 2.0


class ReportSettings(_Section):
    """Quarterly reports: who gets them, in which language, and the archive-review deadline rule."""

    company_name: str = "示例科技股份有限公司"
    language: str = "zh_CN"
    satisfaction_recipients: list[str] = Field(default_factory=lambda: ["executives@localhost"])
    archive_recipients: list[str] = Field(default_factory=lambda: ["archive@localhost"])
    alert_recipients: list[str] = Field(default_factory=lambda: ["data-engineering@localhost"])
    finding_deadline_days: int = 30
    archive_pdf_password: str | None = None
    # The archive PDF lists at most this many worklist items (most severe first); the attached
    # CSV/XLSX always holds the full worklist.
    pdf_worklist_max_items: int = Field(200, ge=0)
    # Likewise for the both-ends and tier-change tables (their items are all in the worklist).
    pdf_section_max_rows: int = Field(50, ge=0)


class Settings(BaseSettings):
    """All configuration of one pipeline deployment."""

    model_config = SettingsConfigDict(
        env_prefix="CRM_",
        env_nested_delimiter="__",
        # Unknown keys in the TOML file or under a section's CRM_<SECTION>__ variables are
        # errors (a typo would otherwise leave the default in effect without a word).
        extra="forbid",
    )

    warehouse_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/warehouse.db"
    out_dir: Path = Path("out")
    timezone: str = "Asia/Shanghai"
    sources: SourceSettings = Field(default_factory=SourceSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    resolution: ResolutionSettings = Field(default_factory=ResolutionSettings)
    tiers: TierSettings = Field(default_factory=TierSettings)
    metrics: MetricSettings = Field(default_factory=MetricSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """The settings as a plain dict with secrets masked, for logs and report appendices."""
        data = self.model_dump(mode="json")
        for section, key in (("smtp", "password"), ("reports", "archive_pdf_password")):
            if data[section].get(key):
                data[section][key] = "***"
        for key in ("warehouse_url",):
            data[key] = _mask_url_password(data[key])
        for key in ("sales_url", "service_url"):
            data["sources"][key] = _mask_url_password(data["sources"][key])
        return data


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to mask
        return url


def config_path() -> Path | None:
    """The TOML config file in effect, if any."""
    explicit = os.environ.get("CRM_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"CRM_CONFIG points at {path}, which is not a file")
        return path
    default = Path("crm-pipeline.toml")
    return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
