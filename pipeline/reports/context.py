"""Pure report-context builders: DataFrames + settings + quarter -> dict of formatted values.

Templates do no arithmetic: every number here is already a string ready to print. The same
inputs give the same context (no clock, stable sort orders), so a report is reproducible
from the warehouse state. A missing optional table (None) becomes an empty section shown
as "no data"; the satisfaction report requires ``mart_metrics``.
"""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from typing import Any

import pandas as pd

from pipeline.quarters import Quarter
from pipeline.reports import charts
from pipeline.reports.render import catalog, normalise_language, translator
from pipeline.settings import Settings

SHARE_METRICS = ("csat_top2_share", "first_response_sla_share", "retention_rate")
HOUR_METRICS = ("resolution_median_hours", "resolution_p90_hours")
COUNT_METRICS = ("complaint_count", "churned_customers")
LOWER_IS_BETTER = {*HOUR_METRICS, *COUNT_METRICS}
KPI_METRICS = (
    "csat_top2_share",
    "csat_mean",
    "nps",
    "first_response_sla_share",
    "resolution_median_hours",
    "retention_rate",
    "churned_customers",
    "complaint_count",
)
BREAKDOWN_METRICS = (
    "csat_top2_share",
    "nps",
    "first_response_sla_share",
    "resolution_median_hours",
    "retention_rate",
    "complaint_count",
)
SEVERITY_ORDER = {
    "critical": 0,
    "error": 1,
    "high": 1,
    "warning": 2,
    "medium": 2,
    "info": 3,
    "low": 3,
}

# Not after a decimal point or letter, so scores and ids are left alone.
_PHONE_RE = re.compile(r"(?<![\d.A-Za-z_-])(\+?\d[\d\s\-()]{5,}\d)(?![\d.A-Za-z])")
_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


class ReportDataError(ValueError):
    """A required input table is missing or empty."""


# ---------------------------------------------------------------- formatting helpers


def report_date(quarter: Quarter) -> date:
    """The report's date: the day after the quarter ends (never the clock)."""
    return quarter.end_date + timedelta(days=1)


