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

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.transform.standardize import bigrams

log = logging.getLogger(__name__)

SEED = 20261123
# Random record pairs sampled to estimate u (probability of agreement among non-matches).
U_SAMPLE_PAIRS = 3e5
# Blocked pairs used per EM session: enough for stable m estimates, bounded for big inputs.
EM_MAX_PAIRS = 3e5
# A blocking key shared by more records than this is no key (placeholder values, a
# switchboard number): those records are compared through their other keys only, so the
# number of candidate pairs stays close to linear in the number of records.
MAX_BLOCK_SIZE = 100
# Floor of a term frequency: one rare domain cannot outweigh everything else.
TF_MINIMUM_U = 1e-4
# Public mailbox providers: a shared domain says nothing about the company, however the
# data set's own frequencies look (a small export may hold just two 163.com addresses).
FREE_MAIL_DOMAINS = frozenset(
    {
        "163.com",
        "126.com",
        "yeah.net",
        "qq.com",
        "vip.qq.com",
        "foxmail.com",
        "sina.com",
        "sina.cn",
        "vip.sina.com",
        "sohu.com",
        "aliyun.com",
        "139.com",
        "189.cn",
        "wo.cn",
        "tom.com",
        "21cn.com",
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "hotmail.co.uk",
        "live.com",
        "live.co.uk",
        "msn.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.com.cn",
        "ymail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "protonmail.com",
        "proton.me",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "yandex.ru",
        "mail.ru",
        "zoho.com",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
    }
)


@dataclass(frozen=True)
class MatchField:
    """One compared attribute of a record.

    ``kind``: ``text`` (exact, then character-bigram Jaccard at ``thresholds``), ``exact``,
    ``email`` (exact, then same domain with a term-frequency adjustment) or ``date`` (exact, then same year). ``block``: pairs
    sharing the exact value are candidates. ``block_prefix``: pairs sharing characters 1-2
    (or 2-3) are candidates, together with equal ``context`` when given.
    ``decisive``: an exact match is a match (probability 1) whatever else differs.
    """

    name: str
    column: str
    kind: str = "exact"
    thresholds: tuple[float, ...] = ()
    block: bool = False
    block_prefix: bool = False
    context: str | None = None
    decisive: bool = False


CUSTOMER_FIELDS = (
    MatchField(
        "name",
        "name_core",
        "text",
        (0.7, 0.5, 0.3),
        block=True,
        block_prefix=True,
        context="city_std",
    ),
    MatchField("uscc", "uscc_valid", block=True, decisive=True),
    MatchField("phone", "phone_number", block=True),
    MatchField("email", "email_std", "email", block=True),
    MatchField("address", "address_std", "text", (0.6, 0.3), block=True),
    MatchField("city", "city_std"),
)


def email_domain(email: str | None) -> str | None:
    """The domain that can tell companies apart: None for public mailbox providers."""
    if not isinstance(email, str) or "@" not in email:
        return None
    domain = email.rpartition("@")[2].strip().lower()
    return None if not domain or domain in FREE_MAIL_DOMAINS else domain


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


def _jaccard_at_least(column: str, threshold: float) -> str:
    """``_jaccard(column) >= threshold`` with one list intersection and no union list.

    The gram lists hold distinct grams, so |union| = |l| + |r| - |shared| and
    |shared| / |union| >= t  <=>  |shared| >= t * (|l| + |r|) / (1 + t): several times
    cheaper in DuckDB than building the union.
    """
    left, right = f"{column}_l", f"{column}_r"
    return (
        f"len(list_intersect({left}, {right}))"
        f" >= {threshold!r} * (len({left}) + len({right})) / {1 + threshold!r}"
    )


def _level(sql: str, label: str) -> dict[str, Any]:
    return {"sql_condition": sql, "label_for_charts": label}


