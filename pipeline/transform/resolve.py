"""Entity resolution of standardized customer records with Splink (DuckDB backend).

Grain in: one row per source record with a unique ``unique_id`` and the standardized
columns of :func:`pipeline.transform.standardize.standardize_customers` (any may be blank).
Grain out: :func:`score_pairs` gives one row per scored candidate pair; :func:`cluster`
gives one row per record with its cluster.

Text comparisons use Jaccard similarity of *character* bigrams computed in DuckDB list
functions, because DuckDB's levenshtein / jaro functions count UTF-8 bytes, which makes a
one-character change in a Chinese name look like three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.transform.standardize import bigrams

log = logging.getLogger(__name__)

SEED = 20261123
MATCH_COLUMNS = (
    "name_core",
    "uscc_valid",
    "phone_number",
    "email_std",
    "address_std",
    "city_std",
)


def _jaccard(column: str) -> str:
    left, right = f"{column}_l", f"{column}_r"
    return (
        f"(len(list_intersect({left}, {right}))::DOUBLE"
        f" / greatest(len(list_distinct(list_concat({left}, {right}))), 1))"
    )


def _null(column: str) -> dict[str, Any]:
    return {
        "sql_condition": f"{column}_l IS NULL OR {column}_r IS NULL",
        "label_for_charts": "missing",
        "is_null_level": True,
    }


def _level(sql: str, label: str) -> dict[str, Any]:
    return {"sql_condition": sql, "label_for_charts": label}


def _else() -> dict[str, Any]:
    return {"sql_condition": "ELSE", "label_for_charts": "different"}


def _text_comparison(
    name: str, column: str, grams: str, thresholds: tuple[float, ...]
) -> dict[str, Any]:
    levels = [_null(column), _level(f"{column}_l = {column}_r", "exact")]
    for threshold in thresholds:
        levels.append(_level(f"{_jaccard(grams)} >= {threshold}", f"bigram jaccard >= {threshold}"))
    levels.append(_else())
    return {"output_column_name": name, "comparison_levels": levels}


def _exact_comparison(name: str, column: str, extra: list[dict[str, Any]] | None = None) -> dict:
    levels = [_null(column), _level(f"{column}_l = {column}_r", "exact"), *(extra or []), _else()]
    return {"output_column_name": name, "comparison_levels": levels}


def comparisons() -> list[dict[str, Any]]:
    """The model's comparisons: core name, USCC, phone, e-mail, address, city."""
    return [
        _text_comparison("name", "name_core", "name_grams", (0.7, 0.5, 0.3)),
        _exact_comparison("uscc", "uscc_valid"),
        _exact_comparison("phone", "phone_number"),
        _exact_comparison(
            "email",
            "email_std",
            [_level("email_domain_l = email_domain_r", "same domain")],
        ),
        _text_comparison("address", "address_std", "address_grams", (0.6, 0.3)),
        _exact_comparison("city", "city_std"),
    ]


def blocking_rules() -> list[str]:
    """Candidate-pair rules: each is an equality on a selective key, so cost is ~linear."""
    return [
        "l.uscc_valid = r.uscc_valid",
        "l.phone_number = r.phone_number",
        "l.email_std = r.email_std",
        "l.name_core = r.name_core",
        "l.name_head = r.name_head AND l.city_std = r.city_std",
        "l.name_tail = r.name_tail AND l.city_std = r.city_std",
        "l.address_std = r.address_std",
    ]


def prepare(records: pd.DataFrame) -> pd.DataFrame:
    """The Splink input: one row per record, match columns plus character-bigram lists."""
    frame = pd.DataFrame({"unique_id": records["unique_id"].astype(str).to_numpy()})
    for column in (*MATCH_COLUMNS, "email_domain"):
        source = records[column] if column in records.columns else [None] * len(records)
        frame[column] = pd.Series(
            [v if isinstance(v, str) and v else None for v in source], dtype=object
        )
    frame["name_grams"] = [bigrams(v) for v in frame["name_core"]]
    frame["address_grams"] = [bigrams(v) for v in frame["address_std"]]
    # Block keys: first and last two characters of the core name.
    frame["name_head"] = pd.Series(
        [v[:2] if isinstance(v, str) and len(v) >= 2 else None for v in frame["name_core"]],
        dtype=object,
    )
    frame["name_tail"] = pd.Series(
        [v[-2:] if isinstance(v, str) and len(v) >= 3 else None for v in frame["name_core"]],
        dtype=object,
    )
    return frame


