"""Customer resolution stage: one golden customer per real company, with stable ids.

Reads ``stg_sales_customers``, ``stg_service_accounts``, ``stg_finance_accounts`` and the
previous run's ``core_customer_xref``; writes ``core_customers`` (one row per customer),
``core_customer_xref`` (one row per source customer record), ``core_match_review`` (one row
per uncertain undecided pair) and appends ``core_resolution_events`` (one row per merge or
split). Archive decisions come from ``core_review_decisions`` and/or the CSV file
``settings.resolution.decisions_file`` (``id_l,id_r,decision`` with ids ``system:record_id``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.settings import ResolutionSettings
from pipeline.stages import StageContext, StageResult
from pipeline.transform.resolve import apply_decisions, cluster, pair_evidence, score_pairs
from pipeline.transform.standardize import standardize_customers
from pipeline.warehouse import read_table, replace_partition, replace_table, table_exists

log = logging.getLogger(__name__)

SOURCE_TABLES = {
    "sales": "stg_sales_customers",
    "service": "stg_service_accounts",
    "finance": "stg_finance_accounts",
}
GOLDEN_FIELDS = (
    "name",
    "uscc",
    "industry",
    "province",
    "city",
    "address",
    "phone",
    "email",
    "account_manager",
    "account_manager_email",
    "legal_representative",
    "scale",
    "employee_count",
    "annual_revenue_cny",
    "created_at",
    "updated_at",
)
RECORD_COLUMNS = (
    "source_system",
    "source_record_id",
    "customer_name",
    "uscc",
    "legal_representative",
    "industry",
    "province",
    "city",
    "address",
    "scale",
    "employee_count",
    "annual_revenue_cny",
    "phone",
    "email",
    "account_manager",
    "account_manager_email",
    "created_at",
    "updated_at",
)
ID_PATTERN = re.compile(r"^CUST-(\d+)$")


def combine_sources(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Stack the staged customer tables; one row per source customer record with ``unique_id``."""
    parts = []
    for system, frame in frames.items():
        part = frame.copy()
        part["source_system"] = system
        for column in RECORD_COLUMNS:
            if column not in part.columns:
                part[column] = None
        part = part[list(RECORD_COLUMNS)]
        parts.append(part.astype({"source_record_id": str}))
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)
    records["unique_id"] = records["source_system"] + ":" + records["source_record_id"]
    records = records.drop_duplicates("unique_id", keep="last").reset_index(drop=True)
    return records


@dataclass(frozen=True)
class Resolution:
    """Everything one resolution run produces."""

    customers: pd.DataFrame
    xref: pd.DataFrame
    review: pd.DataFrame
    events: pd.DataFrame
    pairs: pd.DataFrame


def resolve_customers(
    records: pd.DataFrame,
    settings: ResolutionSettings,
    previous_xref: pd.DataFrame | None,
    decisions: pd.DataFrame | None,
    quarter: str,
    phone_region: str = "CN",
) -> Resolution:
    """Standardize, score, cluster and survive; ids stay stable against ``previous_xref``."""
    standardized = standardize_customers(records, phone_region)
    log.info("standardized %s records", len(standardized))
    scored = score_pairs(
        standardized, threshold=min(settings.review_lower, settings.match_threshold)
    )
    log.info("scored %s candidate pairs", len(scored.pairs))
    pairs = apply_decisions(scored.pairs, decisions)
    pairs["evidence"] = pair_evidence(pairs, scored.level_labels)
    clusters = cluster(standardized["unique_id"], pairs, settings.match_threshold)
    log.info("clustered into %s clusters", clusters["cluster_id"].nunique())
    ids, events = assign_customer_ids(clusters, previous_xref, pairs, quarter)
    log.info("assigned ids: %s events", len(events))
    standardized = standardized.merge(ids, on="unique_id", how="left")
    probability = _membership_probability(standardized, pairs)
    xref = standardized[["source_system", "source_record_id", "customer_id", "unique_id"]].merge(
        probability, on="unique_id", how="left"
    )
    xref = xref.drop(columns="unique_id").sort_values(
        ["customer_id", "source_system", "source_record_id"]
    )
    customers = golden_records(standardized, settings.source_priority)
    review = review_queue(pairs, ids, settings)
    return Resolution(customers, xref.reset_index(drop=True), review, events, pairs)