def _comparison(field: MatchField) -> dict[str, Any]:
    column = field.column
    levels = [_null(column), _level(f"{column}_l = {column}_r", "exact")]
    if field.kind == "text":
        for threshold in field.thresholds:
            levels.append(
                _level(
                    _jaccard_at_least(column + "__grams", threshold),
                    f"bigram jaccard >= {threshold}",
                )
            )
    elif field.kind == "email":
        # Same company domain, weighted by how common the domain is in the data (term-
        # frequency adjustment): a domain many companies share says less than a company's
        # own. Public mailbox domains (163.com, gmail.com) never count as the same domain.
        domain = f"{column}__domain"
        same_domain = _level(f"{domain}_l = {domain}_r", "same domain")
        same_domain["tf_adjustment_column"] = domain
        same_domain["tf_adjustment_weight"] = 1.0
        same_domain["tf_minimum_u_value"] = TF_MINIMUM_U
        levels.append(same_domain)
    elif field.kind == "date":
        # ISO dates (ASCII, so byte distance = character distance): one typed digit off.
        levels.append(_level(f"levenshtein({column}_l, {column}_r) <= 1", "one digit differs"))
        levels.append(_level(f"left({column}_l, 4) = left({column}_r, 4)", "same year"))
    levels.append({"sql_condition": "ELSE", "label_for_charts": "different"})
    return {"output_column_name": field.name, "comparison_levels": levels}


def comparisons(fields: tuple[MatchField, ...] = CUSTOMER_FIELDS) -> list[dict[str, Any]]:
    """The model's comparisons, one per field (by default: customer name, USCC, phone…)."""
    return [_comparison(field) for field in fields]


def blocking_rules(fields: tuple[MatchField, ...] = CUSTOMER_FIELDS) -> list[str]:
    """Candidate-pair rules: each is an equality on a selective key, so cost is ~linear.

    Keys are the ``__key`` / ``__head`` / ``__mid`` columns of :func:`prepare`, blank where
    more than :data:`MAX_BLOCK_SIZE` records share them.
    """
    rules = []
    for column, context in key_columns(fields, with_context=True):
        rule = f"l.{column} = r.{column}"
        if context:
            rule += f" AND l.{context} = r.{context}"
        rules.append(rule)
    return rules


def prepare(
    records: pd.DataFrame, fields: tuple[MatchField, ...] = CUSTOMER_FIELDS
) -> pd.DataFrame:
    """The Splink input: one row per record, match columns plus character-bigram lists."""
    return add_grams(match_keys(records, fields), fields)


def match_keys(
    records: pd.DataFrame, fields: tuple[MatchField, ...] = CUSTOMER_FIELDS
) -> pd.DataFrame:
    """One row per record: ``unique_id``, the match columns, the email domains and the
    blocking keys, capped over all of ``records`` (no bigrams: :func:`add_grams`)."""
    frame = pd.DataFrame({"unique_id": records["unique_id"].astype(str).to_numpy()})
    columns = {f.column for f in fields} | {f.context for f in fields if f.context}
    for column in sorted(columns):
        source = (
            records[column].to_numpy(dtype=object)
            if column in records.columns
            else [None] * len(records)
        )
        frame[column] = pd.Series(
            [v if isinstance(v, str) and v else None for v in source], dtype=object
        )
    for field in fields:
        values = frame[field.column]
        if field.kind == "email":
            frame[field.column + "__domain"] = pd.Series(
                [email_domain(v) for v in values], dtype=object
            )
        if field.block:
            frame[field.column + "__key"] = _capped(frame, [field.column])
        if field.block_prefix:
            # Block keys from the distinctive start of a name (the end is often the industry
            # word: 科技, 贸易, Trading): CJK characters 1-2 and 2-3; Latin letters 1-5 and 6-10
            # (two Latin letters are far less selective than two Chinese characters).
            keys = [_prefix_keys(v) for v in values]
            frame[field.column + "__head"] = pd.Series([k[0] for k in keys], dtype=object)
            frame[field.column + "__mid"] = pd.Series([k[1] for k in keys], dtype=object)
            context = [field.context] if field.context else []
            for part in ("head", "mid"):
                column = f"{field.column}__{part}"
                frame[column] = _capped(frame, [column, *context])
    return frame


def key_columns(
    fields: tuple[MatchField, ...] = CUSTOMER_FIELDS, with_context: bool = False
) -> list[Any]:
    """The blocking-key columns of :func:`match_keys`: a record's candidate pairs are the
    records sharing one of them (and its context column, if any). ``with_context``:
    (column, context column or None) pairs."""
    columns: list[tuple[str, str | None]] = []
    for field in fields:
        if field.block:
            columns.append((f"{field.column}__key", None))
        if field.block_prefix:
            columns += [(f"{field.column}__{part}", field.context) for part in ("head", "mid")]
    return columns if with_context else [column for column, _ in columns]


