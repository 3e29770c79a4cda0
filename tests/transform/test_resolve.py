"""Tests of the Splink matcher, decisions overlay and constrained clustering."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.bench_resolution import pairwise_scores, staging_from_sources
from pipeline.demo import generate_demo_sources
from pipeline.resolution import combine_sources
from pipeline.transform.resolve import (
    _jaccard,
    _jaccard_at_least,
    apply_decisions,
    blocking_rules,
    cluster,
    email_domain,
    pair_evidence,
    prepare,
    score_pairs,
)
from pipeline.transform.standardize import bigrams, standardize_customers


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    source_dir = tmp_path_factory.mktemp("demo")
    generate_demo_sources(source_dir, customers=60, seed=3, as_of=date(2026, 11, 23))
    records = combine_sources(staging_from_sources(source_dir))
    truth = pd.read_csv(Path(source_dir) / "truth" / "entities.csv", dtype=str)
    truth = pd.DataFrame(
        {
            "unique_id": truth["source_system"] + ":" + truth["source_record_id"],
            "label": truth["entity_id"],
        }
    )
    return standardize_customers(records), truth


def test_name_similarity_counts_characters_not_bytes() -> None:
    frame = pd.DataFrame(
        {"name_core__grams_l": [bigrams("华信科技")], "name_core__grams_r": [bigrams("华信科学")]}
    )
    connection = duckdb.connect()
    connection.register("frame", frame)
    sql = f"SELECT {_jaccard('name_core__grams')} AS s FROM frame"
    similarity = connection.execute(sql).fetchall()[0][0]
    # {华信, 信科} shared of {华信, 信科, 科技, 科学}: 2 / 4 characters-bigrams.
    assert similarity == pytest.approx(0.5)


def test_every_blocking_rule_is_an_equality_join() -> None:
    for rule in blocking_rules():
        assert "=" in rule and " OR " not in rule.upper()


def test_prepare_builds_block_keys_and_grams() -> None:
    records = standardize_customers(
        pd.DataFrame({"unique_id": ["a"], "customer_name": ["华信科技有限公司"]})
    )
    frame = prepare(records)
    row = frame.iloc[0]
    assert row["name_core__head"] == "华信"
    assert row["name_core__mid"] == "信科"
    assert list(row["name_core__grams"]) == bigrams("华信科技")
    assert row["phone_number"] is None


@pytest.fixture(scope="module")
def demo_scored(demo_records):
    records, _ = demo_records
    return score_pairs(records, threshold=0.0)


def test_demo_matches_reach_precision_and_recall(demo_records, demo_scored) -> None:
    records, truth = demo_records
    scored = demo_scored
    pairs = apply_decisions(scored.pairs, None)
    clusters = cluster(records["unique_id"], pairs, 0.9)
    assert len(clusters) == len(records)
    scores = pairwise_scores(clusters.rename(columns={"cluster_id": "label"}), truth)
    assert scores["precision"] >= 0.98
    assert scores["recall"] >= 0.9
    assert (scored.pairs["id_l"] < scored.pairs["id_r"]).all()
    evidence = pair_evidence(scored.pairs.head(3), scored.level_labels)
    assert evidence.str.contains("name=").all()


def test_same_valid_uscc_is_a_deterministic_match(demo_scored) -> None:
    scored = demo_scored
    same = scored.pairs[scored.pairs["gamma_uscc"] == 1]
    assert len(same) > 0
    assert (same["match_probability"] == 1.0).all()


def test_decisions_override_the_model_and_add_unscored_pairs() -> None:
    pairs = pd.DataFrame(
        {
            "id_l": ["a", "b"],
            "id_r": ["b", "c"],
            "match_probability": [0.99, 0.2],
            "match_weight": [9, -2],
        }
    )
    decisions = pd.DataFrame(
        {"id_l": ["b", "c"], "id_r": ["a", "d"], "decision": ["Different", "same"]}
    )
    out = apply_decisions(pairs, decisions).set_index(["id_l", "id_r"])
    assert out.loc[("a", "b"), "match_probability"] == 0.0
    assert out.loc[("a", "b"), "decision"] == "different"
    assert out.loc[("c", "d"), "match_probability"] == 1.0
    assert out.loc[("b", "c"), "decision"] is None


def test_bad_decision_value_is_rejected() -> None:
    pairs = pd.DataFrame({"id_l": ["a"], "id_r": ["b"], "match_probability": [0.9]})
    with pytest.raises(ValueError, match="same\\|different"):
        apply_decisions(pairs, pd.DataFrame({"id_l": ["a"], "id_r": ["b"], "decision": ["maybe"]}))


def test_cannot_link_holds_even_through_a_chain_of_strong_pairs() -> None:
    pairs = pd.DataFrame(
        {
            "id_l": ["a", "b", "a"],
            "id_r": ["b", "c", "c"],
            "match_probability": [0.99, 0.98, 0.0],
            "decision": [None, None, "different"],
        }
    )
    clusters = cluster(pd.Series(["a", "b", "c", "d"]), pairs, 0.9).set_index("unique_id")
    assert clusters.loc["a", "cluster_id"] != clusters.loc["c", "cluster_id"]
    # b joins the stronger side; d stays alone.
    assert clusters.loc["a", "cluster_id"] == clusters.loc["b", "cluster_id"]
    assert clusters.loc["d", "cluster_id"] == "d"


def test_pairs_below_threshold_do_not_cluster() -> None:
    pairs = pd.DataFrame({"id_l": ["a"], "id_r": ["b"], "match_probability": [0.89]})
    clusters = cluster(pd.Series(["a", "b"]), pairs, 0.9)
    assert clusters["cluster_id"].nunique() == 2


def _probe(ids: list[str], names: list[str], emails: list[str], city: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unique_id": ids,
            "source_system": "probe",
            "source_record_id": ids,
            "customer_name": names,
            "email": emails,
            "city": city,
        }
    )


def test_free_mail_and_common_domains_are_weak_evidence(demo_records) -> None:
    records, _ = demo_records
    names = ["深圳市华信电子科技有限公司", "深圳市华信电子贸易有限公司"]
    # Two different companies with similar names in one city: once sharing only 163.com,
    # once sharing their own rare domain, once a domain 40 other companies also use.
    free = _probe(["p:a", "p:b"], names, ["huaxin_kj@163.com", "hx.trade@163.com"], "深圳")
    own = _probe(["p:c", "p:d"], names, ["kj@huaxin-sz.com.cn", "trade@huaxin-sz.com.cn"], "深圳")
    common = _probe(["p:e", "p:f"], names, ["kj@bigpark.cn", "trade@bigpark.cn"], "深圳")
    words = "安宝昌达东丰福广国海恒宏佳嘉金锦康利隆美明南鹏强荣瑞盛顺泰通伟祥"
    others = _probe(
        [f"o:{i}" for i in range(40)],
        [
            words[i % 30] + words[(7 * i + 3) % 30] + words[(3 * i + 11) % 30] + "实业有限公司"
            for i in range(40)
        ],
        [f"sales{i}@bigpark.cn" for i in range(40)],
        "广州",
    )
    probes = standardize_customers(pd.concat([free, own, common, others], ignore_index=True))
    scored = score_pairs(pd.concat([records, probes], ignore_index=True), threshold=0.0)
    pairs = scored.pairs.set_index(["id_l", "id_r"])
    # Sharing only the free-mail domain is no evidence: the pair stays apart, below review.
    assert pairs.loc[("p:a", "p:b"), "match_probability"] < 0.5
    clusters = cluster(pd.Series(["p:a", "p:b"]), scored.pairs, 0.9)
    assert clusters["cluster_id"].nunique() == 2
    # Term-frequency adjustment: a domain shared by many companies weighs far less than a
    # company's own domain (match weights in bits; the pairs differ only in the domain).
    own_weight = pairs.loc[("p:c", "p:d"), "match_weight"]
    common_weight = pairs.loc[("p:e", "p:f"), "match_weight"]
    assert own_weight - common_weight > 2
    assert pairs.loc[("p:c", "p:d"), "gamma_email"] == pairs.loc[("p:e", "p:f"), "gamma_email"]


def test_email_domain_ignores_public_mailbox_providers() -> None:
    assert email_domain("li@huaxin.com.cn") == "huaxin.com.cn"
    for address in ("a@163.com", "b@QQ.com", "c@gmail.com", "d@hotmail.co.uk", None, "nope"):
        assert email_domain(address.lower() if address else address) is None


def test_a_chain_cannot_join_two_different_valid_usccs_unless_decided_same() -> None:
    # a (USCC X) ~ b (no USCC) ~ c (USCC Y): b may join one side, never both.
    pairs = pd.DataFrame(
        {
            "id_l": ["a", "b"],
            "id_r": ["b", "c"],
            "match_probability": [0.99, 0.97],
            "decision": [None, None],
        }
    )
    uscc = pd.Series({"a": "X", "b": None, "c": "Y"})
    clusters = cluster(pd.Series(["a", "b", "c"]), pairs, 0.9, uscc).set_index("unique_id")
    assert clusters.loc["a", "cluster_id"] == clusters.loc["b", "cluster_id"]
    assert clusters.loc["c", "cluster_id"] == "c"
    # Archive staff saying "same" wins over the rule.
    decided = pd.DataFrame(
        {"id_l": ["a"], "id_r": ["c"], "match_probability": [1.0], "decision": ["same"]}
    )
    together = cluster(pd.Series(["a", "c"]), decided, 0.9, uscc)
    assert together["cluster_id"].nunique() == 1


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.6, 0.7])
def test_jaccard_threshold_form_agrees_with_the_ratio(threshold: float) -> None:
    names = ["华信科技", "华信科学", "华信电子科技", "acmetrading", "acmetradings", "华", "ab"]
    rows = [(bigrams(a), bigrams(b)) for a in names for b in names]
    frame = pd.DataFrame(rows, columns=["g_l", "g_r"])
    connection = duckdb.connect()
    connection.register("frame", frame)
    sql = f"SELECT {_jaccard('g')} >= {threshold}, {_jaccard_at_least('g', threshold)} FROM frame"
    results = connection.execute(sql).fetchall()
    assert all(ratio == fast for ratio, fast in results)
    assert any(ratio for ratio, _ in results) and not all(ratio for ratio, _ in results)


@pytest.mark.parametrize("seed", range(20))
def test_clustering_by_components_equals_union_in_order(seed: int) -> None:
    """Connected components stand in for the ordered unions only where no refusal is
    possible: random pairs, keys and decisions give the same clusters either way."""
    from pipeline.transform.resolve import _cluster_in_order

    rng = np.random.default_rng(seed)
    ids = pd.Series([f"r{i:03d}" for i in range(120)])
    chosen = rng.integers(0, len(ids), size=(int(rng.integers(60, 200)), 2))
    chosen = chosen[chosen[:, 0] != chosen[:, 1]]
    pairs = pd.DataFrame(
        {
            "id_l": ids.to_numpy()[chosen.min(axis=1)],
            "id_r": ids.to_numpy()[chosen.max(axis=1)],
            "match_probability": rng.choice([0.95, 0.97, 0.99, 0.5, 1.0], size=len(chosen)),
        }
    ).drop_duplicates(["id_l", "id_r"])
    pairs["decision"] = rng.choice([None, None, None, None, "same", "different"], size=len(pairs))
    pairs.loc[pairs["decision"] == "same", "match_probability"] = 1.0
    pairs.loc[pairs["decision"] == "different", "match_probability"] = 0.0
    keys = pd.Series(
        rng.choice([None, None, None, "K1", "K2", "K3"], size=len(ids)), index=ids.to_numpy()
    )
    fast = cluster(ids, pairs, 0.9, keys)
    slow = _cluster_in_order(ids, pairs, 0.9, keys)
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow.reset_index(drop=True))
    assert fast["cluster_id"].nunique() < len(ids)  # unions happened