@dataclass(frozen=True)
class ScoredPairs:
    """Scored candidate pairs (one row per pair, ``id_l < id_r``) and the level labels."""

    pairs: pd.DataFrame
    level_labels: dict[str, dict[int, str]]


def _level_labels() -> dict[str, dict[int, str]]:
    labels: dict[str, dict[int, str]] = {}
    for comparison in comparisons():
        levels = comparison["comparison_levels"]
        non_null = [lv for lv in levels if not lv.get("is_null_level")]
        mapping = {-1: "missing"}
        for index, level in enumerate(non_null):
            mapping[len(non_null) - 1 - index] = level["label_for_charts"]
        labels[comparison["output_column_name"]] = mapping
    return labels


def score_pairs(records: pd.DataFrame, threshold: float = 0.0) -> ScoredPairs:
    """Train the model (u by seeded random sampling, m by EM) and score candidate pairs.

    A pair sharing the same valid USCC is a deterministic match (probability 1).
    Returns pairs with ``id_l, id_r, match_probability, match_weight`` and ``gamma_<cmp>``.
    """
    from splink import DuckDBAPI, Linker, SettingsCreator

    frame = prepare(records)
    empty = pd.DataFrame(columns=["id_l", "id_r", "match_probability", "match_weight"])
    if len(frame) < 2:
        return ScoredPairs(empty, _level_labels())
    db_api = DuckDBAPI()
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comparisons(),
        blocking_rules_to_generate_predictions=blocking_rules(),
        retain_intermediate_calculation_columns=True,
        retain_matching_columns=True,
        probability_two_random_records_match=max(1.0 / len(frame), 1e-7),
    )
    table = db_api.register(frame, dataset_display_name="records")
    linker = Linker(table, settings, log_level=logging.WARNING)
    training = linker.training
    max_pairs = min(3e5, max(1e4, len(frame) * (len(frame) - 1) / 2))
    training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=SEED)
    _train_em(linker, frame)
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    pairs = predictions.as_pandas_dataframe()
    predictions.drop_table_from_database_and_remove_from_cache()
    pairs = pairs.rename(columns={"unique_id_l": "id_l", "unique_id_r": "id_r"})
    keep = ["id_l", "id_r", "match_probability", "match_weight"]
    keep += [c for c in pairs.columns if c.startswith("gamma_")]
    pairs = pairs[keep].copy()
    same_uscc = pairs["gamma_uscc"] == 1
    pairs.loc[same_uscc, "match_probability"] = 1.0
    swap = pairs["id_l"] > pairs["id_r"]
    pairs.loc[swap, ["id_l", "id_r"]] = pairs.loc[swap, ["id_r", "id_l"]].to_numpy()
    pairs = pairs.sort_values(["id_l", "id_r"], kind="stable").reset_index(drop=True)
    return ScoredPairs(pairs, _level_labels())


def _train_em(linker: Any, frame: pd.DataFrame) -> None:
    """EM for m: blocks on phone (trains name/address) then on core name (trains the rest)."""
    training = linker.training
    for rule, column in (
        ("l.phone_number = r.phone_number", "phone_number"),
        ("l.name_core = r.name_core", "name_core"),
    ):
        if frame[column].dropna().duplicated().sum() < 2:
            log.info("skipping EM on %s: too few shared values", column)
            continue
        try:
            training.estimate_parameters_using_expectation_maximisation(
                rule, estimate_without_term_frequencies=True
            )
        except Exception as error:  # EM can fail to converge on tiny or degenerate inputs
            log.warning("EM blocked on %s did not train: %s", column, error)