def _membership_probability(records: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per record: the strongest match probability to another member of its cluster (1 alone)."""
    cid = records.set_index("unique_id")["customer_id"]
    inside = pairs.assign(cl=pairs["id_l"].map(cid), cr=pairs["id_r"].map(cid))
    inside = inside[inside["cl"] == inside["cr"]]
    best = pd.concat(
        [
            inside[["id_l", "match_probability"]].rename(columns={"id_l": "unique_id"}),
            inside[["id_r", "match_probability"]].rename(columns={"id_r": "unique_id"}),
        ]
    )
    best = best.groupby("unique_id")["match_probability"].max()
    out = pd.DataFrame({"unique_id": records["unique_id"]})
    out["match_probability"] = out["unique_id"].map(best).fillna(1.0).astype(float)
    return out


def assign_customer_ids(
    clusters: pd.DataFrame,
    previous_xref: pd.DataFrame | None,
    pairs: pd.DataFrame,
    quarter: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give each cluster a stable ``CUST-NNNNNN`` id; record merges and splits.

    A cluster keeps the id its records had before. A cluster holding records of several old
    customers is a merge: the oldest id survives. An old customer whose records now sit in
    several clusters is split: the cluster holding most of its records keeps the id.
    Returns ``(unique_id, customer_id)`` and the events.
    """
    frame = clusters.copy()
    if previous_xref is not None and not previous_xref.empty:
        old = previous_xref.assign(
            unique_id=previous_xref["source_system"]
            + ":"
            + previous_xref["source_record_id"].astype(str)
        ).set_index("unique_id")["customer_id"]
        frame["old_id"] = frame["unique_id"].map(old)
    else:
        old = pd.Series(dtype=object)
        frame["old_id"] = None
    next_number = 1 + max(
        (int(m.group(1)) for m in map(ID_PATTERN.match, old.dropna().unique()) if m), default=0
    )
    events: list[dict] = []
    # Which cluster keeps each old id: the one with most of its records, ties to the smallest.
    counts = (
        frame.dropna(subset=["old_id"])
        .groupby(["old_id", "cluster_id"])
        .size()
        .rename("n")
        .reset_index()
    )
    counts = counts.sort_values(["old_id", "n", "cluster_id"], ascending=[True, False, True])
    owner = counts.drop_duplicates("old_id").set_index("old_id")["cluster_id"]
    members = frame.groupby("cluster_id")["unique_id"]
    # Each cluster keeps the smallest old id it owns; owning several is a merge.
    kept = owner.reset_index().sort_values("old_id").groupby("cluster_id")["old_id"].agg(list)
    assigned: dict[str, str] = {cluster_id: ids[0] for cluster_id, ids in kept.items()}
    for cluster_id, ids in kept[kept.str.len() > 1].items():
        records = members.get_group(cluster_id)
        events.append(_event("merge", quarter, ids[0], ids[1:], records, pairs, cluster_id))
    unowned = sorted(set(frame["cluster_id"]) - set(assigned))
    # A new cluster whose records had ids before was split off those customers.
    had_ids = (
        frame.dropna(subset=["old_id"])
        .groupby("cluster_id")["old_id"]
        .agg(lambda ids: sorted(set(ids)))
    )
    for cluster_id in unowned:
        new_id = f"CUST-{next_number:06d}"
        next_number += 1
        assigned[cluster_id] = new_id
        if cluster_id in had_ids.index:
            records = members.get_group(cluster_id)
            split_from = had_ids[cluster_id]
            events.append(_event("split", quarter, new_id, split_from, records, pairs, cluster_id))
    frame["customer_id"] = frame["cluster_id"].map(assigned)
    columns = [
        "event_type",
        "quarter",
        "customer_id",
        "other_customer_ids",
        "source_records",
        "evidence",
    ]
    return frame[["unique_id", "customer_id"]], pd.DataFrame(events, columns=columns)


def _event(
    kind: str,
    quarter: str,
    customer_id: str,
    others: list[str],
    members: pd.Series,
    pairs: pd.DataFrame,
    cluster_id: str,
) -> dict:
    member_set = set(members)
    inside = pairs[pairs["id_l"].isin(member_set) & pairs["id_r"].isin(member_set)]
    inside = inside.sort_values("match_probability", ascending=False).head(5)
    evidence = " | ".join(
        f"{r.id_l}~{r.id_r} p={r.match_probability:.3f} {r.evidence}"
        for r in inside.itertuples(index=False)
    )
    if kind == "split":
        evidence = f"no longer matched with the other records of {', '.join(others)}. " + evidence
    log.info("%s: %s <- %s", kind, customer_id, others)
    return {
        "event_type": kind,
        "quarter": quarter,
        "customer_id": customer_id,
        "other_customer_ids": ",".join(others),
        "source_records": ",".join(sorted(member_set)),
        "evidence": evidence,
    }


def _clean_name(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", str(value))).strip()
    return text.replace("(", "(").replace(")", ")") or None


def golden_records(records: pd.DataFrame, source_priority: list[str]) -> pd.DataFrame:
    """One row per customer: field-by-field survivorship with ``<field>_source`` lineage.

    For each field the candidates are the members' valid values; the winner is from the
    highest-priority system, then the most recently updated record, then the most complete
    record. ``created_at`` takes the earliest value and ``updated_at`` the latest.
    """
    rank = {system: i for i, system in enumerate(source_priority)}
    values = pd.DataFrame(
        {
            "customer_id": records["customer_id"],
            "lineage": records["unique_id"],
            "priority": records["source_system"].map(rank).fillna(len(rank)),
            "recency": pd.to_datetime(records["updated_at"], errors="coerce"),
            "completeness": records[list(RECORD_COLUMNS)].notna().sum(axis=1),
            "name": [_clean_name(v) for v in records["customer_name"]],
            "uscc": records["uscc_valid"],
            "industry": records["industry"],
            "province": records["province_std"],
            "city": records["city_std"],
            "address": [_clean_name(v) for v in records["address"]],
            "phone": records["phone_e164"],
            "email": records["email_std"],
            "account_manager": records["account_manager"],
            "account_manager_email": [
                e.lower().strip() if isinstance(e, str) and "@" in e else None
                for e in records["account_manager_email"]
            ],
            "legal_representative": records["legal_representative"],
            "scale": records["scale"],
            "employee_count": records["employee_count"],
            "annual_revenue_cny": records["annual_revenue_cny"],
            "created_at": pd.to_datetime(records["created_at"], errors="coerce"),
            "updated_at": pd.to_datetime(records["updated_at"], errors="coerce"),
        }
    )
    ordered = values.sort_values(
        ["customer_id", "priority", "recency", "completeness", "lineage"],
        ascending=[True, True, False, False, True],
        na_position="last",
    )
    customers = pd.DataFrame({"customer_id": sorted(values["customer_id"].unique())})
    for field in GOLDEN_FIELDS:
        candidates = ordered[["customer_id", "lineage", field]].dropna(subset=[field])
        candidates = candidates[candidates[field].astype(str).str.strip() != ""]
        if field == "created_at":
            candidates = candidates.sort_values(["customer_id", field, "lineage"])
        elif field == "updated_at":
            candidates = candidates.sort_values(
                ["customer_id", field, "lineage"], ascending=[True, False, True]
            )
        winner = candidates.drop_duplicates("customer_id").set_index("customer_id")
        customers[field] = customers["customer_id"].map(winner[field])
        customers[f"{field}_source"] = customers["customer_id"].map(winner["lineage"])
    customers["employee_count"] = customers["employee_count"].astype("Int64")
    customers["annual_revenue_cny"] = customers["annual_revenue_cny"].astype("float64")
    return customers


def review_queue(
    pairs: pd.DataFrame, ids: pd.DataFrame, settings: ResolutionSettings
) -> pd.DataFrame:
    """Undecided pairs with ``review_lower <= p < review_upper``, with evidence; one row per pair."""
    band = pairs[
        (pairs["match_probability"] >= settings.review_lower)
        & (pairs["match_probability"] < settings.review_upper)
        & pairs["decision"].isna()
    ]
    cid = ids.set_index("unique_id")["customer_id"]
    review = band.assign(customer_id_l=band["id_l"].map(cid), customer_id_r=band["id_r"].map(cid))
    gammas = [c for c in review.columns if c.startswith("gamma_")]
    review = review[
        [
            "id_l",
            "id_r",
            "customer_id_l",
            "customer_id_r",
            "match_probability",
            "match_weight",
            "evidence",
            *gammas,
        ]
    ]
    return review.sort_values(
        ["match_probability", "id_l", "id_r"], ascending=[False, True, True]
    ).reset_index(drop=True)


def load_decisions(engine: object, decisions_file: Path | None) -> pd.DataFrame:
    """Archive staff decisions from ``core_review_decisions`` and the CSV file (file wins)."""
    parts = []
    if engine is not None and table_exists(engine, "core_review_decisions"):
        parts.append(read_table(engine, "core_review_decisions", ["id_l", "id_r", "decision"]))
    if decisions_file is not None:
        path = Path(decisions_file)
        if not path.is_file():
            raise FileNotFoundError(f"resolution.decisions_file {path} does not exist")
        parts.append(pd.read_csv(path, dtype=str)[["id_l", "id_r", "decision"]])
    if not parts:
        return pd.DataFrame(columns=["id_l", "id_r", "decision"])
    return pd.concat(parts, ignore_index=True)


def run(ctx: StageContext) -> StageResult:
    """Resolve the staged customer records into golden customers and write the core tables."""
    frames = {}
    for system, table in SOURCE_TABLES.items():
        if table_exists(ctx.engine, table):
            frames[system] = read_table(ctx.engine, table)
        else:
            log.warning("%s is missing: resolving without %s records", table, system)
    if not frames:
        raise LookupError("no staged customer tables: run extract and validation first")
    records = combine_sources(frames)
    previous = (
        read_table(
            ctx.engine, "core_customer_xref", ["source_system", "source_record_id", "customer_id"]
        )
        if table_exists(ctx.engine, "core_customer_xref")
        else None
    )
    decisions = load_decisions(ctx.engine, ctx.settings.resolution.decisions_file)
    quarter = str(ctx.quarter)
    result = resolve_customers(
        records,
        ctx.settings.resolution,
        previous,
        decisions,
        quarter,
        ctx.settings.validation.phone_region,
    )
    replace_table(ctx.engine, "core_customers", result.customers)
    replace_table(ctx.engine, "core_customer_xref", result.xref)
    replace_table(ctx.engine, "core_match_review", result.review)
    if not result.events.empty:
        # Keyed by batch so a rerun of the batch replaces its own events and keeps history.
        replace_partition(
            ctx.engine, "core_resolution_events", result.events, batch_id=ctx.batch_id
        )
    return StageResult(
        stage="resolution",
        rows_in=len(records),
        rows_out=len(result.customers),
        detail={
            "customers": len(result.customers),
            "review_pairs": len(result.review),
            "merges": int((result.events["event_type"] == "merge").sum()),
            "splits": int((result.events["event_type"] == "split").sum()),
        },
    )
