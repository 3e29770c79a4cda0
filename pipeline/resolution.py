"""Customer resolution stage: one golden customer per real company, with stable ids.

Reads ``stg_sales_customers``, ``stg_service_accounts``, ``stg_finance_accounts`` and the
previous run's ``core_customer_xref``; writes ``core_customers`` (one row per customer),
``core_customer_xref`` (one row per source customer record), ``core_match_review`` (one row
per uncertain undecided pair) and appends ``core_resolution_events`` (one row per merge or
split). Archive decisions come from ``core_review_decisions`` and/or the CSV file
``settings.resolution.decisions_file`` (``id_l,id_r,decision`` with ids ``system:record_id``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.extract.base import SourceError, detect_encoding
from pipeline.memo import Memo
from pipeline.memory import release_freed_memory
from pipeline.settings import ResolutionSettings
from pipeline.stages import StageContext, StageResult
from pipeline.transform.resolve import (
    ScoredPairs,
    TermFrequencies,
    agreed_fields,
    apply_decisions,
    cluster,
    email_domain,
    key_columns,
    match_keys,
    model_fingerprint,
    pair_evidence,
    score_pairs,
    score_touched,
    sort_pairs,
    term_frequencies,
)
from pipeline.transform.standardize import (
    customer_memos,
    placeholders,
    standardize_customers,
)
from pipeline.warehouse import (
    insert_frame,
    one_of,
    read_query,
    read_table,
    replace_partition,
    replace_table,
    table_exists,
)

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
EVENTS_TABLE = "core_resolution_events"
# Golden fields whose values are typed or standardized (a placeholder is no value there
# already): the others are looked through for placeholders.
TYPED_FIELDS = frozenset(
    {"uscc", "phone", "email", "employee_count", "annual_revenue_cny", "created_at", "updated_at"}
)
# Decisions named one by one in a warning.
SHOWN_DECISIONS = 5


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
    """Everything one resolution run produces (``model``: the match model it scored with).

    ``customers`` holds every customer, or after a partial run (:func:`resolve_changes`)
    only the customers it recomputed, with ``retired`` the ids whose rows to drop
    (recomputed ones included). ``standardized`` and ``scored`` (the pairs before the
    archive decisions) are what the next run starts from."""

    customers: pd.DataFrame
    xref: pd.DataFrame
    review: pd.DataFrame
    events: pd.DataFrame
    pairs: pd.DataFrame
    model: dict | None = None
    frequencies: TermFrequencies | None = None
    standardized: pd.DataFrame | None = None
    scored: pd.DataFrame | None = None
    retired: frozenset[str] | None = None
    keys: pd.DataFrame | None = None


def resolve_customers(
    records: pd.DataFrame,
    settings: ResolutionSettings,
    previous_xref: pd.DataFrame | None,
    decisions: pd.DataFrame | None,
    quarter: str,
    phone_region: str = "CN",
    memos: dict[str, Memo] | None = None,
    model: dict | None = None,
    frequencies: TermFrequencies | None = None,
) -> Resolution:
    """Standardize, score, cluster and survive; ids stay stable against ``previous_xref``.
    ``memos``: :func:`customer_memos` for the standardization, saved (and let go) as soon
    as it is done. ``model`` (with its term ``frequencies``): a trained match model to
    score with instead of training."""
    standardized = standardize_customers(records, phone_region, memos)
    for memo in (memos or {}).values():
        memo.save()
    del memos
    release_freed_memory()  # before Splink's DuckDB allocates the pairs
    log.info("standardized %s records", len(standardized))
    scored = score_pairs(
        standardized, threshold=score_threshold(settings), model=model, frequencies=frequencies
    )
    log.info("scored %s candidate pairs", len(scored.pairs))
    release_freed_memory()  # what Splink's DuckDB let go, before the survivorship's peak
    return _survive(standardized, scored, settings, previous_xref, decisions, quarter)


def score_threshold(settings: ResolutionSettings) -> float:
    """Pairs scoring below this are neither matched nor reviewed, so they are not kept."""
    return min(settings.review_lower, settings.match_threshold)


def _survive(
    standardized: pd.DataFrame,
    scored: ScoredPairs,
    settings: ResolutionSettings,
    previous_xref: pd.DataFrame | None,
    decisions: pd.DataFrame | None,
    quarter: str,
    changed_ids: frozenset[str] | None = None,
    rescored: frozenset[str] | None = None,
) -> Resolution:
    """Cluster the scored pairs, give ids and survive the golden records: of every
    customer, or with ``changed_ids`` (the records whose values changed since
    ``previous_xref``, or that are gone) only of the customers whose records or values
    changed.

    With ``rescored`` too (the records whose pairs were scored again, the gone ones
    included) only the records whose customer can have changed are clustered and given
    ids again (:func:`_affected`); every other record keeps its customer and its match
    probability from ``previous_xref``, as a whole run would give them. ``pairs`` of the
    result then holds the pairs among the records clustered again and those up for review.
    """
    check_decisions(decisions, standardized)
    pairs = apply_decisions(scored.pairs, decisions)
    uscc = standardized.set_index("unique_id")["uscc_valid"]
    old = _old_ids(previous_xref)
    previous = None
    redo = np.ones(len(standardized), dtype=bool)
    if (
        rescored is not None
        and previous_xref is not None
        and "match_probability" in previous_xref.columns
    ):
        previous = _old_ids(previous_xref, "match_probability")
        redo = _affected(
            standardized["unique_id"],
            pairs,
            settings.match_threshold,
            old,
            rescored,
        )
        log.info("clustering %s of %s records again", int(redo.sum()), len(redo))
    ids_again = pd.Index(standardized["unique_id"][redo].to_numpy(dtype=object))
    # looked up by hash in object arrays (Series.isin of Arrow strings took 3 s here)
    inside = pd.Series(
        (ids_again.get_indexer(pairs["id_l"].to_numpy(dtype=object)) >= 0)
        & (ids_again.get_indexer(pairs["id_r"].to_numpy(dtype=object)) >= 0),
        index=pairs.index,
    )
    band = (pairs["match_probability"] >= settings.review_lower) & (
        pairs["match_probability"] < settings.review_upper
    )
    if not redo.all():
        pairs = pairs[inside | band].copy()
        inside = inside[inside | band]
    pairs["evidence"] = pair_evidence(pairs, scored.level_labels)
    pairs["fields_agreed"] = agreed_fields(pairs, scored.level_labels)
    among = pairs[inside.to_numpy()]
    # Two different valid USCCs are two legal entities: no chain of pairs joins them.
    clusters = cluster(standardized["unique_id"][redo], among, settings.match_threshold, uscc)
    log.info("clustered into %s clusters", clusters["cluster_id"].nunique())
    again_xref = previous_xref
    if previous is not None:
        again_xref = previous_xref[previous.index.isin(ids_again)]
    ids, events = assign_customer_ids(
        clusters, again_xref, among, quarter, next_customer_number(old)
    )
    log.info("assigned ids: %s events", len(events))
    probability = _membership_probability(standardized[redo].merge(ids, on="unique_id"), among)
    if previous is not None:
        kept_ids = standardized["unique_id"][~redo]
        kept = previous.reindex(kept_ids)
        ids = pd.concat(
            [
                ids,
                pd.DataFrame(
                    {"unique_id": kept_ids, "customer_id": kept["customer_id"].to_numpy()}
                ),
            ],
            ignore_index=True,
        )
        probability = pd.concat(
            [
                probability,
                pd.DataFrame(
                    {
                        "unique_id": kept_ids,
                        "match_probability": kept["match_probability"].astype(float).to_numpy(),
                    }
                ),
            ],
            ignore_index=True,
        )
    standardized = standardized.merge(ids, on="unique_id", how="left")
    xref = standardized[["source_system", "source_record_id", "customer_id", "unique_id"]].merge(
        probability, on="unique_id", how="left"
    )
    xref = xref.drop(columns="unique_id").sort_values(
        ["customer_id", "source_system", "source_record_id"]
    )
    retired = None
    if changed_ids is None:
        members = standardized
    else:
        new = standardized.set_index("unique_id")["customer_id"]
        moved = new.index[new.to_numpy() != old.reindex(new.index).to_numpy()]
        touched = set(changed_ids) | set(moved)
        retired = frozenset(old.reindex(list(touched)).dropna()) | frozenset(
            new.reindex(list(touched)).dropna()
        )
        members = standardized[standardized["customer_id"].isin(retired)]
        log.info(
            "surviving %s of %s customers again", members["customer_id"].nunique(), new.nunique()
        )
    customers = (
        golden_records(members, settings.source_priority) if len(members) else pd.DataFrame()
    )
    review = review_queue(pairs, ids, settings)
    return Resolution(
        customers,
        xref.reset_index(drop=True),
        review,
        events,
        pairs,
        scored.model,
        scored.frequencies,
        standardized.drop(columns="customer_id"),
        scored.pairs,
        retired,
        scored.keys,
    )


def _affected(
    ids: pd.Series, pairs: pd.DataFrame, threshold: float, old: pd.Series, rescored: frozenset[str]
) -> np.ndarray:
    """Per record of ``ids``: can its customer differ from the previous run's (``old``:
    unique_id -> customer id)?

    A record's cluster depends only on the strong pairs of its connected group (and the
    decisions and valid USCCs in it), and its id only on the clusters holding records of
    the customers its cluster's records belonged to. So the records that need clustering
    again are those joined, through strong pairs or a shared previous customer, to a record
    whose pairs were scored again (or that is new, or gone), or to an end of a decided
    pair. Every other record keeps its cluster, as it was built from the same pairs."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    members = pd.Index(ids.astype(str))
    strong = pairs[pairs["match_probability"] >= threshold]
    left, right = members.get_indexer(strong["id_l"]), members.get_indexer(strong["id_r"])
    inside = (left >= 0) & (right >= 0)
    held = old.reindex(members)
    codes = pd.factorize(held)[0]
    known = np.flatnonzero(codes >= 0)
    first = pd.Series(known).groupby(codes[known]).transform("first").to_numpy()
    graph = coo_matrix(
        (
            np.ones(int(inside.sum()) + len(known), dtype=np.int8),
            (np.concatenate([left[inside], known]), np.concatenate([right[inside], first])),
        ),
        shape=(len(members), len(members)),
    )
    _, component = connected_components(graph, directed=False)
    seeds = set(rescored)
    if "decision" in pairs.columns:
        decided = pairs[pairs["decision"].notna()]
        seeds |= set(decided["id_l"]) | set(decided["id_r"])
    gone_from = set(old.reindex(list(seeds - set(members))).dropna())  # customers losing records
    seed = members.isin(list(seeds)) | (codes < 0) | held.isin(gone_from).to_numpy()
    return np.isin(component, np.unique(component[seed]))