def apply_decisions(pairs: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """Overlay archive staff decisions: ``same`` -> probability 1, ``different`` -> 0.

    Decided pairs the model did not score are added. Adds ``decision`` (None when undecided).
    """
    out = pairs.copy()
    out["decision"] = None
    if decisions is None or decisions.empty:
        return out
    decided = decisions[["id_l", "id_r", "decision"]].astype(str).copy()
    decided["decision"] = decided["decision"].str.strip().str.lower()
    bad = ~decided["decision"].isin(["same", "different"])
    if bad.any():
        raise ValueError(f"review decisions must be same|different, got {decided[bad].head()}")
    low = decided[["id_l", "id_r"]].min(axis=1)
    high = decided[["id_l", "id_r"]].max(axis=1)
    decided = decided.assign(id_l=low, id_r=high).drop_duplicates(["id_l", "id_r"], keep="last")
    out = out.drop(columns="decision").merge(decided, on=["id_l", "id_r"], how="outer")
    out.loc[out["decision"] == "same", "match_probability"] = 1.0
    out.loc[out["decision"] == "different", "match_probability"] = 0.0
    out["decision"] = out["decision"].astype(object).where(out["decision"].notna(), None)
    return out.reset_index(drop=True)


def cluster(ids: pd.Series, pairs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Cluster records: union pairs at or above ``threshold``, strongest first.

    A union is refused when it would put two records decided ``different`` into one cluster,
    so archive decisions always hold. Returns ``unique_id, cluster_id`` (the smallest member
    id), one row per record in ``ids``.
    """
    members = pd.Index(ids.astype(str).unique())
    position = {uid: i for i, uid in enumerate(members)}
    parent = np.arange(len(members))
    cannot: dict[int, set[int]] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    if "decision" in pairs.columns:
        for left, right in pairs.loc[pairs["decision"] == "different", ["id_l", "id_r"]].itertuples(
            index=False
        ):
            if left in position and right in position:
                a, b = position[left], position[right]
                cannot.setdefault(a, set()).add(b)
                cannot.setdefault(b, set()).add(a)
    strong = pairs[pairs["match_probability"] >= threshold]
    strong = strong.sort_values(["match_probability", "id_l", "id_r"], ascending=[False, True, True])
    for left, right in strong[["id_l", "id_r"]].itertuples(index=False):
        if left not in position or right not in position:
            continue
        a, b = find(position[left]), find(position[right])
        if a == b:
            continue
        forbidden_a, forbidden_b = cannot.get(a, set()), cannot.get(b, set())
        if any(find(c) == b for c in forbidden_a) or any(find(c) == a for c in forbidden_b):
            continue
        small, big = (a, b) if a < b else (b, a)
        parent[big] = small
        merged = forbidden_a | forbidden_b
        if merged:
            cannot[small] = merged
            cannot.pop(big, None)
    roots = np.array([find(i) for i in range(len(members))])
    frame = pd.DataFrame({"unique_id": members, "root": roots})
    frame["cluster_id"] = frame.groupby("root")["unique_id"].transform("min")
    return frame[["unique_id", "cluster_id"]]


def pair_evidence(pairs: pd.DataFrame, level_labels: dict[str, dict[int, str]]) -> pd.Series:
    """A readable evidence string per pair: ``name=bigram jaccard >= 0.7; phone=exact; …``."""
    parts = []
    for name, labels in level_labels.items():
        column = f"gamma_{name}"
        if column not in pairs.columns:
            continue
        gamma = pairs[column].fillna(-1).astype(int)
        parts.append(name + "=" + gamma.map(labels).fillna("n/a").astype(str))
    if not parts:
        return pd.Series([""] * len(pairs), index=pairs.index, dtype=object)
    evidence = parts[0]
    for part in parts[1:]:
        evidence = evidence + "; " + part
    return evidence