def mask_contact(text: Any) -> str:
    """Mask phone numbers (keep first 3 and last 2 digits) and e-mail local parts."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""

    def phone(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group(1))
        if len(digits) < 7:
            return match.group(1)
        return digits[:3] + "*" * (len(digits) - 5) + digits[-2:]

    masked = _PHONE_RE.sub(phone, str(text))
    return _EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", masked)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "–" if _is_missing(value) or value == "" else str(value)


def _share_scale(metrics: pd.DataFrame) -> float:
    """Shares are stored as 0-1; tolerate a producer that stores percent."""
    values = metrics.loc[metrics["metric"].isin(SHARE_METRICS), "value"].abs()
    return 1.0 if values.empty or values.max() > 1.5 else 100.0


def format_value(metric: str, value: Any, scale: float = 100.0) -> str:
    if _is_missing(value):
        return "–"
    value = float(value)
    if metric in SHARE_METRICS:
        return f"{value * scale:.1f}%"
    if metric in HOUR_METRICS:
        return f"{value:.1f} h"
    if metric in COUNT_METRICS:
        return f"{value:,.0f}"
    if metric == "nps":
        return f"{value:+.0f}"
    return f"{value:.2f}"


def format_change(metric: str, change: Any, scale: float = 100.0) -> tuple[str, str]:
    """(text, css class) for a quarter-on-quarter change; class is good/bad/flat."""
    if _is_missing(change):
        return "–", "flat"
    change = float(change)
    if metric in SHARE_METRICS:
        text = f"{change * scale:+.1f} pp"
    elif metric in HOUR_METRICS:
        text = f"{change:+.1f} h"
    elif metric in COUNT_METRICS or metric == "nps":
        text = f"{change:+,.0f}"
    else:
        text = f"{change:+.2f}"
    if abs(change) < 1e-9:
        return text, "flat"
    better = change < 0 if metric in LOWER_IS_BETTER else change > 0
    return text, "good" if better else "bad"


def _int(value: Any) -> str:
    return "–" if _is_missing(value) else f"{int(value):,}"


def _column(df: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _segment_label(dimension: str, segment: str, t: Any) -> str:
    """A breakdown segment as readers name it: tiers in words (``unknown``: not tiered),
    ``unknown`` (no value on file) in the report language; regions and industries as
    they are."""
    if dimension == "tier":
        return t("tier.-") if segment == "unknown" else t(f"tier.{segment}")
    return t("segment.unknown") if segment == "unknown" else segment


def _settings_rows(section: Any, language: str) -> list[dict[str, str]]:
    """One row per setting: its name in words, its key (what to change) and its value."""
    messages = catalog(language)
    rows = []
    for key, value in section.model_dump(mode="json").items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        rows.append({"name": messages.get(f"param.{key}", key), "key": key, "value": str(value)})
    return rows


def _shorten(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _coverage(
    quarantine: pd.DataFrame | None, rows_used: dict[str, int] | None, language: str
) -> list[dict[str, str]]:
    """One row per dataset: rows used (staged) and rows quarantined, with the top reasons
    (by defect code, in words; a code the catalog does not know shows its rule's reason)."""
    messages = catalog(language)
    counts: dict[str, int] = {}
    reasons: dict[str, str] = {}
    if quarantine is not None and not quarantine.empty and "dataset" in quarantine.columns:
        rows_col = _column(quarantine, "rows", "row_count")
        if rows_col and pd.api.types.is_numeric_dtype(quarantine[rows_col]):
            counts = quarantine.groupby("dataset")[rows_col].sum().astype(int).to_dict()
        else:
            counts = quarantine.groupby("dataset").size().astype(int).to_dict()
        reason_col = _column(quarantine, "reason", "reasons", "rule")
        code_col = "defect" if "defect" in quarantine.columns else None
        for dataset, group in quarantine.groupby("dataset"):
            if code_col:
                labels = [
                    messages.get(f"defect.{code}") or _shorten(str(reason).split("; ")[0])
                    for code, reason in zip(
                        group[code_col],
                        group[reason_col] if reason_col else group[code_col],
                        strict=True,
                    )
                ]
                top = pd.Series(labels, dtype=object).value_counts().head(3)
            elif reason_col:
                top = group[reason_col].astype(str).value_counts().head(3)
            else:
                continue
            reasons[dataset] = "; ".join(f"{_shorten(k)} ({v:,})" for k, v in top.items())
    datasets = sorted(set(counts) | set(rows_used or {}))
    result = []
    for dataset in datasets:
        used = (rows_used or {}).get(dataset)
        bad = counts.get(dataset, 0)
        total = (used or 0) + bad
        result.append(
            {
                "dataset": messages.get(f"dataset.{dataset}", dataset),
                "rows_used": _int(used),
                "rows_quarantined": _int(bad),
                "share_quarantined": f"{bad / total * 100:.2f}%" if total else "–",
                "reasons": reasons.get(dataset, ""),
            }
        )
    return result


# ---------------------------------------------------------------- satisfaction report


def build_satisfaction_context(
    metrics: pd.DataFrame | None,
    customer_quarter: pd.DataFrame | None,
    quarantine: pd.DataFrame | None,
    settings: Settings,
    quarter: Quarter,
    rows_used: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Context of the executive satisfaction report for ``quarter`` (aggregates only).

    ``metrics`` is mart_metrics in long form (one row per quarter x metric x dimension x
    segment), ideally for the last ``settings.metrics.trend_quarters`` quarters.
    ``customer_quarter`` (one row per customer x quarter) feeds the tier charts only as counts.
    """
    language = normalise_language(settings.reports.language)
    t = translator(language)
    if metrics is None or metrics.empty:
        raise ReportDataError(
            "the satisfaction report needs mart_metrics, which is missing or empty"
        )
    metrics = metrics.assign(quarter=metrics["quarter"].astype(str))
    current = metrics[metrics["quarter"] == str(quarter)]
    if current.empty:
        raise ReportDataError(f"mart_metrics has no rows for {quarter}")
    scale = _share_scale(metrics)
    overall = current[current["dimension"] == "overall"].set_index("metric")

    kpis = []
    for metric in KPI_METRICS:
        if metric not in overall.index:
            continue
        row = overall.loc[metric]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        change, css = format_change(metric, row.get("change"), scale)
        kpis.append(
            {
                "metric": metric,
                "label": t(f"metric.{metric}"),
                "value": format_value(metric, row["value"], scale),
                "previous": format_value(metric, row.get("previous_value"), scale),
                "change": change,
                "change_class": css,
                "n": _int(row.get("n")),
            }
        )

    trend_quarters = [
        str(quarter.shift(-i)) for i in range(settings.metrics.trend_quarters - 1, -1, -1)
    ]
    overall_all = metrics[metrics["dimension"] == "overall"]

    def trend(metric: str, factor: float = 1.0) -> list[float | None]:
        series = overall_all[overall_all["metric"] == metric].set_index("quarter")["value"]
        return [
            None if q not in series.index else float(series[q]) * factor for q in trend_quarters
        ]

    chart_list = []
    trend_series = {
        t(f"metric.{m}"): trend(m, scale) for m in SHARE_METRICS if m in set(overall_all["metric"])
    }
    if trend_series:
        chart_list.append(
            {
                "title": t("chart.trend_shares"),
                "src": charts.line_chart(
                    trend_quarters, trend_series, t("chart.trend_shares"), "%"
                ),
            }
        )
    if "nps" in set(overall_all["metric"]):
        chart_list.append(
            {
                "title": t("chart.trend_nps"),
                "src": charts.line_chart(
                    trend_quarters, {"NPS": trend("nps")}, t("chart.trend_nps")
                ),
            }
        )

    def segment_values(metric: str, dimension: str) -> pd.DataFrame:
        rows = current[(current["metric"] == metric) & (current["dimension"] == dimension)]
        return rows.sort_values(["segment"]).reset_index(drop=True)

    sla = segment_values("first_response_sla_share", "channel")
    if not sla.empty:
        chart_list.append(
            {
                "title": t("chart.sla_channel"),
                "src": charts.bar_chart(
                    [t(f"channel.{s}") for s in sla["segment"].astype(str)],
                    (sla["value"].astype(float) * scale).round(1).tolist(),
                    t("chart.sla_channel"),
                    "%",
                ),
            }
        )
    for dimension in ("category", "touchpoint"):
        mix = segment_values("complaint_count", dimension)
        if not mix.empty:
            mix = mix.sort_values(["value", "segment"], ascending=[False, True])
            chart_list.append(
                {
                    "title": t(f"chart.complaint_{dimension}"),
                    "src": charts.bar_chart(
                        [t(f"{dimension}.{s}") for s in mix["segment"].astype(str)],
                        mix["value"].astype(float).tolist(),
                        t(f"chart.complaint_{dimension}"),
                        horizontal=True,
                        fmt="%d",
                    ),
                }
            )

    tier_rows, migration_rows = [], []
    if customer_quarter is not None and not customer_quarter.empty:
        cq = customer_quarter.assign(quarter=customer_quarter["quarter"].astype(str))
        now = cq[cq["quarter"] == str(quarter)]
        before = cq[cq["quarter"] == str(quarter.previous())]
        tiers = ["A", "B", "C"]
        now_counts = now["value_tier"].fillna("-").astype(str).value_counts()
        before_counts = before["value_tier"].fillna("-").astype(str).value_counts()
        for tier in [*tiers, "-"]:
            tier_rows.append(
                {
                    "tier": t(f"tier.{tier}"),
                    "count": _int(now_counts.get(tier, 0)),
                    "previous": _int(before_counts.get(tier, 0)),
                    "change": f"{int(now_counts.get(tier, 0)) - int(before_counts.get(tier, 0)):+,d}",
                }
            )
        chart_list.append(
            {
                "title": t("chart.tier_distribution"),
                "src": charts.bar_chart(
                    [t(f"tier.{x}") for x in [*tiers, "-"]],
                    [float(now_counts.get(x, 0)) for x in [*tiers, "-"]],
                    t("chart.tier_distribution"),
                    fmt="%d",
                ),
            }
        )
        if not before.empty:
            moved = before[["customer_id", "value_tier"]].merge(
                now[["customer_id", "value_tier"]], on="customer_id", suffixes=("_before", "_now")
            )
            moved = moved.fillna({"value_tier_before": "-", "value_tier_now": "-"})
            matrix = pd.crosstab(moved["value_tier_before"], moved["value_tier_now"])
            matrix = matrix.reindex(index=[*tiers, "-"], columns=[*tiers, "-"], fill_value=0)
            shares = matrix.div(matrix.sum(axis=1).where(lambda s: s > 0, 1), axis=0) * 100
            for before_tier in matrix.index:
                migration_rows.append(
                    {
                        "from": t(f"tier.{before_tier}"),
                        "cells": [_int(matrix.loc[before_tier, c]) for c in matrix.columns],
                    }
                )
            chart_list.append(
                {
                    "title": t("chart.tier_migration"),
                    "src": charts.stacked_share_chart(
                        [t(f"tier.{x}") for x in shares.index],
                        {t(f"tier.{c}"): shares[c].round(1).tolist() for c in shares.columns},
                        t("chart.tier_migration"),
                    ),
                }
            )

    breakdowns = []
    for dimension in ("tier", "region", "industry"):
        rows = current[current["dimension"] == dimension]
        if rows.empty:
            breakdowns.append({"dimension": t(f"dimension.{dimension}"), "columns": [], "rows": []})
            continue
        present = [m for m in BREAKDOWN_METRICS if m in set(rows["metric"])]
        table_rows = []
        for segment, group in sorted(rows.groupby(rows["segment"].astype(str)), key=lambda x: x[0]):
            by_metric = group.set_index("metric")
            cells = []
            for metric in present:
                if metric not in by_metric.index:
                    cells.append({"value": "–", "change": "", "change_class": "flat"})
                    continue
                r = by_metric.loc[metric]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                change, css = format_change(metric, r.get("change"), scale)
                cells.append(
                    {
                        "value": format_value(metric, r["value"], scale),
                        "change": change,
                        "change_class": css,
                    }
                )
            small = bool(group.get("is_small_group", pd.Series([False])).fillna(False).any())
            n = group["n"].max() if "n" in group.columns else None
            label = _segment_label(dimension, segment, t)
            table_rows.append({"segment": label, "n": _int(n), "small": small, "cells": cells})
        breakdowns.append(
            {
                "dimension": t(f"dimension.{dimension}"),
                "columns": [t(f"metric.{m}") for m in present],
                "rows": table_rows,
            }
        )

    movers = current[(current["dimension"] != "overall") & current["change"].notna()].copy()
    if "is_small_group" in movers.columns:
        movers = movers[~movers["is_small_group"].fillna(False).astype(bool)]
    # Compare movements in display units (pp for shares) so shares and points rank together.
    movers["size"] = (
        movers.apply(
            lambda r: abs(float(r["change"])) * (scale if r["metric"] in SHARE_METRICS else 1.0),
            axis=1,
        )
        if not movers.empty
        else []
    )
    movers = movers[~movers["metric"].isin(COUNT_METRICS)] if not movers.empty else movers
    top_moves = []
    if not movers.empty:
        movers = movers.sort_values(
            ["size", "metric", "dimension", "segment"], ascending=[False, True, True, True]
        )
        for _, r in movers.head(8).iterrows():
            change, css = format_change(r["metric"], r["change"], scale)
            top_moves.append(
                {
                    "metric": t(f"metric.{r['metric']}"),
                    "dimension": t(f"dimension.{r['dimension']}"),
                    "segment": _segment_label(str(r["dimension"]), str(r["segment"]), t),
                    "value": format_value(r["metric"], r["value"], scale),
                    "previous": format_value(r["metric"], r.get("previous_value"), scale),
                    "change": change,
                    "change_class": css,
                }
            )

    return {
        "language": language,
        "report_key": "satisfaction",
        "title": t("satisfaction.title"),
        "company": settings.reports.company_name,
        "quarter": str(quarter),
        "previous_quarter": str(quarter.previous()),
        "report_date": report_date(quarter).isoformat(),
        "kpis": kpis,
        "charts": chart_list,
        "tier_rows": tier_rows,
        "migration_header": [t(f"tier.{x}") for x in ["A", "B", "C", "-"]],
        "migration_rows": migration_rows,
        "breakdowns": breakdowns,
        "top_moves": top_moves,
        "definitions": [
            {"name": t(f"metric.{m}"), "text": t(f"def.{m}")}
            for m in (*KPI_METRICS, "resolution_p90_hours")
        ],
        "thresholds": [
            {"section": "tiers", "rows": _settings_rows(settings.tiers, language)},
            {"section": "metrics", "rows": _settings_rows(settings.metrics, language)},
        ],
        "coverage": _coverage(quarantine, rows_used, language),
        "headline": [
            {"label": k["label"], "value": k["value"], "change": k["change"]} for k in kpis
        ],
    }


# ---------------------------------------------------------------- archive-review report

WORKLIST_COLUMNS = [
    "item_id",
    "category",
    "severity",
    "customer_id",
    "customer_name",
    "owner",
    "source_system",
    "source_record_id",
    "field",
    "code",
    "detail",
    "action",
    "deadline",
]
_HIDDEN_COLUMNS = {"quarter", "batch_id", "extracted_at", "created_at", "updated_at"}


def finding_category(code: str) -> str:
    """Which worklist section a validation finding code belongs to."""
    code = (code or "").lower()
    if "stale" in code:
        return "stale"
    if any(k in code for k in ("missing", "incomplete", "required", "empty", "null")):
        return "incomplete"
    if "duplicate" in code:
        return "duplicate"
    return "invalid"


def _finding_text(record: dict[str, Any], language: str, stale_after_days: int) -> str:
    """What is wrong, for archive staff: the catalog's sentence for the finding code, about
    the field in their words. A code the catalog does not know keeps the producer's
    ``field: code detail``."""
    messages, t = catalog(language), translator(language)
    code, field = str(record.get("code") or ""), str(record.get("field") or "")
    if f"finding.{code}" not in messages:
        detail = str(record.get("detail") or "")
        return " ".join(x for x in (f"{field}:" if field else "", code, detail) if x)
    return t(f"finding.{code}", field=messages.get(f"field.{field}", field), days=stale_after_days)


def _grade(value: Any, t: Any) -> str:
    """A credit grade A-D as it is; ``none`` (no credit standing) and missing in words."""
    text = _text(value)
    return t("grade.none") if text == "none" else text


def _severity_rank(value: str) -> int:
    return SEVERITY_ORDER.get(str(value).lower(), 9)


def _cell(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.3f}"
    return mask_contact(value)


def _capped(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows by their ``_order`` key (the key itself dropped)."""
    ordered = sorted(rows, key=lambda r: r["_order"])[:limit]
    return [{k: v for k, v in r.items() if k != "_order"} for r in ordered]


def _generic_table(
    df: pd.DataFrame | None,
    limit_columns: int = 7,
    max_rows: int | None = None,
    leave_out: tuple[str, ...] = (),
    language: str | None = None,
) -> dict[str, Any]:
    """Any evidence table as header + masked string cells (columns kept as the producer names
    them), at most ``max_rows`` rows; ``total`` says how many there are in all. With a
    ``language``, the rows shown have their match codes and evidence in it
    (:func:`_localised_matches`)."""
    if df is None or df.empty:
        return {"columns": [], "rows": [], "total": 0}
    columns = [c for c in df.columns if c not in _HIDDEN_COLUMNS and c not in leave_out]
    columns = columns[:limit_columns]
    frame = df[columns].sort_values(columns[: min(3, len(columns))], kind="stable")
    if max_rows is not None:
        frame = frame.head(max_rows)
    if language is not None:
        frame = _localised_matches(frame, language)
    rows = [[_cell(v) for v in record] for record in frame.itertuples(index=False)]
    return {"columns": columns, "rows": rows, "total": len(df)}


# The resolution stage's evidence grammar: ``name (exact), address (bigram jaccard >= 0.3)``
# (fields agreed) and ``name=exact; uscc=missing`` (every field's level).
_AGREED_RE = re.compile(r"(?<![\w/])([a-z_]+(?:/[a-z_]+)?) \(([a-z][a-z ]*(?: >= [\d.]+)?)\)")
_LEVEL_RE = re.compile(
    r"(?<![\w/])([a-z_]+(?:/[a-z_]+)?)=([a-z][a-z ]*(?: >= [\d.]+)?)(?=;|$|\s\|)"
)
_JACCARD_RE = re.compile(r"bigram jaccard >= ([\d.]+)")


def localise_match_text(text: Any, language: str) -> Any:
    """A resolution evidence string (fields agreed, levels per field, merge/split notes) in
    ``language``. Fields and levels the catalog does not name are kept as they are."""
    if not isinstance(text, str) or not text:
        return text
    messages, t = catalog(language), translator(language)

    def level(label: str) -> str | None:
        jaccard = _JACCARD_RE.fullmatch(label)
        if jaccard:
            return t("level.bigram jaccard", threshold=jaccard.group(1))
        return messages.get(f"level.{label}")

    def pair(form: str):
        def replace(m: re.Match[str]) -> str:
            field, label = messages.get(f"field.{m[1]}"), level(m[2])
            if field is None or label is None:
                return m[0]
            return t(form, field=field, level=label)

        return replace

    text = _AGREED_RE.sub(pair("match.field_level"), text)
    text = _LEVEL_RE.sub(pair("match.field_is"), text)
    for english, replacement in (
        (" agreed: ", f" {t('match.agreed')}: "),
        (" decided same", f" {t('decision.same')}"),
        (" decided different", f" {t('decision.different')}"),
        ("records moved to ", f"{t('match.moved_to')} "),
        ("; no longer matched: ", f"; {t('match.no_longer')}: "),
        ("no scored pair links them now", t("match.no_pair")),
    ):
        text = text.replace(english, replacement)
    return text


def _localised_matches(df: pd.DataFrame, language: str) -> pd.DataFrame:
    """Rows of the merge or review table with their codes and evidence in the report
    language (the attached CSV files keep the warehouse's codes: ``id_l,id_r`` rows feed
    decisions back)."""
    out = df.copy()
    if "event_type" in out.columns:
        t = translator(language)
        out["event_type"] = [
            t(f"event.{v}") if isinstance(v, str) else v for v in out["event_type"]
        ]
    for column in ("fields_agreed", "evidence"):
        if column in out.columns:
            out[column] = [localise_match_text(v, language) for v in out[column]]
    return out


def _evidence_frame(df: pd.DataFrame | None) -> pd.DataFrame:
    """An evidence table for an attachment: hidden columns dropped, contacts masked."""
    if df is None or df.empty:
        return pd.DataFrame()
    frame = df[[c for c in df.columns if c not in _HIDDEN_COLUMNS]].copy()
    for column in frame.columns:
        if frame[column].dtype.kind not in "iufb":
            frame[column] = [_cell(v) for v in frame[column]]
    return frame


def build_archive_context(
    findings: pd.DataFrame | None,
    previous_findings: pd.DataFrame | None,
    customers: pd.DataFrame | None,
    customer_quarter: pd.DataFrame | None,
    match_review: pd.DataFrame | None,
    resolution_events: pd.DataFrame | None,
    settings: Settings,
    quarter: Quarter,
    xref: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Context of the archive-review report (档案完善建议报告) for ``quarter``.

    ``xref`` (core_customer_xref) maps a finding's source record to its golden customer_id.

    ``findings`` is dq_findings for the quarter (one row per finding on a source record);
    ``customer_quarter`` is mart_customer_quarter for this and the previous quarter (one row
    per customer x quarter). The worklist has one row per action item; personal contact
    data in free text is masked.
    """
    language = normalise_language(settings.reports.language)
    t = translator(language)
    day = report_date(quarter)
    deadline = (day + timedelta(days=settings.reports.finding_deadline_days)).isoformat()
    names: dict[str, str] = {}
    managers: dict[str, str] = {}
    if customers is not None and not customers.empty and "customer_id" in customers.columns:
        names = dict(
            zip(
                customers["customer_id"].astype(str),
                customers.get("name", pd.Series(dtype=str)).fillna("").astype(str),
                strict=False,
            )
        )
        if "account_manager" in customers.columns:
            managers = dict(
                zip(
                    customers["customer_id"].astype(str),
                    customers["account_manager"].fillna("").astype(str),
                    strict=True,
                )
            )
    unassigned = t("owner.unassigned")

    def _owner(value: Any, customer_id: str) -> str:
        if _is_missing(value) or not str(value).strip():
            return managers.get(customer_id, "")
        return str(value)

    archive_owner = t("owner.archive_staff")
    items: list[dict[str, str]] = []

    def add(category: str, severity: str, customer_id: str, owner: str, **extra: str) -> None:
        items.append(
            {
                "category": category,
                "severity": severity,
                "customer_id": customer_id,
                "customer_name": names.get(customer_id, ""),
                "owner": owner or unassigned,
                "source_system": extra.get("source_system", ""),
                "source_record_id": extra.get("source_record_id", ""),
                "field": extra.get("field", ""),
                "code": extra.get("code", ""),
                "detail": mask_contact(extra.get("detail", "")),
                "action": t(f"action.{category}"),
                "deadline": deadline,
            }
        )

    def findings_frame(df: pd.DataFrame | None) -> pd.DataFrame:
        if df is None or df.empty:
            return pd.DataFrame(columns=["code", "severity", "category"])
        code_col = _column(df, "code", "finding_code", "finding") or "code"
        out = df.assign(
            code=df[code_col].fillna("").astype(str) if code_col in df.columns else "",
            severity=df["severity"].fillna("info").astype(str).str.lower()
            if "severity" in df.columns
            else "info",
        )
        return out.assign(category=out["code"].map(finding_category))

    current = findings_frame(findings)
    golden: dict[tuple[str, str], str] = {}
    if xref is not None and not xref.empty:
        golden = dict(
            zip(
                zip(
                    xref["source_system"].astype(str),
                    xref["source_record_id"].astype(str),
                    strict=True,
                ),
                xref["customer_id"].astype(str),
                strict=True,
            )
        )
    previous = findings_frame(previous_findings)
    id_col = _column(current, "customer_id", "customer_record_id")
    for record in current.sort_values(
        ["severity", "code", *([id_col] if id_col else [])],
        key=lambda s: s.map(_severity_rank) if s.name == "severity" else s.astype(str),
    ).to_dict("records"):
        customer_id = "" if not id_col or _is_missing(record.get(id_col)) else str(record[id_col])
        customer_id = golden.get((str(record.get("source_system")), customer_id), customer_id)
        owner = record.get("account_manager")
        owner = managers.get(customer_id, "") if _is_missing(owner) or not owner else str(owner)
        add(
            record["category"],
            record["severity"],
            customer_id,
            owner,
            source_system=str(record.get("source_system") or ""),
            source_record_id=str(record.get("source_record_id") or ""),
            field=str(record.get("field") or ""),
            code=record["code"],
            detail=_finding_text(record, language, settings.validation.stale_after_days),
        )

    both_ends_rows, tier_change_rows = [], []
    if customer_quarter is not None and not customer_quarter.empty:
        cq = customer_quarter.assign(
            quarter=customer_quarter["quarter"].astype(str),
            customer_id=customer_quarter["customer_id"].astype(str),
        )
        now = cq[cq["quarter"] == str(quarter)].sort_values("customer_id")
        before = cq[cq["quarter"] == str(quarter.previous())]
        flag_cols = [c for c in now.columns if c.startswith("is_")]
        for r in now.to_dict("records"):
            big = bool(r.get("is_big_customer")) and not _is_missing(r.get("is_big_customer"))
            risk = bool(r.get("is_risk_customer")) and not _is_missing(r.get("is_risk_customer"))
            if not (big or risk):
                continue
            flags = [
                t(f"flag.{c}")
                for c in flag_cols
                if c not in ("is_big_customer", "is_risk_customer")
                and not _is_missing(r.get(c))
                and bool(r.get(c))
            ]
            owner = _owner(r.get("account_manager"), r["customer_id"])
            kind = " / ".join(
                x for x, on in ((t("both_ends.big"), big), (t("both_ends.risk"), risk)) if on
            )
            both_ends_rows.append(
                {
                    "_order": (not big, _text(r.get("value_tier")), r["customer_id"]),
                    "customer_id": r["customer_id"],
                    "name": names.get(r["customer_id"], ""),
                    "kind": kind,
                    "value_tier": _text(r.get("value_tier")),
                    "credit_grade": _grade(r.get("credit_grade"), t),
                    "lifecycle": t(f"lifecycle.{_text(r.get('lifecycle_stage'))}"),
                    "flags": ", ".join(flags),
                    "owner": owner or unassigned,
                }
            )
            add(
                "both_ends",
                "warning" if risk else "info",
                r["customer_id"],
                owner,
                detail=f"{kind}; {', '.join(flags)}",
            )
        if not before.empty:
            keep = ["customer_id", "value_tier", "credit_grade"]
            keep = [c for c in keep if c in now.columns and c in before.columns]
            merged = before[keep].merge(
                now[[*keep, *(["account_manager"] if "account_manager" in now.columns else [])]],
                on="customer_id",
                suffixes=("_before", "_now"),
            )
            for r in merged.sort_values("customer_id").to_dict("records"):
                changes = []
                for col in ("value_tier", "credit_grade"):
                    if col not in keep:
                        continue
                    a = "–" if _is_missing(r[f"{col}_before"]) else _grade(r[f"{col}_before"], t)
                    b = "–" if _is_missing(r[f"{col}_now"]) else _grade(r[f"{col}_now"], t)
                    if a != b:
                        changes.append((col, a, b))
                if not changes:
                    continue
                owner = _owner(r.get("account_manager"), r["customer_id"])
                text = "; ".join(f"{t('column.' + c)}: {a} → {b}" for c, a, b in changes)
                tier_change_rows.append(
                    {
                        # value-tier moves first: they change how the customer is served
                        "_order": (changes[0][0] != "value_tier", r["customer_id"]),
                        "customer_id": r["customer_id"],
                        "name": names.get(r["customer_id"], ""),
                        "change": text,
                        "owner": owner or unassigned,
                    }
                )
                add("tier_change", "info", r["customer_id"], owner, detail=text)

    review = _generic_table(
        match_review, max_rows=settings.reports.pdf_section_max_rows, language=language
    )
    if match_review is not None and not match_review.empty:
        add_rows = match_review.shape[0]
        for i in range(add_rows):
            row = match_review.iloc[i]
            ids = [
                str(row[c])
                for c in match_review.columns
                if c.endswith("_id") and c not in _HIDDEN_COLUMNS and not _is_missing(row[c])
            ][:2]
            add("review_pair", "warning", "", archive_owner, detail=" ↔ ".join(ids))
    # the long evidence text is in the attached CSV; the PDF keeps what agreed and how strongly
    merges = _generic_table(
        resolution_events,
        max_rows=settings.reports.pdf_section_max_rows,
        leave_out=("evidence",),
        language=language,
    )

    for i, item in enumerate(items, start=1):
        item["item_id"] = f"{quarter}-{i:05d}"
    worklist = pd.DataFrame(items, columns=WORKLIST_COLUMNS)

    categories = [
        "incomplete",
        "invalid",
        "stale",
        "duplicate",
        "review_pair",
        "both_ends",
        "tier_change",
    ]
    prev_counts = (
        previous["category"].value_counts() if not previous.empty else pd.Series(dtype=int)
    )
    now_counts = worklist["category"].value_counts()
    summary = []
    for category in categories:
        n_now = int(now_counts.get(category, 0))
        finding_based = category in ("incomplete", "invalid", "stale", "duplicate")
        n_before = (
            int(prev_counts.get(category, 0))
            if finding_based and previous_findings is not None
            else None
        )
        summary.append(
            {
                "category": t(f"category.{category}"),
                "count": _int(n_now),
                "previous": _int(n_before),
                "change": "–" if n_before is None else f"{n_now - n_before:+,d}",
                "change_class": "flat"
                if n_before is None or n_now == n_before
                else ("bad" if n_now > n_before else "good"),
            }
        )
    severity_summary = []
    for severity, group in sorted(worklist.groupby("severity"), key=lambda x: _severity_rank(x[0])):
        severity_summary.append({"severity": t(f"severity.{severity}"), "count": _int(len(group))})
    manager_summary = []
    for owner, group in sorted(worklist.groupby("owner"), key=lambda x: (-len(x[1]), x[0])):
        counts = group["severity"].value_counts()
        manager_summary.append(
            {
                "owner": owner,
                "total": _int(len(group)),
                "by_severity": ", ".join(
                    f"{t('severity.' + s)} {counts[s]}"
                    for s in sorted(counts.index, key=_severity_rank)
                ),
            }
        )
    # The PDF lists the most severe items first, up to the cap; the attachment has them all.
    ranked = worklist.assign(_rank=worklist["severity"].map(_severity_rank)).sort_values(
        ["_rank", "category", "customer_id", "item_id"], kind="stable"
    )
    shown = ranked.head(settings.reports.pdf_worklist_max_items)
    by_manager = []
    for owner, group in sorted(shown.groupby("owner"), key=lambda x: (-len(x[1]), x[0])):
        by_manager.append(
            {
                "owner": owner,
                "shown": _int(len(group)),
                "total": _int(int((worklist["owner"] == owner).sum())),
                "items": [
                    {
                        **r,
                        "severity_label": t(f"severity.{r['severity']}"),
                        "category_label": t(f"category.{r['category']}"),
                    }
                    for r in group.drop(columns="_rank").to_dict("records")
                ],
            }
        )

    return {
        "language": language,
        "report_key": "archive",
        "title": t("archive.title"),
        "company": settings.reports.company_name,
        "quarter": str(quarter),
        "previous_quarter": str(quarter.previous()),
        "report_date": day.isoformat(),
        "deadline": deadline,
        "deadline_days": str(settings.reports.finding_deadline_days),
        "total_items": _int(len(worklist)),
        "shown_items": _int(len(shown)),
        "worklist_truncated": len(shown) < len(worklist),
        "summary": summary,
        "severity_summary": severity_summary,
        "manager_summary": manager_summary,
        "by_manager": by_manager,
        "merges": merges,
        "review": review,
        # every row of the capped evidence tables, masked like the PDF, for the attachments
        "evidence": {
            "merges": _evidence_frame(resolution_events),
            "review": _evidence_frame(match_review),
        },
        "both_ends": _capped(both_ends_rows, settings.reports.pdf_section_max_rows),
        "both_ends_total": _int(len(both_ends_rows)),
        "tier_changes": _capped(tier_change_rows, settings.reports.pdf_section_max_rows),
        "tier_changes_total": _int(len(tier_change_rows)),
        "worklist": worklist,
        "headline": [
            {"label": t("archive.total_items"), "value": _int(len(worklist)), "change": ""},
            *[
                {"label": s["category"], "value": s["count"], "change": s["change"]}
                for s in summary
            ],
        ],
    }