def next_customer_number(old: pd.Series) -> int:
    """The number of the next new ``CUST-NNNNNN`` id: one past the highest of the ``old``
    customer ids (:func:`_old_ids`)."""
    return 1 + max(
        (int(m.group(1)) for m in map(ID_PATTERN.match, old.dropna().unique()) if m), default=0
    )


def _old_ids(previous_xref: pd.DataFrame | None, *also: str) -> pd.Series | pd.DataFrame:
    """unique_id -> customer_id of the previous run (with ``also``: a frame of customer_id
    and those columns)."""
    if previous_xref is None or previous_xref.empty:
        return pd.DataFrame(columns=["customer_id", *also]) if also else pd.Series(dtype=object)
    indexed = previous_xref.set_index(
        previous_xref["source_system"] + ":" + previous_xref["source_record_id"].astype(str)
    )
    return indexed[["customer_id", *also]] if also else indexed["customer_id"]


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


EVENT_COLUMNS = (
    "event_type",
    "customer_id",
    "other_customer_ids",
    "source_records",
    "match_probability",
    "fields_agreed",
    "evidence",
    "quarter",
    "event_id",
)
# Strongest pairs quoted in an event's evidence.
EVIDENCE_PAIRS = 3


def assign_customer_ids(
    clusters: pd.DataFrame,
    previous_xref: pd.DataFrame | None,
    pairs: pd.DataFrame,
    quarter: str,
    next_number: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give each cluster a stable ``CUST-NNNNNN`` id and record every merge and split.

    A cluster keeps the id its records had before. An old customer whose records now sit in
    several clusters is split: the cluster holding most of its records keeps the id, the
    others get new ids (or the id of the customer they joined). A cluster holding records
    of several old customers keeps the smallest old id it owns.

    Events (one row per event, columns :data:`EVENT_COLUMNS`): a ``merge`` for every cluster
    formed from two or more *groups*, where a group is the records of one previous customer
    or one record new to this run (so on a first run every multi-record golden record is a
    merge); a ``split`` for every previous customer whose records now carry different ids.
    Every record whose id changed is listed in an event naming its old and its new id.
    ``pairs`` needs ``id_l, id_r, match_probability`` and may carry ``evidence``,
    ``fields_agreed`` and ``decision``. Returns ``(unique_id, customer_id)`` and the events.
    ``next_number``: of the first new id (by default one past the highest in
    ``previous_xref``, which may then hold only the clustered records' rows).
    """
    frame = clusters[["unique_id", "cluster_id"]].copy()
    old = _old_ids(previous_xref)
    frame["old_id"] = frame["unique_id"].map(old) if len(old) else None
    frame["old_id"] = frame["old_id"].astype(object).where(frame["old_id"].notna(), None)
    if next_number is None:
        next_number = next_customer_number(old)
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
    # Each cluster keeps the smallest old id it owns.
    kept = owner.reset_index().sort_values("old_id").groupby("cluster_id")["old_id"].first()
    assigned: dict[str, str] = kept.to_dict()
    for cluster_id in sorted(set(frame["cluster_id"]) - set(assigned)):
        assigned[cluster_id] = f"CUST-{next_number:06d}"
        next_number += 1
    frame["customer_id"] = frame["cluster_id"].map(assigned)
    frame["group"] = frame["old_id"].fillna("new:" + frame["unique_id"])
    events = pd.concat(
        [_merge_events(frame, pairs, quarter), _split_events(frame, pairs, quarter)],
        ignore_index=True,
    )
    events["match_probability"] = events["match_probability"].astype(float)
    return frame[["unique_id", "customer_id"]], events


def _pair_view(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs with both ends' cluster, customer id, group and old id."""
    index = pd.Index(frame["unique_id"])
    left, right = index.get_indexer(pairs["id_l"]), index.get_indexer(pairs["id_r"])
    inside = (left >= 0) & (right >= 0)
    view = pairs[inside].copy()
    for side, positions in (("l", left[inside]), ("r", right[inside])):
        for column in ("cluster_id", "customer_id", "group", "old_id"):
            view[f"{column}_{side}"] = frame[column].to_numpy(dtype=object)[positions]
    for column in ("evidence", "fields_agreed", "decision"):
        if column not in view.columns:
            view[column] = None
    return view


def _quote(pairs: pd.DataFrame) -> pd.Series:
    """``id_l~id_r p=0.998 agreed: name (exact), phone (exact)`` per pair.

    Archive decisions read ``decided same`` / ``decided different``.
    """
    decided = pairs["decision"].map(lambda d: f" decided {d}" if isinstance(d, str) else "")
    agreed = pairs["fields_agreed"].fillna("").astype(str)
    agreed = agreed.where(agreed == "", " agreed: " + agreed)
    return (
        pairs["id_l"]
        + "~"
        + pairs["id_r"]
        + " p="
        + pairs["match_probability"].map("{:.3f}".format)
        + decided
        + agreed
    )


def _summaries(linked: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per ``key``: the strongest pair's agreed fields and the quoted strongest pairs."""
    if linked.empty:
        # No pair to quote (a split whose records no scored pair links any more).
        return pd.DataFrame(columns=["fields_agreed", "evidence"], dtype=object)
    linked = linked.sort_values(
        [key, "match_probability", "id_l", "id_r"], ascending=[True, False, True, True]
    )
    top = linked.groupby(key, sort=False).head(EVIDENCE_PAIRS)
    top = top.assign(quote=_quote(top))
    return pd.DataFrame(
        {
            "fields_agreed": top.groupby(key)["fields_agreed"].first(),
            "evidence": top.groupby(key)["quote"].agg(" | ".join),
        }
    )


def _event_frame(events: pd.DataFrame, quarter: str) -> pd.DataFrame:
    events = events.assign(quarter=quarter)
    key = (
        events["event_type"]
        + "|"
        + events["customer_id"]
        + "|"
        + events["other_customer_ids"]
        + "|"
        + events["source_records"]
    )
    events["event_id"] = [hashlib.sha1(k.encode()).hexdigest()[:20] for k in key]
    events["match_probability"] = events["match_probability"].astype(float)
    return events[list(EVENT_COLUMNS)].reset_index(drop=True)


def _merge_events(frame: pd.DataFrame, pairs: pd.DataFrame, quarter: str) -> pd.DataFrame:
    """One ``merge`` per cluster formed from two or more groups (old customers, new records)."""
    groups = frame.groupby("cluster_id")["group"].nunique()
    merged = frame[frame["cluster_id"].isin(groups.index[groups >= 2])]
    if merged.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    view = _pair_view(merged, pairs)
    # Links between groups of one cluster: what joined them.
    links = view[
        (view["cluster_id_l"] == view["cluster_id_r"]) & (view["group_l"] != view["group_r"])
    ]
    # The weakest of the links that joined the groups: each group's best link, then the minimum.
    ends = pd.concat(
        [
            links[["cluster_id_l", "group_l", "match_probability"]].set_axis(
                ["cluster_id", "group", "p"], axis=1
            ),
            links[["cluster_id_r", "group_r", "match_probability"]].set_axis(
                ["cluster_id", "group", "p"], axis=1
            ),
        ]
    )
    weakest = ends.groupby(["cluster_id", "group"])["p"].max().groupby(level=0).min()
    summary = _summaries(links, "cluster_id_l")
    per_cluster = merged.sort_values("unique_id").groupby("cluster_id")
    events = pd.DataFrame({"customer_id": per_cluster["customer_id"].first()})
    others = merged[merged["old_id"].notna() & (merged["old_id"] != merged["customer_id"])]
    others = others.drop_duplicates(["cluster_id", "old_id"]).sort_values("old_id")
    events["other_customer_ids"] = (
        others.groupby("cluster_id")["old_id"].agg(",".join).reindex(events.index).fillna("")
    )
    events["source_records"] = per_cluster["unique_id"].agg(",".join)
    events["match_probability"] = weakest.reindex(events.index)
    events["fields_agreed"] = summary["fields_agreed"].reindex(events.index)
    events["evidence"] = summary["evidence"].reindex(events.index).fillna("")
    events["event_type"] = "merge"
    log.info("%s merges", len(events))
    return _event_frame(events.reset_index(drop=True), quarter)


def _split_events(frame: pd.DataFrame, pairs: pd.DataFrame, quarter: str) -> pd.DataFrame:
    """One ``split`` per previous customer whose records now carry different ids."""
    known = frame.dropna(subset=["old_id"])
    moved = known[known["customer_id"] != known["old_id"]]
    if moved.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    # A retired id whose records all went to one other customer is a merge, not a split.
    spread = known.groupby("old_id")["customer_id"].nunique()
    split_ids = sorted(set(moved["old_id"]) & set(spread.index[spread >= 2]))
    moved = moved[moved["old_id"].isin(split_ids)].sort_values("unique_id")
    if moved.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    view = _pair_view(known[known["old_id"].isin(split_ids)], pairs)
    # Links inside one previous customer that no longer hold.
    broken = view[
        (view["old_id_l"] == view["old_id_r"]) & (view["customer_id_l"] != view["customer_id_r"])
    ]
    summary = _summaries(broken, "old_id_l")
    per_old = moved.groupby("old_id")
    events = pd.DataFrame({"customer_id": pd.Series(split_ids, index=split_ids)})
    events["other_customer_ids"] = per_old["customer_id"].agg(
        lambda ids: ",".join(sorted(set(ids)))
    )
    events["source_records"] = per_old["unique_id"].agg(",".join)
    events["match_probability"] = broken.groupby("old_id_l")["match_probability"].max()
    events["fields_agreed"] = summary["fields_agreed"].reindex(events.index)
    events["evidence"] = (
        "records moved to "
        + events["other_customer_ids"]
        + "; no longer matched: "
        + summary["evidence"].reindex(events.index).fillna("no scored pair links them now")
    )
    events["event_type"] = "split"
    log.info("%s splits", len(events))
    return _event_frame(events.reset_index(drop=True), quarter)


def _clean_name(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", str(value))).strip()
    return text.replace("(", "(").replace(")", ")") or None


def golden_records(records: pd.DataFrame, source_priority: list[str]) -> pd.DataFrame:
    """One row per customer: field-by-field survivorship with ``<field>_source`` lineage.

    For each field the candidates are the members' valid values (placeholders such as
    ``N/A`` or ``未知`` are none); the winner is from the
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
        if field not in TYPED_FIELDS:
            # Blanks and placeholders (N/A, 未知, -) are no value: a real one from any
            # system wins.
            text = candidates[field].astype(str)
            candidates = candidates[~text.isin(placeholders(text))]
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


DECISION_COLUMNS = ("id_l", "id_r", "decision")
DECISION_WORDS = ("same", "different")


def load_decisions(engine: object, decisions_file: Path | None) -> pd.DataFrame:
    """Archive staff decisions from ``core_review_decisions`` and the CSV file (file wins).

    Adds ``origin`` (``core_review_decisions`` or ``FILE row N``) for messages about a
    decision. A file that cannot be read as ``id_l,id_r,decision`` rows, with a blank id
    or a word other than same/different, is an error naming the file, the row (header =
    row 1) and the rule.
    """
    parts = []
    if engine is not None and table_exists(engine, "core_review_decisions"):
        table = read_table(engine, "core_review_decisions", list(DECISION_COLUMNS))
        parts.append(table.assign(origin="core_review_decisions"))
    if decisions_file is not None:
        parts.append(read_decisions_file(Path(decisions_file)))
    if not parts:
        return pd.DataFrame(columns=[*DECISION_COLUMNS, "origin"])
    return pd.concat(parts, ignore_index=True)


def read_decisions_file(path: Path) -> pd.DataFrame:
    """The rows of a decisions CSV (``id_l,id_r,decision``), checked; see :func:`load_decisions`."""
    where = f"resolution.decisions_file {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:  # UTF-8, or GBK when saved from Excel on a Chinese Windows, as finance exports
        text = path.read_text(encoding=detect_encoding(path))
    except SourceError as error:
        raise ValueError(f"{where}: {error}") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise ValueError(f"{where}: malformed CSV ({error})") from None
    rows = [
        (number, row) for number, row in enumerate(rows, start=1) if any(c.strip() for c in row)
    ]
    expected = ",".join(DECISION_COLUMNS)
    if not rows:
        raise ValueError(f"{where} is empty (rule: a header row {expected}, one decision a row)")
    header = [c.strip().lower() for c in rows[0][1]]
    if header != list(DECISION_COLUMNS):
        raise ValueError(
            f"{where} row {rows[0][0]}: header is {','.join(rows[0][1])!r}, "
            f"expected {expected!r} (rule: a header row {expected}, one decision a row)"
        )
    records = []
    for number, row in rows[1:]:
        cells = [c.strip() for c in row]
        if len(cells) != len(DECISION_COLUMNS):
            problem = f"{len(cells)} fields, expected 3 ({expected})"
        elif not cells[0] or not cells[1]:
            problem = "blank id (ids are system:record_id, e.g. sales:C000123)"
        elif cells[2].lower() not in DECISION_WORDS:
            problem = f"decision {cells[2]!r} is not same or different"
        else:
            records.append((*cells[:2], cells[2].lower(), f"{path} row {number}"))
            continue
        raise ValueError(f"{where} row {number}: {problem} (got {','.join(row)!r})")
    return pd.DataFrame(records, columns=[*DECISION_COLUMNS, "origin"], dtype=object)


def check_decisions(decisions: pd.DataFrame, standardized: pd.DataFrame) -> None:
    """Warn about decisions naming records that are not in this run (a typo, or a record
    since removed: the decision is kept but does nothing) and ``same`` decisions joining
    two different valid USCCs (two legal entities; the decision wins, one USCC survives)."""
    if decisions is None or decisions.empty:
        return
    origin = (
        decisions["origin"] if "origin" in decisions.columns else pd.Series("", decisions.index)
    )
    known = pd.Index(standardized["unique_id"].astype(str))
    ids_l, ids_r = decisions["id_l"].astype(str), decisions["id_r"].astype(str)
    unknown = ~ids_l.isin(known) | ~ids_r.isin(known)
    for index in decisions.index[unknown][:SHOWN_DECISIONS]:
        missing = [i for i in (ids_l[index], ids_r[index]) if i not in known]
        log.warning(
            "%s: decision names %s, not a customer record of this run (ids are "
            "system:record_id); it has no effect",
            origin[index],
            " and ".join(missing),
        )
    if unknown.sum() > SHOWN_DECISIONS:
        log.warning("%s more decisions name unknown records", int(unknown.sum()) - SHOWN_DECISIONS)
    uscc = standardized.set_index(standardized["unique_id"].astype(str))["uscc_valid"]
    same = decisions["decision"].astype(str).str.strip().str.lower().eq("same") & ~unknown
    for index in decisions.index[same]:
        left, right = uscc.get(ids_l[index]), uscc.get(ids_r[index])
        if isinstance(left, str) and isinstance(right, str) and left != right:
            log.warning(
                "%s: decided same for %s (USCC %s) and %s (USCC %s), two different valid "
                "USCCs: merged as decided",
                origin[index],
                ids_l[index],
                left,
                ids_r[index],
                right,
            )


def record_events(engine: sa.Engine, events: pd.DataFrame, batch_id: str) -> int:
    """Add the run's merge/split events to ``core_resolution_events``; returns how many were new.

    Idempotent: an event already recorded (same ``event_id``, by any batch) is not added
    again, and the batch's earlier events are kept, so rerunning a batch duplicates nothing.
    """
    existing = pd.DataFrame(columns=["event_id", "batch_id"])
    if table_exists(engine, EVENTS_TABLE):
        # only the run's events and the batch's (the table grows with every day's events)
        among, ids = one_of(engine.dialect.name, "%(ids)s", sorted(set(events["event_id"])))
        existing = read_query(
            engine,
            f'SELECT "event_id", "batch_id" FROM "{EVENTS_TABLE}" '
            f'WHERE "event_id" {among} OR "batch_id" = %(batch)s',
            {"ids": ids, "batch": batch_id},
        )
    new = events[~events["event_id"].isin(existing["event_id"])]
    new = new.drop_duplicates("event_id")
    if new.empty:
        return 0
    mine = existing[existing["batch_id"] == batch_id]
    if not mine.empty:
        own = read_table(engine, EVENTS_TABLE, batch_id=batch_id)
        new = pd.concat([own[list(EVENT_COLUMNS)], new], ignore_index=True)
    replace_partition(engine, EVENTS_TABLE, new, batch_id=batch_id)
    return len(new) - len(mine)


MODEL_TABLE = "resolution_model"


@dataclass(frozen=True)
class KeptModel:
    """A kept match model: Splink's settings with trained parameters, the term
    frequencies it scores with, and a digest of both."""

    model: dict
    frequencies: TermFrequencies
    digest: str


def stored_model(
    engine: object, settings: ResolutionSettings, records: int, now: datetime
) -> tuple[KeptModel | None, str]:
    """The kept match model if it may score these records (and why, or why not): trained
    by this code on as many records, give or take a tenth, fewer than
    ``retrain_after_days`` ago."""
    if settings.retrain_after_days == 0 or not table_exists(engine, MODEL_TABLE):
        return None, "trained"
    kept = read_table(engine, MODEL_TABLE)
    if len(kept) != 1 or "frequencies" not in kept.columns:
        return None, "trained"
    row = kept.iloc[0]
    trained_at = pd.Timestamp(row["trained_at"]).to_pydatetime().replace(tzinfo=None)
    if row["fingerprint"] != model_fingerprint():
        return None, "trained (the model's rules or code changed)"
    if abs(records - int(row["records"])) > 0.1 * int(row["records"]):
        return None, f"trained (records {int(row['records']):,} -> {records:,})"
    if now.replace(tzinfo=None) - trained_at >= timedelta(days=settings.retrain_after_days):
        return None, f"trained (the model was trained {trained_at:%Y-%m-%d})"
    model = KeptModel(
        json.loads(row["model"]),
        TermFrequencies.from_json(row["frequencies"]),
        _model_digest(row["model"], row["frequencies"]),
    )
    return model, f"reused (trained {trained_at:%Y-%m-%d %H:%M})"


def _model_digest(model: str, frequencies: str) -> str:
    return hashlib.sha256(f"{model}\n{frequencies}".encode()).hexdigest()[:16]


def _keep_model(
    engine: object,
    model: dict,
    frequencies: TermFrequencies,
    records: int,
    now: datetime,
    batch: str,
) -> KeptModel:
    text, shares = json.dumps(model), frequencies.to_json()
    kept = pd.DataFrame(
        {
            "fingerprint": [model_fingerprint()],
            "records": [records],
            "trained_at": [pd.Timestamp(now.replace(tzinfo=None))],
            "batch_id": [batch],
            "model": [text],
            "frequencies": [shares],
        }
    )
    replace_table(engine, MODEL_TABLE, kept)
    return KeptModel(model, frequencies, _model_digest(text, shares))


# What a run keeps for the next one to resolve only what changed: per source record its
# digest, standardized values and blocking keys; the scored pairs; and what they hold for.
STATE_TABLE = "resolution_state"
RECORDS_TABLE = "resolution_records"
PAIRS_TABLE = "resolution_pairs"
# Columns standardize_customers adds, kept per record.
STANDARDIZED_COLUMNS = (
    "name_core",
    "name_legal_form",
    "name_branch",
    "name_region",
    "uscc_valid",
    "phone_e164",
    "phone_number",
    "email_std",
    "email_domain",
    "address_std",
    "province_std",
    "city_std",
)
# A day that changes more of the customer records than this is resolved whole.
PARTIAL_MAX_SHARE = 0.1


def record_digests(records: pd.DataFrame) -> pd.Series:
    """A 64-bit digest of each record's source values (int64, aligned with ``records``)."""
    hashed = pd.util.hash_pandas_object(records[list(RECORD_COLUMNS)], index=False)
    return pd.Series(hashed.to_numpy().view("int64"), index=records.index)


def state_fingerprint(settings: ResolutionSettings, phone_region: str, kept: KeptModel) -> str:
    """What the kept records and pairs are valid for: the model and its frequencies, the
    kept pairs' threshold, the phone region, the survivorship order and this code."""
    from pipeline import memo
    from pipeline.transform import resolve, standardize

    parts = [
        kept.digest,
        repr(score_threshold(settings)),
        repr(settings.match_threshold),  # the kept customers were clustered at it
        phone_region,
        ",".join(settings.source_priority),
        memo.code_version([sys.modules[__name__], resolve, standardize], ["splink"]),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Changes:
    """How today's customer records differ from those the kept state was built from."""

    changed: pd.Series  # bool per record: new, or its source values changed
    gone: pd.Index  # unique_ids of records no longer in the sources
    kept: pd.DataFrame  # the kept records, indexed by unique_id


def load_changes(
    engine: object, records: pd.DataFrame, digests: pd.Series, fingerprint: str
) -> tuple[Changes | None, str]:
    """Today's records against the kept state, or None (and why) when it cannot be used:
    none kept, kept for another model or settings, or too much changed."""
    if not all(table_exists(engine, t) for t in (STATE_TABLE, RECORDS_TABLE, PAIRS_TABLE)):
        return None, "whole (nothing kept from an earlier run)"
    state = read_table(engine, STATE_TABLE)
    if len(state) != 1 or state.iloc[0]["fingerprint"] != fingerprint:
        return None, "whole (the model, the settings or the code changed)"
    kept = read_table(engine, RECORDS_TABLE).set_index("unique_id")
    position = kept.index.get_indexer(records["unique_id"])
    kept_digests = kept["record_digest"].to_numpy(dtype="int64")
    known = position >= 0
    changed = ~known
    changed[known] = kept_digests[position[known]] != digests.to_numpy()[known]
    changed = pd.Series(changed, index=records.index)
    gone = kept.index.difference(pd.Index(records["unique_id"]))
    moved = int(changed.sum()) + len(gone)
    if moved > PARTIAL_MAX_SHARE * max(len(records), len(kept), 1):
        return None, f"whole ({moved:,} of {len(records):,} records changed)"
    return Changes(changed, gone, kept), f"partial ({moved:,} records changed or gone)"


@dataclass(frozen=True)
class Partial:
    """What a partial run changed in the kept state, for :func:`_write_state`."""

    rewritten: pd.Index  # unique_ids whose kept record row is replaced
    gone: pd.Index  # unique_ids whose kept record row goes
    rescored: pd.Index  # unique_ids whose kept pairs are replaced


def resolve_changes(
    records: pd.DataFrame,
    changes: Changes,
    kept_pairs: pd.DataFrame,
    kept: KeptModel,
    settings: ResolutionSettings,
    previous_xref: pd.DataFrame,
    decisions: pd.DataFrame | None,
    quarter: str,
    phone_region: str = "CN",
) -> tuple[Resolution, Partial]:
    """Resolve after a few changes, giving what :func:`resolve_customers` gives with the
    same kept model, but standardizing only the changed records, scoring only the
    candidate pairs whose score or candidacy can have changed, and surviving only the
    customers whose records changed or moved.

    A pair is scored again when one of its records changed, or when one of its blocking
    keys became too common (or no longer is), or when its email domain is new since the
    model was trained and a changed or removed record held it (the domain's frequency
    moved). Every other pair scores as it did: its records, their keys and the
    frequencies it uses are the same.
    """
    changed = changes.changed.to_numpy()
    fresh = standardize_customers(records[changed], phone_region)
    standardized = records.join(
        changes.kept[list(STANDARDIZED_COLUMNS)], on="unique_id", how="left"
    )
    for column in STANDARDIZED_COLUMNS:
        values = standardized[column].to_numpy(dtype=object)
        values[changed] = fresh[column].to_numpy(dtype=object)
        standardized[column] = values
    keys = match_keys(standardized)
    ids = pd.Index(keys["unique_id"])
    columns = key_columns()
    kept_keys = changes.kept.reindex(ids)[columns].to_numpy(dtype=object)
    now_keys = keys[columns].to_numpy(dtype=object)
    differs = (pd.isna(kept_keys) != pd.isna(now_keys)) | (
        pd.notna(kept_keys) & pd.notna(now_keys) & (kept_keys != now_keys)
    )
    flipped = differs.any(axis=1) & ~changed
    frequencies = term_frequencies(keys, kept=kept.frequencies)
    touched = changed | flipped
    for column in frequencies.columns:
        known = kept.frequencies.columns.get(column, (pd.Series(dtype="float64"), 0))[0].index
        # The domains the changed and removed records hold now and held before.
        before = changes.kept.reindex(ids[changed].append(changes.gone))
        held = pd.concat(
            [keys.loc[changed, column], before[column.removesuffix("__domain")].map(email_domain)]
        ).dropna()
        moved_domains = pd.Index(held.unique()).difference(known)
        touched |= keys[column].isin(moved_domains).to_numpy()
    # The touched records and every record sharing a blocking key (and its context) with one.
    needed = touched.copy()
    for column, context in key_columns(with_context=True):
        key = keys[column] if context is None else keys[column] + "\x1f" + keys[context]
        needed |= key.isin(key[touched].dropna().unique()).to_numpy()
    log.info(
        "partial: %s records changed, %s gone, %s keys or domains moved: scoring %s among %s",
        int(changed.sum()),
        len(changes.gone),
        int(touched.sum() - changed.sum()),
        int(touched.sum()),
        int(needed.sum()),
    )
    scored = score_touched(
        keys[needed].reset_index(drop=True),
        pd.Series(touched[needed]),
        score_threshold(settings),
        kept.model,
        frequencies,
    )
    rescored = ids[touched].union(changes.gone)
    untouched = kept_pairs[~kept_pairs["id_l"].isin(rescored) & ~kept_pairs["id_r"].isin(rescored)]
    pairs = untouched
    if len(scored.pairs):
        new_pairs = scored.pairs[list(untouched.columns)]
        pairs = pd.concat([untouched, new_pairs.astype(untouched.dtypes.to_dict())])
    pairs = sort_pairs(pairs.reset_index(drop=True))
    log.info("kept %s pairs, scored %s", len(untouched), len(scored.pairs))
    scored = ScoredPairs(pairs, scored.level_labels, kept.model, frequencies, keys)
    changed_ids = frozenset(ids[changed]) | frozenset(changes.gone)
    result = _survive(
        standardized,
        scored,
        settings,
        previous_xref,
        decisions,
        quarter,
        changed_ids,
        frozenset(rescored),
    )
    partial = Partial(ids[changed | flipped], changes.gone, rescored)
    return result, partial


def _state_records(
    standardized: pd.DataFrame, digests: pd.Series, keys: pd.DataFrame
) -> pd.DataFrame:
    """The kept rows of :data:`RECORDS_TABLE` for ``standardized`` (aligned with ``digests``
    and with ``keys``, its :func:`match_keys` among all records)."""
    frame = pd.DataFrame({"unique_id": standardized["unique_id"].to_numpy()})
    frame["record_digest"] = digests.to_numpy()
    for column in STANDARDIZED_COLUMNS:
        frame[column] = standardized[column].to_numpy(dtype=object)
    for column in key_columns():
        frame[column] = keys[column].to_numpy(dtype=object)
    return frame


def _delete_ids(conn: sa.Connection, table: str, columns: list[str], ids: pd.Index) -> None:
    """Delete the rows of ``table`` whose ``columns`` (any of them) hold one of ``ids``."""
    values = [str(i) for i in ids]
    for column in columns:
        if conn.dialect.name == "postgresql":  # one statement, the array hashed
            conn.execute(
                sa.text(f'DELETE FROM "{table}" WHERE "{column}" = ANY(:ids)'), {"ids": values}
            )
            continue
        statement = sa.text(f'DELETE FROM "{table}" WHERE "{column}" IN :ids').bindparams(
            sa.bindparam("ids", expanding=True)
        )
        for start in range(0, len(values), 500):
            conn.execute(statement, {"ids": values[start : start + 500]})


def _write_state(
    engine: sa.Engine,
    fingerprint: str | None,
    result: Resolution,
    digests: pd.Series,
    partial: Partial | None,
    batch_id: str,
) -> None:
    """Keep what the next run starts from (after :func:`_forget_state` and the core
    tables). No model (``fingerprint`` None): none kept."""
    if fingerprint is None:
        return
    assert result.standardized is not None and result.scored is not None
    assert result.keys is not None
    pairs = result.scored
    if partial is None:
        records = _state_records(result.standardized, digests, result.keys)
        replace_table(engine, RECORDS_TABLE, records)
        replace_table(engine, PAIRS_TABLE, pairs)
    else:
        rows = result.standardized["unique_id"].isin(partial.rewritten).to_numpy()
        with engine.begin() as conn:
            _delete_ids(conn, RECORDS_TABLE, ["unique_id"], partial.rewritten.union(partial.gone))
            records = _state_records(result.standardized[rows], digests[rows], result.keys[rows])
            insert_frame(conn, RECORDS_TABLE, records)
            _delete_ids(conn, PAIRS_TABLE, ["id_l", "id_r"], partial.rescored)
            rescored = pairs["id_l"].isin(partial.rescored) | pairs["id_r"].isin(partial.rescored)
            insert_frame(conn, PAIRS_TABLE, pairs[rescored])
    state = pd.DataFrame({"fingerprint": [fingerprint], "batch_id": [batch_id]})
    replace_table(engine, STATE_TABLE, state)


def _forget_state(engine: sa.Engine) -> None:
    """Drop the kept state before the core tables change: a run interrupted from here on
    leaves none, and the next run resolves whole."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{STATE_TABLE}"')


def _write_customers(engine: sa.Engine, result: Resolution) -> None:
    if result.retired is None:
        replace_table(engine, "core_customers", result.customers)
        return
    with engine.begin() as conn:
        _delete_ids(conn, "core_customers", ["customer_id"], pd.Index(sorted(result.retired)))
        insert_frame(conn, "core_customers", result.customers)


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
    del frames
    digests = record_digests(records)
    previous = (
        read_table(
            ctx.engine,
            "core_customer_xref",
            ["source_system", "source_record_id", "customer_id", "match_probability"],
        )
        if table_exists(ctx.engine, "core_customer_xref")
        else None
    )
    decisions = load_decisions(ctx.engine, ctx.settings.resolution.decisions_file)
    quarter = str(ctx.quarter)
    settings = ctx.settings.resolution
    phone_region = ctx.settings.validation.phone_region
    kept, model_note = stored_model(ctx.engine, settings, len(records), ctx.extracted_at)
    log.info("match model: %s", model_note)
    changes = None
    if not settings.partial:
        how = "whole (resolution.partial is off)"
    elif kept is None:
        how = "whole (a new model)"
    elif previous is None or not table_exists(ctx.engine, "core_customers"):
        how = "whole (no customers yet)"
    else:
        changes, how = load_changes(
            ctx.engine, records, digests, state_fingerprint(settings, phone_region, kept)
        )
    log.info("resolution: %s", how)
    partial = None
    if changes is not None and previous is not None and kept is not None:
        kept_pairs = read_table(ctx.engine, PAIRS_TABLE)
        result, partial = resolve_changes(
            records,
            changes,
            kept_pairs,
            kept,
            settings,
            previous,
            decisions,
            quarter,
            phone_region,
        )
        del kept_pairs, changes
    else:
        result = resolve_customers(
            records,
            settings,
            previous,
            decisions,
            quarter,
            phone_region,
            customer_memos(ctx.engine, phone_region),
            kept.model if kept else None,
            kept.frequencies if kept else None,
        )
    if kept is None and result.model is not None and result.frequencies is not None:
        trained = _keep_model(
            ctx.engine,
            result.model,
            result.frequencies,
            len(records),
            ctx.extracted_at,
            ctx.batch_id,
        )
        kept = trained if settings.retrain_after_days else None  # 0: the next run trains
    _forget_state(ctx.engine)
    # Events first: if a later write fails, the rerun finds the same events and adds none.
    recorded = record_events(ctx.engine, result.events, ctx.batch_id)
    _write_customers(ctx.engine, result)
    replace_table(ctx.engine, "core_customer_xref", result.xref)
    replace_table(ctx.engine, "core_match_review", result.review)
    fingerprint = state_fingerprint(settings, phone_region, kept) if kept is not None else None
    _write_state(ctx.engine, fingerprint, result, digests, partial, ctx.batch_id)
    customers = int(result.xref["customer_id"].nunique())
    return StageResult(
        stage="resolution",
        rows_in=len(records),
        rows_out=customers,
        detail={
            "customers": customers,
            "review_pairs": len(result.review),
            "merges": int((result.events["event_type"] == "merge").sum()),
            "splits": int((result.events["event_type"] == "split").sum()),
            "events_recorded": recorded,
            "model": model_note,
            "resolved": how.split(" ")[0],
        },
    )
