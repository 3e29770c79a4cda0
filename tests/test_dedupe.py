"""Tests of the generic CSV dedupe on small labelled exports."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipeline.bench_resolution import pairwise_scores, staging_from_sources
from pipeline.dedupe import dedupe, read_fields
from pipeline.demo import generate_demo_sources
from pipeline.resolution import combine_sources

FIELDS_YAML = """\
company: company_name
tel: phone
mail: email
street: address
tax_no: identifier
"""


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """An export with other column names, built from a small demo set, with its truth."""
    folder = tmp_path_factory.mktemp("export")
    generate_demo_sources(folder / "src", customers=60, seed=9, as_of=date(2026, 11, 23))
    records = combine_sources(staging_from_sources(folder / "src"))
    export = pd.DataFrame(
        {
            "rec": records["unique_id"],
            "company": records["customer_name"],
            "tel": records["phone"],
            "mail": records["email"],
            "street": records["address"],
            "tax_no": records["uscc"],
        }
    )
    path = folder / "export.csv"
    export.to_csv(path, index=False)
    truth = pd.read_csv(folder / "src" / "truth" / "entities.csv", dtype=str)
    truth = pd.DataFrame(
        {
            "unique_id": truth["source_system"] + ":" + truth["source_record_id"],
            "label": truth["entity_id"],
        }
    )
    return path, truth


def test_dedupe_writes_pairs_and_clusters_for_every_record(tmp_path: Path, labelled_csv) -> None:
    path, truth = labelled_csv
    fields = tmp_path / "fields.yaml"
    fields.write_text(FIELDS_YAML, encoding="utf-8")
    pairs_path, clusters_path = dedupe(path, "rec", fields, tmp_path / "out")
    pairs = pd.read_csv(pairs_path, dtype={"id_l": str, "id_r": str})
    clusters = pd.read_csv(clusters_path, dtype=str)
    source = pd.read_csv(path, dtype=str)
    assert list(pairs.columns) == ["id_l", "id_r", "match_probability"]
    assert list(clusters.columns) == ["id", "cluster_id"]
    assert sorted(clusters["id"]) == sorted(source["rec"])
    assert (pairs["match_probability"] >= 0.5).all()
    scores = pairwise_scores(
        clusters.rename(columns={"id": "unique_id", "cluster_id": "label"}), truth
    )
    assert scores["precision"] >= 0.95
    assert scores["recall"] >= 0.9


def test_dedupe_latin_export_with_person_names_and_dates(tmp_path: Path) -> None:
    rows = [
        ("1", "Acme Trading Co., Ltd.", "John Smith", "+1 415 555 0100", "1990-01-02"),
        ("2", "ACME TRADING CO LTD", "john smith", "(415) 555-0100", "1990/01/02"),
        ("3", "Birch Logistics Inc", "Mary Jones", "+1 212 555 0199", "1985-05-05"),
        ("4", "Cedar Foods LLC", "Peter Brown", "+1 312 555 0142", "1970-07-07"),
        ("5", "Dune Mining Corp", "Sara White", "+1 617 555 0173", "1982-03-04"),
        ("6", "Elm Textiles GmbH", "Ana Black", "+49 30 1234567", "1979-11-12"),
    ]
    csv = tmp_path / "export.csv"
    pd.DataFrame(rows, columns=["id", "firm", "person", "tel", "born"]).to_csv(csv, index=False)
    fields = tmp_path / "fields.yaml"
    fields.write_text("firm: company_name\nperson: person_name\ntel: phone\nborn: date\n")
    _, clusters_path = dedupe(csv, "id", fields, tmp_path / "out")
    clusters = pd.read_csv(clusters_path, dtype=str).set_index("id")["cluster_id"]
    assert len(clusters) == 6
    assert clusters["1"] == clusters["2"]
    assert clusters.drop(["1", "2"]).nunique() == 4


def test_unknown_role_and_missing_column_are_errors(tmp_path: Path) -> None:
    fields = tmp_path / "fields.yaml"
    fields.write_text("name: nickname\n")
    with pytest.raises(ValueError, match="unknown roles"):
        read_fields(fields)
    csv = tmp_path / "in.csv"
    pd.DataFrame({"id": ["1", "2"], "name": ["a", "b"]}).to_csv(csv, index=False)
    fields.write_text("company: company_name\n")
    with pytest.raises(ValueError, match="not in the input"):
        dedupe(csv, "id", fields, tmp_path / "out")
