"""The validation run's HTML summary ("data docs"), without personal data.

We render our own page rather than GX Data Docs: GX's pages show samples of unexpected
values, which for these datasets can be names, phones or emails. This page shows only
counts, rule ids, defect codes and record keys (source_record_id), so nothing personal
is on it by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Validation {{ batch_id }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.fail{color:#b00020}.ok{color:#2e7d32}</style>
</head><body>
<h1>Validation run {{ batch_id }} (quarter {{ quarter }})</h1>
{% if errors %}<h2 class="fail">Run stopped</h2><ul>{% for e in errors %}<li class="fail">{{ e }}</li>{% endfor %}</ul>{% endif %}
<h2>Datasets</h2>
<table><tr><th>dataset</th><th>rows in</th><th>valid</th><th>quarantined</th><th>share</th><th>seconds</th></tr>
{% for d in datasets %}<tr><td><a href="#{{ d.name }}">{{ d.name }}</a></td><td>{{ d.rows_in }}</td><td>{{ d.valid }}</td>
<td>{{ d.quarantined }}</td><td>{{ d.share }}</td><td>{{ d.seconds }}</td></tr>{% endfor %}
</table>
{% for d in datasets %}<h2 id="{{ d.name }}">{{ d.name }}</h2>
<table><tr><th>rule</th><th>expectation</th><th>defect code</th><th>reason</th><th>rows failing</th><th>result</th><th>example keys</th></tr>
{% for e in d.expectations %}<tr><td>{{ e.rule_id }}</td><td>{{ e.expectation }}</td><td>{{ e.code }}</td><td>{{ e.reason }}</td>
<td>{{ e.unexpected_count }}</td><td class="{{ 'ok' if e.success else 'fail' }}">{{ 'passed' if e.success else 'failed' }}</td>
<td>{{ e.examples }}</td></tr>{% endfor %}</table>{% endfor %}
<h2>Customer-file findings</h2>
<table><tr><th>finding</th><th>severity</th><th>records</th></tr>
{% for f in findings %}<tr><td>{{ f.finding }}</td><td>{{ f.severity }}</td><td>{{ f.count }}</td></tr>{% endfor %}
</table>
<p>Personal data (names, phones, emails) is not shown: rows are identified by source_record_id only.</p>
</body></html>
"""


def build_context(
    batch_id: str,
    quarter: str,
    outcomes: Mapping[str, Any],
    findings: pd.DataFrame,
    errors: list[Exception],
) -> dict[str, Any]:
    """Formatted values for the page (no arithmetic in the template, no personal values)."""
    datasets = []
    for name, outcome in outcomes.items():
        datasets.append(
            {
                "name": name,
                "rows_in": outcome.rows_in,
                "valid": outcome.rows_valid,
                "quarantined": outcome.rows_quarantined,
                "share": f"{outcome.quarantined_share:.2%}",
                "seconds": f"{outcome.seconds:.1f}",
                # examples: up to five quarantined keys per rule, gathered while validating
                "expectations": outcome.expectations,
            }
        )
    finding_rows = []
    if len(findings):
        counts = findings.groupby(["finding", "severity"]).size().reset_index(name="count")
        finding_rows = counts.sort_values(["severity", "finding"]).to_dict("records")
    return {
        "batch_id": batch_id,
        "quarter": quarter,
        "datasets": datasets,
        "findings": finding_rows,
        "errors": [str(e) for e in errors],
    }


def render_html(context: dict[str, Any]) -> str:
    return jinja2.Environment(autoescape=True).from_string(_TEMPLATE).render(**context)


def write_docs(
    folder: Path,
    batch_id: str,
    quarter: str,
    outcomes: Mapping[str, Any],
    findings: pd.DataFrame,
    errors: list[Exception],
) -> Path:
    """Write ``folder/index.html`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    path.write_text(
        render_html(build_context(batch_id, quarter, outcomes, findings, errors)), encoding="utf-8"
    )
    return path