def add_grams(
    frame: pd.DataFrame, fields: tuple[MatchField, ...] = CUSTOMER_FIELDS
) -> pd.DataFrame:
    """``frame`` (of :func:`match_keys`) with the character bigrams of its text fields."""
    frame = frame.copy()
    for field in fields:
        if field.kind == "text":
            frame[field.column + "__grams"] = [bigrams(v) for v in frame[field.column]]
    return frame


def term_frequencies(
    frame: pd.DataFrame,
    fields: tuple[MatchField, ...] = CUSTOMER_FIELDS,
    kept: TermFrequencies | None = None,
) -> TermFrequencies:
    """Per term-frequency column of :func:`match_keys`: each value's share of the records
    that have one, as Splink computes it. With ``kept`` (a kept model's frequencies) the
    kept shares stand and a value new since then counts against the kept total, so a
    day's records change no pair's score except through the values they hold."""
    columns = {}
    for field in fields:
        if field.kind != "email":
            continue
        column = f"{field.column}__domain"
        counts = frame[column].dropna().value_counts(sort=False)
        kept_column = None if kept is None else kept.columns.get(column)
        total = int(counts.sum()) if kept_column is None else kept_column[1]
        shares = counts.astype("float64") / max(total, 1)
        if kept_column is not None:
            known = kept_column[0].reindex(shares.index)
            shares = known.where(known.notna(), shares)
        shares.index.name = column
        columns[column] = (shares.rename(f"tf_{column}").sort_index(), total)
    return TermFrequencies(columns)


