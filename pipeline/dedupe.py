"""Deduplicate any CSV export: ``crm-pipeline dedupe INPUT.csv --id-column COL --fields F.yaml``.

``FIELDS.yaml`` maps column names to roles::

    company: company_name
    contact: person_name
    street: address
    tel: phone
    mail: email
    tax_no: identifier
    founded: date
    notes: free_text

Writes ``DIR/pairs.csv`` (one row per scored pair with probability at or above the review
band: ``id_l,id_r,match_probability``) and ``DIR/clusters.csv`` (one row per input record:
``id,cluster_id``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import yaml

from pipeline.settings import ResolutionSettings
from pipeline.transform.resolve import MatchField, cluster, score_pairs
from pipeline.transform.standardize import (
    normalize_text,
    split_address,
    split_company_name,
    standardize_email,
    standardize_phone,
    strip_punctuation,
)

log = logging.getLogger(__name__)

ROLES = (
    "company_name",
    "person_name",
    "address",
    "phone",
    "email",
    "identifier",
    "date",
    "free_text",
)


def read_fields(fields_yaml: Path) -> dict[str, str]:
    """The column -> role map of a FIELDS.yaml file; unknown roles are an error."""
    mapping = yaml.safe_load(Path(fields_yaml).read_text(encoding="utf-8")) or {}
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{fields_yaml} must map column names to roles")
    bad = {column: role for column, role in mapping.items() if role not in ROLES}
    if bad:
        raise ValueError(f"unknown roles {bad} in {fields_yaml}; roles are {', '.join(ROLES)}")
    return {str(column): str(role) for column, role in mapping.items()}


def _standardize_identifier(value: object) -> str | None:
    text = strip_punctuation(normalize_text(value))
    return text.upper() if text else None


def _standardize_date(value: object) -> str | None:
    text = normalize_text(value)
    if text is None:
        return None
    parsed = pd.to_datetime(text, errors="coerce")
    return None if pd.isna(parsed) else parsed.strftime("%Y-%m-%d")


def _standardize_free_text(value: object) -> str | None:
    return strip_punctuation(normalize_text(value))


def standardize_roles(
    df: pd.DataFrame, id_column: str, fields: dict[str, str], phone_region: str = "CN"
) -> tuple[pd.DataFrame, tuple[MatchField, ...]]:
    """Standardized match columns per role and the fields to compare; one row per record."""
    missing = [c for c in [id_column, *fields] if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the input (has {list(df.columns)})")
    out = pd.DataFrame({"unique_id": df[id_column].astype(str)})
    match_fields = []
    for index, (column, role) in enumerate(fields.items()):
        key = f"f{index}_{role}"
        values = df[column]
        if role == "company_name":
            out[key] = [split_company_name(v).core for v in values]
            match_fields.append(
                MatchField(column, key, "text", (0.7, 0.5, 0.3), block=True, block_prefix=True)
            )
        elif role == "person_name":
            out[key] = [strip_punctuation(normalize_text(v)) for v in values]
            match_fields.append(MatchField(column, key, "text", (0.7, 0.4), block=True))
        elif role == "address":
            out[key] = [
                "".join(p for p in (a.province, a.city, a.rest) if p)
                for a in map(split_address, values)
            ]
            match_fields.append(MatchField(column, key, "text", (0.6, 0.3), block=True))
        elif role == "phone":
            phones = [standardize_phone(v, phone_region) for v in values]
            out[key] = [p.split(";")[0] if isinstance(p, str) else None for p in phones]
            match_fields.append(MatchField(column, key, block=True))
        elif role == "email":
            out[key] = [standardize_email(v) for v in values]
            match_fields.append(MatchField(column, key, "email", block=True))
        elif role == "identifier":
            out[key] = [_standardize_identifier(v) for v in values]
            match_fields.append(MatchField(column, key, block=True))
        elif role == "date":
            out[key] = [_standardize_date(v) for v in values]
            match_fields.append(MatchField(column, key, "date"))
        else:
            out[key] = [_standardize_free_text(v) for v in values]
            match_fields.append(MatchField(column, key, "text", (0.6, 0.3)))
        out[key] = out[key].astype(object).where(out[key].notna(), None)
        out[key] = [v if isinstance(v, str) and v else None for v in out[key]]
    return out, tuple(match_fields)


def dedupe_frame(
    df: pd.DataFrame,
    id_column: str,
    fields: dict[str, str],
    settings: ResolutionSettings | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resolve one table: ``(pairs, clusters)`` as written by :func:`dedupe`."""
    settings = settings or ResolutionSettings()
    if df[id_column].isna().any() or df[id_column].astype(str).duplicated().any():
        raise ValueError(f"id column {id_column!r} must be present and unique on every row")
    records, match_fields = standardize_roles(df, id_column, fields)
    lower = min(settings.review_lower, settings.match_threshold)
    scored = score_pairs(records, threshold=lower, fields=match_fields)
    pairs = scored.pairs[scored.pairs["match_probability"] >= lower]
    pairs = pairs[["id_l", "id_r", "match_probability"]].reset_index(drop=True)
    clusters = cluster(records["unique_id"], pairs, settings.match_threshold)
    clusters = clusters.rename(columns={"unique_id": "id"})
    return pairs, clusters


def dedupe(
    input_csv: Path,
    id_column: str,
    fields_yaml: Path,
    out_dir: Path,
    settings: ResolutionSettings | None = None,
) -> tuple[Path, Path]:
    """Deduplicate ``input_csv`` and write ``pairs.csv`` and ``clusters.csv`` into ``out_dir``."""
    fields = read_fields(fields_yaml)
    df = pd.read_csv(input_csv, dtype=str, keep_default_na=False, na_values=[""])
    pairs, clusters = dedupe_frame(df, id_column, fields, settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_path, clusters_path = out_dir / "pairs.csv", out_dir / "clusters.csv"
    pairs.to_csv(pairs_path, index=False)
    clusters.to_csv(clusters_path, index=False)
    log.info(
        "dedupe %s: %s records, %s pairs, %s clusters",
        input_csv,
        len(df),
        len(pairs),
        clusters["cluster_id"].nunique(),
    )
    return pairs_path, clusters_path