@dataclass(frozen=True)
class TermFrequencies:
    """Per column: (value -> share of the records with a value, the number of those records)."""

    columns: dict[str, tuple[pd.Series, int]]

    def to_json(self) -> str:
        return json.dumps(
            {
                name: {"total": total, "shares": {str(k): float(v) for k, v in shares.items()}}
                for name, (shares, total) in self.columns.items()
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> TermFrequencies:
        columns = {}
        for name, kept in json.loads(text).items():
            shares = pd.Series(kept["shares"], dtype="float64", name=f"tf_{name}")
            shares.index = shares.index.astype(object)
            shares.index.name = name
            columns[name] = (shares, int(kept["total"]))
        return cls(columns)


def _prefix_keys(value: object) -> tuple[str | None, str | None]:
    if not isinstance(value, str) or not value:
        return None, None
    if value[0].isascii():
        return (value[:5] if len(value) >= 5 else None), (value[5:10] if len(value) >= 10 else None)
    return (value[:2] if len(value) >= 2 else None), (value[1:3] if len(value) >= 3 else None)


def _capped(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """``columns[0]``, blank where more than MAX_BLOCK_SIZE records share the key."""
    # group numbers by factorizing (a missing value is a group of its own, as a groupby
    # with dropna=False has it), sizes by counting them: 20x faster than a groupby
    group = np.zeros(len(frame), dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        group = pd.factorize(group * (len(uniques) + 1) + codes)[0]
    sizes = np.bincount(group, minlength=1)[group] if len(group) else group
    keep = frame[columns[0]].notna().to_numpy() & (sizes <= MAX_BLOCK_SIZE)
    key = frame[columns[0]].where(keep, None)
    dropped = frame[columns[0]].notna() & ~keep
    if dropped.any():
        log.info("blocking: %s records share over-common %s values", int(dropped.sum()), columns)
    return key.astype(object)


@dataclass(frozen=True)
class ScoredPairs:
    """Scored candidate pairs (one row per pair, ``id_l < id_r``), the level labels, the
    model that scored them (Splink's settings with their trained parameters), the term
    frequencies it scored with and the records' :func:`match_keys`."""

    pairs: pd.DataFrame
    level_labels: dict[str, dict[int, str]]
    model: dict[str, Any] | None = None
    frequencies: TermFrequencies | None = None
    keys: pd.DataFrame | None = None


def _level_labels(fields: tuple[MatchField, ...]) -> dict[str, dict[int, str]]:
    labels: dict[str, dict[int, str]] = {}
    for comparison in comparisons(fields):
        levels = comparison["comparison_levels"]
        non_null = [lv for lv in levels if not lv.get("is_null_level")]
        mapping = {-1: "missing"}
        for index, level in enumerate(non_null):
            mapping[len(non_null) - 1 - index] = level["label_for_charts"]
        labels[comparison["output_column_name"]] = mapping
    return labels


def model_fingerprint(fields: tuple[MatchField, ...] = CUSTOMER_FIELDS) -> str:
    """What a trained model depends on besides the records: the comparisons and blocking
    rules, the code that prepares and trains, and Splink's version."""
    import hashlib

    from pipeline import memo
    from pipeline.transform import standardize

    described = json.dumps([comparisons(fields), blocking_rules(fields)], sort_keys=True)
    code = memo.code_version([sys.modules[__name__], standardize], ["splink"])
    return hashlib.sha256(f"{described} {code}".encode()).hexdigest()[:16]


EMPTY_PAIRS = ("id_l", "id_r", "match_probability", "match_weight")


def score_pairs(
    records: pd.DataFrame,
    threshold: float = 0.0,
    fields: tuple[MatchField, ...] = CUSTOMER_FIELDS,
    model: dict[str, Any] | None = None,
    frequencies: TermFrequencies | None = None,
) -> ScoredPairs:
    """Train the model (u by seeded random sampling, m by EM) and score candidate pairs;
    with ``model`` (a :attr:`ScoredPairs.model` of the same fields) and its
    ``frequencies`` score with it instead.

    A pair matching exactly on a ``decisive`` field (the customer model: same valid USCC)
    is a deterministic match (probability 1). Returns pairs with ``id_l < id_r``,
    ``match_probability, match_weight`` and one ``gamma_<field>`` per field.
    """
    from splink import DuckDBAPI, Linker, SettingsCreator

    keys = match_keys(records, fields)
    frame = add_grams(keys, fields)
    labels = _level_labels(fields)
    if len(frame) < 2:
        return ScoredPairs(pd.DataFrame(columns=list(EMPTY_PAIRS)), labels, keys=keys)
    frequencies = term_frequencies(frame, fields, frequencies if model is not None else None)
    db_api = DuckDBAPI()
    table = db_api.register(frame, dataset_display_name="records")
    if model is not None:
        linker = Linker(table, model, log_level=logging.WARNING)
        _register_frequencies(linker, db_api, frequencies)
        log.info("scoring with the stored model")
        return _predict(linker, threshold, fields, labels, model, frequencies, keys)
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comparisons(fields),
        blocking_rules_to_generate_predictions=blocking_rules(fields),
        retain_intermediate_calculation_columns=True,
        retain_matching_columns=True,  # gives the gamma_* columns (Splink 5)
        probability_two_random_records_match=max(1.0 / len(frame), 1e-7),
    )
    linker = Linker(table, settings, log_level=logging.WARNING)
    _register_frequencies(linker, db_api, frequencies)
    max_pairs = min(U_SAMPLE_PAIRS, max(1e4, len(frame) * (len(frame) - 1) / 2))
    # One pass over the sample: the chunked probe costs more than it saves at this size.
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=SEED, num_chunks=1)
    log.info("estimated u from %s sampled pairs", int(max_pairs))
    _train_em(linker, frame, fields)
    log.info("trained m by EM")
    return _predict(
        linker, threshold, fields, labels, linker.misc.save_model_to_json(), frequencies, keys
    )


TOUCHED = "crm_touched"


def score_touched(
    frame: pd.DataFrame,
    touched: pd.Series,
    threshold: float,
    model: dict[str, Any],
    frequencies: TermFrequencies,
    fields: tuple[MatchField, ...] = CUSTOMER_FIELDS,
) -> ScoredPairs:
    """Score with a kept ``model`` only the candidate pairs with a ``touched`` record.

    ``frame``: :func:`match_keys` rows, its keys capped over *all* records, holding the
    touched records and every record sharing a blocking key with one; ``frequencies``:
    those of all records (:func:`term_frequencies`). Each pair gets the score it gets
    among all records, because a pair's candidacy and score depend only on its two
    records, their capped keys, the model and the frequencies.
    """
    from splink import DuckDBAPI, Linker

    labels = _level_labels(fields)
    if not touched.any() or len(frame) < 2:
        return ScoredPairs(pd.DataFrame(columns=list(EMPTY_PAIRS)), labels, model, frequencies)
    frame = add_grams(frame, fields)
    frame[TOUCHED] = touched.to_numpy().astype("int8")
    settings = dict(model)
    settings["blocking_rules_to_generate_predictions"] = [
        f"({rule}) AND (l.{TOUCHED} = 1 OR r.{TOUCHED} = 1)" for rule in blocking_rules(fields)
    ]
    db_api = DuckDBAPI()
    table = db_api.register(frame, dataset_display_name="records")
    linker = Linker(table, settings, log_level=logging.WARNING)
    _register_frequencies(linker, db_api, frequencies)
    return _predict(linker, threshold, fields, labels, model, frequencies)


def _register_frequencies(linker: Any, db_api: Any, frequencies: TermFrequencies) -> None:
    for column, (shares, _total) in frequencies.columns.items():
        lookup = shares.rename(f"tf_{column}").reset_index()
        linker.table_management.register_term_frequency_lookup(
            db_api.register(lookup, dataset_display_name=f"tf_{column}"), column
        )


def _predict(
    linker: Any,
    threshold: float,
    fields: tuple[MatchField, ...],
    labels: dict[str, dict[int, str]],
    model: dict[str, Any],
    frequencies: TermFrequencies,
    keys: pd.DataFrame | None = None,
) -> ScoredPairs:
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    # Only the columns used leave DuckDB: converting every intermediate column to pandas
    # more than doubled the stage's peak memory at 100,000 customers.
    relation = predictions.as_duckdbpyrelation()
    gammas = [c for c in relation.columns if c.startswith("gamma_")]
    selected = ["unique_id_l", "unique_id_r", "match_probability", "match_weight", *gammas]
    pairs = relation.select(*selected).df()
    del relation
    predictions.drop_table_from_database_and_remove_from_cache()
    pairs = pairs.rename(columns={"unique_id_l": "id_l", "unique_id_r": "id_r"})
    for field in fields:
        if field.decisive:
            pairs.loc[pairs[f"gamma_{field.name}"] == 1, "match_probability"] = 1.0
    return ScoredPairs(sort_pairs(pairs), labels, model, frequencies, keys)


def sort_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` (changed in place) with ``id_l < id_r``, sorted by them, a fresh index."""
    swap = pairs["id_l"] > pairs["id_r"]
    pairs.loc[swap, ["id_l", "id_r"]] = pairs.loc[swap, ["id_r", "id_l"]].to_numpy()
    return pairs.sort_values(["id_l", "id_r"], kind="stable").reset_index(drop=True)


def _train_em(linker: Any, frame: pd.DataFrame, fields: tuple[MatchField, ...]) -> None:
    """EM for m, blocked in turn on each exact blocking key with enough shared values.

    Each session trains every comparison except the one it blocks on, so two sessions on
    different keys (for customers: phone, then core name) cover all comparisons.
    """
    exact = [f for f in fields if f.block and f.kind != "text" and not f.decisive]
    text = [f for f in fields if f.block and f.kind == "text"]
    # One exact key first (trains the text comparisons), then a text key (trains the rest).
    blocked = exact[:1] + text[:1] + exact[1:] + text[1:]
    sessions = 0
    for field in blocked:
        if sessions == 2:
            break
        key = f"{field.column}__key"
        if frame[key].dropna().duplicated().sum() < 2:
            log.info("skipping EM on %s: too few shared values", field.column)
            continue
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                f"l.{key} = r.{key}",
                estimate_without_term_frequencies=True,
                max_pairs=EM_MAX_PAIRS,
            )
            sessions += 1
        except Exception as error:  # EM can fail to converge on tiny or degenerate inputs
            log.warning("EM blocked on %s did not train: %s", field.column, error)


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


def cluster(
    ids: pd.Series,
    pairs: pd.DataFrame,
    threshold: float,
    exclusive: pd.Series | None = None,
) -> pd.DataFrame:
    """Cluster records: union pairs at or above ``threshold``, strongest first.

    A union is refused when it would put two records decided ``different`` into one cluster,
    so archive decisions always hold. With ``exclusive`` (unique_id -> key, e.g. the valid
    USCC), a union is also refused when both sides already hold keys and share none, so a
    chain of likely pairs cannot join two legal entities; pairs decided ``same`` are exempt.
    Returns ``unique_id, cluster_id`` (the smallest member id), one row per record in ``ids``.

    Only where a refusal is possible does the order matter: a connected group of strong
    pairs holding no ``different`` decision and at most one key is one cluster, found as a
    connected component; the other groups are unioned pair by pair (:func:`_cluster_in_order`).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    members = pd.Index(ids.astype(str).unique())
    strong = pairs[pairs["match_probability"] >= threshold]
    left, right = members.get_indexer(strong["id_l"]), members.get_indexer(strong["id_r"])
    inside = (left >= 0) & (right >= 0)
    graph = coo_matrix(
        (np.ones(int(inside.sum()), dtype=np.int8), (left[inside], right[inside])),
        shape=(len(members), len(members)),
    )
    _, component = connected_components(graph, directed=False)
    hard = np.zeros(len(members), dtype=bool)
    if "decision" in pairs.columns:
        different = pairs[pairs["decision"] == "different"]
        for column in ("id_l", "id_r"):
            position = members.get_indexer(different[column])
            hard[position[position >= 0]] = True
    if exclusive is not None:
        keys = exclusive[exclusive.map(lambda k: isinstance(k, str) and bool(k))]
        keys = keys[~keys.index.duplicated(keep="last")]
        position = members.get_indexer(keys.index.astype(str))
        held = pd.DataFrame(
            {"component": component[position[position >= 0]], "key": keys[position >= 0]}
        )
        several = held.groupby("component")["key"].nunique()
        hard |= np.isin(component, several.index[several > 1].to_numpy())
    hard = np.isin(component, np.unique(component[hard]))
    frame = pd.DataFrame({"unique_id": members, "component": component})
    frame["cluster_id"] = frame.groupby("component")["unique_id"].transform("min")
    if hard.any():
        subset = members[hard]
        among = pairs[pairs["id_l"].isin(subset) & pairs["id_r"].isin(subset)]
        ordered = _cluster_in_order(pd.Series(subset), among, threshold, exclusive)
        frame.loc[hard, "cluster_id"] = ordered["cluster_id"].to_numpy()
    return frame[["unique_id", "cluster_id"]]


def _cluster_in_order(
    ids: pd.Series,
    pairs: pd.DataFrame,
    threshold: float,
    exclusive: pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`cluster`, one union at a time in order of strength (decided ``same`` first)."""
    members = pd.Index(ids.astype(str).unique())
    position = {uid: i for i, uid in enumerate(members)}
    parent = np.arange(len(members))
    cannot: dict[int, set[int]] = {}
    keys: dict[int, frozenset[str]] = {}
    if exclusive is not None:
        for uid, key in exclusive.dropna().items():
            if str(uid) in position and isinstance(key, str) and key:
                keys[position[str(uid)]] = frozenset([key])

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    has_decisions = "decision" in pairs.columns
    if has_decisions:
        for left, right in pairs.loc[pairs["decision"] == "different", ["id_l", "id_r"]].itertuples(
            index=False
        ):
            if left in position and right in position:
                a, b = position[left], position[right]
                cannot.setdefault(a, set()).add(b)
                cannot.setdefault(b, set()).add(a)
    strong = pairs[pairs["match_probability"] >= threshold]
    decided_same = (
        (strong["decision"] == "same").to_numpy()
        if has_decisions
        else np.zeros(len(strong), dtype=bool)
    )
    strong = strong.assign(_same=decided_same).sort_values(
        ["_same", "match_probability", "id_l", "id_r"], ascending=[False, False, True, True]
    )
    for left, right, same in strong[["id_l", "id_r", "_same"]].itertuples(index=False):
        if left not in position or right not in position:
            continue
        a, b = find(position[left]), find(position[right])
        if a == b:
            continue
        forbidden_a, forbidden_b = cannot.get(a, set()), cannot.get(b, set())
        if any(find(c) == b for c in forbidden_a) or any(find(c) == a for c in forbidden_b):
            continue
        keys_a, keys_b = keys.get(a), keys.get(b)
        if not same and keys_a and keys_b and not keys_a & keys_b:
            continue
        small, big = (a, b) if a < b else (b, a)
        parent[big] = small
        merged = forbidden_a | forbidden_b
        if merged:
            cannot[small] = merged
            cannot.pop(big, None)
        if keys_a or keys_b:
            keys[small] = (keys_a or frozenset()) | (keys_b or frozenset())
            keys.pop(big, None)
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


def agreed_fields(pairs: pd.DataFrame, level_labels: dict[str, dict[int, str]]) -> pd.Series:
    """Per pair, the fields that agreed and how: ``name (exact), email (same domain)``.

    A field agrees when its level is above "different" (and not missing). Empty when none did.
    """
    agreed = pd.Series([""] * len(pairs), index=pairs.index, dtype=object)
    for name, labels in level_labels.items():
        column = f"gamma_{name}"
        if column not in pairs.columns:
            continue
        gamma = pairs[column].fillna(-1).astype(int)
        text = ", " + name + " (" + gamma.map(labels).fillna("").astype(str) + ")"
        agreed = agreed + text.where(gamma > 0, "")
    return agreed.str.removeprefix(", ").astype(object)
