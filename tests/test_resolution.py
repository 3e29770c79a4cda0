"""Tests of the customer resolution stage on a small demo warehouse."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from pipeline.bench_resolution import staging_from_sources
from pipeline.demo import generate_demo_sources
from pipeline.quarters import Quarter
from pipeline.resolution import SOURCE_TABLES, golden_records, read_decisions_file, run
from pipeline.settings import ResolutionSettings, Settings
from pipeline.stages import StageContext
from pipeline.transform.standardize import standardize_customers
from pipeline.warehouse import create_engine, read_table, replace_table


@pytest.fixture(scope="module")
def staged(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    source_dir = tmp_path_factory.mktemp("sources")
    generate_demo_sources(source_dir, customers=40, seed=5, as_of=date(2026, 11, 23))
    truth = pd.read_csv(Path(source_dir) / "truth" / "entities.csv", dtype=str)
    return staging_from_sources(source_dir), truth


def _context(
    tmp_path: Path, decisions_file: Path | None = None, batch_id: str = "b1"
) -> StageContext:
    settings = Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
        resolution=ResolutionSettings(decisions_file=decisions_file),
    )
    return StageContext(
        settings=settings,
        engine=create_engine(settings.warehouse_url),
        quarter=Quarter.parse("2026Q3"),
        batch_id=batch_id,
        extracted_at=datetime(2026, 10, 1),
    )


def _load(ctx: StageContext, frames: dict[str, pd.DataFrame]) -> None:
    for system, table in SOURCE_TABLES.items():
        replace_table(ctx.engine, table, frames[system])


def _xref(ctx: StageContext) -> pd.Series:
    xref = read_table(ctx.engine, "core_customer_xref")
    return xref.set_index(xref["source_system"] + ":" + xref["source_record_id"])["customer_id"]


def test_known_merge_and_tables(tmp_path: Path, staged) -> None:
    frames, truth = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    result = run(ctx)
    xref = _xref(ctx)
    # Every source customer record is mapped, ids look like CUST-000001.
    assert len(xref) == sum(len(f) for f in frames.values())
    assert xref.str.fullmatch(r"CUST-\d{6}").all()
    # A known merge: the entity with the most records across systems is one customer.
    truth_ids = truth["source_system"] + ":" + truth["source_record_id"]
    biggest = truth.groupby("entity_id").size().idxmax()
    members = truth_ids[truth["entity_id"] == biggest]
    assert len(members) >= 2
    assert xref.loc[members].nunique() == 1
    customers = read_table(ctx.engine, "core_customers")
    assert customers["customer_id"].is_unique
    assert len(customers) == result.rows_out == xref.nunique()
    lineage = customers["name_source"].dropna()
    assert lineage.str.fullmatch(r"(sales|service|finance):\S+").all()
    for column in ("core_match_review",):
        review = read_table(ctx.engine, column)
        assert {"id_l", "id_r", "match_probability", "evidence"} <= set(review.columns)


def _events(ctx: StageContext) -> pd.DataFrame:
    return read_table(ctx.engine, "core_resolution_events")


def test_first_run_records_every_merge_with_evidence(tmp_path: Path, staged) -> None:
    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    result = run(ctx)
    xref = _xref(ctx)
    events = _events(ctx)
    # Every golden record formed from two or more source records is one merge event.
    sizes = xref.groupby(xref).size()
    multi = set(sizes.index[sizes >= 2])
    assert len(multi) > 0
    assert (events["event_type"] == "merge").all()
    assert set(events["customer_id"]) == multi and events["customer_id"].is_unique
    assert result.detail["merges"] == result.detail["events_recorded"] == len(multi)
    for event in events.itertuples(index=False):
        members = set(xref.index[xref == event.customer_id])
        assert set(event.source_records.split(",")) == members
        assert 0.9 <= event.match_probability <= 1.0
        assert event.fields_agreed  # e.g. "name (exact), phone (exact)"
        assert "p=" in event.evidence and "~" in event.evidence
        assert event.other_customer_ids in ("", None)
    assert events["batch_id"].eq("b1").all() and events["quarter"].eq("2026Q3").all()
    # Rerunning the same batch, and running a new batch on the same data, add nothing.
    run(ctx)
    again = run(_context(tmp_path, batch_id="b2"))
    assert again.detail["events_recorded"] == 0
    pd.testing.assert_frame_equal(_events(ctx), events)


def test_rerun_with_new_records_keeps_existing_ids(tmp_path: Path, staged) -> None:
    frames, _ = staged
    ctx = _context(tmp_path)
    # Run 1 sees half the sales records and finance records with blanked phones/emails;
    # run 2 adds the other sales records and restores the changed finance records.
    first_sales = frames["sales"].iloc[: len(frames["sales"]) // 2]
    changed = frames["finance"].copy()
    changed.loc[changed.index[::3], ["phone", "email"]] = None
    _load(ctx, {**frames, "sales": first_sales, "finance": changed})
    run(ctx)
    before = _xref(ctx)
    first_events = _events(ctx)
    ctx = _context(tmp_path, batch_id="b2")
    _load(ctx, frames)
    result = run(ctx)
    after = _xref(ctx)
    events = _events(ctx)
    events = events[events["batch_id"] == "b2"]
    assert len(after) > len(before)
    assert events["event_id"].isin(first_events["event_id"]).sum() == 0
    kept = before.index.intersection(after.index)
    assert len(kept) == len(before)
    changed_ids = kept[before.loc[kept] != after.loc[kept]]
    # Strict: every changed id is explained by a recorded merge or split naming the record,
    # its old id and its new id; every other existing record keeps its id.
    explained = set()
    for event in events.itertuples(index=False):
        ids = {event.customer_id, *filter(None, (event.other_customer_ids or "").split(","))}
        for record in event.source_records.split(","):
            if record in before.index and {before[record], after[record]} <= ids:
                explained.add(record)
    # The seeded data holds such a case: a new sales record joins two earlier customers.
    assert len(changed_ids) >= 1
    unexplained = [r for r in changed_ids if r not in explained]
    assert unexplained == [], [(r, before[r], after[r]) for r in unexplained]
    assert (before.drop(changed_ids) == after.loc[before.index.drop(changed_ids)]).all()
    # New records that joined existing customers are recorded as merges into those ids.
    new = after.index.difference(before.index)
    joined = new[after.loc[new].isin(set(before))]
    recorded = set(
        ",".join(events.loc[events["event_type"] == "merge", "source_records"]).split(",")
    )
    assert set(joined) <= recorded
    assert result.detail["events_recorded"] == len(events)


def test_archive_different_decision_holds_against_the_model(tmp_path: Path, staged) -> None:
    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    run(ctx)
    xref = _xref(ctx)
    shared = xref[xref.duplicated(keep=False)]
    pair = shared[shared == shared.iloc[0]].index[:2]
    decisions_file = tmp_path / "decisions.csv"
    pd.DataFrame({"id_l": [pair[0]], "id_r": [pair[1]], "decision": ["different"]}).to_csv(
        decisions_file, index=False
    )
    ctx2 = _context(tmp_path, decisions_file)
    result = run(ctx2)
    xref2 = _xref(ctx2)
    assert xref2.loc[pair[0]] != xref2.loc[pair[1]]
    assert result.detail["splits"] >= 1
    events = read_table(ctx.engine, "core_resolution_events")
    assert (events["event_type"] == "split").any()
    assert events["quarter"].eq("2026Q3").all()


def test_missing_decisions_file_is_an_error(tmp_path: Path, staged) -> None:
    frames, _ = staged
    ctx = _context(tmp_path, tmp_path / "nope.csv")
    _load(ctx, frames)
    with pytest.raises(FileNotFoundError):
        run(ctx)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"decisions\.csv is empty \(rule: a header row id_l,id_r,decision"),
        (
            "left,right,verdict\nsales:C1,sales:C2,same\n",
            r"decisions\.csv row 1: header is 'left,right,verdict', expected 'id_l,id_r,decision'",
        ),
        (
            "id_l,id_r,decision\nsales:C1,sales:C2,same\nsales:C1,sales:C3,yes\n",
            r"decisions\.csv row 3: decision 'yes' is not same or different",
        ),
        (
            "id_l,id_r,decision\nsales:C1,sales:C2,same,different\n",
            r"decisions\.csv row 2: 4 fields, expected 3",
        ),
        ("id_l,id_r,decision\nsales:C1,,same\n", r"decisions\.csv row 2: blank id"),
    ],
    ids=["empty", "wrong-header", "unknown-word", "extra-field", "blank-id"],
)
def test_bad_decisions_file_names_file_and_row(
    tmp_path: Path, staged, text: str, message: str
) -> None:
    frames, _ = staged
    decisions_file = tmp_path / "decisions.csv"
    decisions_file.write_text(text, encoding="utf-8")
    ctx = _context(tmp_path, decisions_file)
    _load(ctx, frames)
    with pytest.raises(ValueError, match=message):
        run(ctx)


def test_decisions_file_in_gbk_is_read_and_unreadable_bytes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "decisions.csv"
    path.write_bytes("id_l,id_r,decision\nfinance:客户1,sales:C1,same\n".encode("gbk"))
    decisions = read_decisions_file(path)
    assert decisions[["id_l", "id_r", "decision"]].values.tolist() == [
        ["finance:客户1", "sales:C1", "same"]
    ]
    path.write_bytes(b"id_l,id_r,decision\nsales:\xff\x80,sales:C1,same\n")
    with pytest.raises(ValueError, match=r"decisions_file .*decisions\.csv: .*line 2, bytes ff"):
        read_decisions_file(path)


def test_decisions_file_from_excel_and_unknown_ids_and_uscc_conflicts(
    tmp_path: Path, staged, caplog: pytest.LogCaptureFixture
) -> None:
    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    run(ctx)
    xref = _xref(ctx)
    customers = read_table(ctx.engine, "core_customers").dropna(subset=["uscc"])
    first, second = customers["uscc_source"].iloc[:2]
    # Excel's UTF-8 with BOM, CRLF, a blank line, upper case; a typo'd id; two USCCs.
    decisions_file = tmp_path / "decisions.csv"
    decisions_file.write_bytes(
        (
            "\ufeffid_l,id_r,decision\r\n"
            f"{first},{second},SAME\r\n\r\n"
            "sales:NOPE,sales:C000001,different\r\n"
        ).encode()
    )
    with caplog.at_level("WARNING", logger="pipeline.resolution"):
        run(_context(tmp_path, decisions_file, batch_id="b2"))
    after = _xref(ctx)
    assert after[first] == after[second] != xref[second]
    text = caplog.text
    assert "decisions.csv row 4: decision names sales:NOPE, not a customer record" in text
    assert f"decisions.csv row 2: decided same for {first}" in text
    assert "two different valid USCCs" in text


def test_survivorship_prefers_source_priority_then_recency() -> None:
    records = pd.DataFrame(
        {
            "unique_id": ["service:S1", "sales:C1", "sales:C2"],
            "source_system": ["service", "sales", "sales"],
            "source_record_id": ["S1", "C1", "C2"],
            "customer_id": ["CUST-000001"] * 3,
            "customer_name": ["华信科技有限公司", "华信科技股份有限公司", "华信科技(股份)有限公司"],
            "uscc": [None, "bad", None],
            "phone": ["13812345678", None, "010-12345678"],
            "email": ["a@b.cn", None, None],
            "address": [None, None, None],
            "updated_at": pd.to_datetime(["2026-09-01", "2026-01-01", "2026-06-01"]),
            "created_at": pd.to_datetime(["2020-01-01", "2019-01-01", "2021-01-01"]),
        }
    )
    for column in (
        "legal_representative",
        "industry",
        "province",
        "city",
        "scale",
        "employee_count",
        "annual_revenue_cny",
        "account_manager",
        "account_manager_email",
    ):
        records[column] = None
    golden = golden_records(standardize_customers(records), ["sales", "finance", "service"])
    row = golden.iloc[0]
    assert row["name"] == "华信科技(股份)有限公司" and row["name_source"] == "sales:C2"
    assert row["phone"] == "+861012345678" and row["phone_source"] == "sales:C2"
    assert row["email"] == "a@b.cn" and row["email_source"] == "service:S1"
    assert pd.isna(row["uscc"])
    assert row["created_at"] == pd.Timestamp("2019-01-01")
    assert row["updated_at_source"] == "service:S1"
    # A placeholder from the preferred system is no value: the other system's real one wins.
    records.loc[2, ["customer_name", "industry"]] = ["N/A", "未知"]
    records.loc[0, "industry"] = "软件"
    golden = golden_records(standardize_customers(records), ["sales", "finance", "service"])
    row = golden.iloc[0]
    assert row["name"] == "华信科技股份有限公司" and row["name_source"] == "sales:C1"
    assert row["industry"] == "软件" and row["industry_source"] == "service:S1"


def test_record_that_no_longer_matches_anything_is_a_split(tmp_path: Path, staged) -> None:
    # A record edited into another company keeps no scored pair to its old customer; the
    # split is recorded with that said, not a crash while quoting the (absent) pairs.
    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    run(ctx)
    before = _xref(ctx)
    shared = before[before.duplicated(keep=False)]
    customer = shared.iloc[0]
    moved = next(r for r in shared.index[shared == customer] if r.startswith("sales:"))
    sales = frames["sales"].copy()
    row = sales["source_record_id"].astype(str) == moved.split(":", 1)[1]
    sales.loc[row, ["customer_name", "uscc", "phone", "email", "address"]] = [
        "乌有之乡测试有限公司",
        None,
        None,
        None,
        None,
    ]
    ctx2 = _context(tmp_path, batch_id="b2")
    _load(ctx2, {**frames, "sales": sales})
    result = run(ctx2)
    after = _xref(ctx2)
    assert after[moved] != customer
    assert result.detail["splits"] == 1
    events = _events(ctx2)
    split = events[events["event_type"] == "split"].iloc[0]
    assert split.customer_id == customer and moved in split.source_records.split(",")
    assert "no scored pair links them now" in split.evidence


def test_the_trained_model_is_kept_and_used_again(tmp_path: Path, staged) -> None:
    """A day's few changes do not need a new model: the kept one scores them, so the
    same records give the same customers; other rules, age or many new records retrain."""
    from dataclasses import replace

    from pipeline.resolution import MODEL_TABLE

    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    assert run(ctx).detail["model"] == "trained"
    xref, customers = _xref(ctx), read_table(ctx.engine, "core_customers")
    again = run(_context(tmp_path, batch_id="b2"))
    assert again.detail["model"].startswith("reused")
    pd.testing.assert_series_equal(_xref(ctx), xref)
    pd.testing.assert_frame_equal(read_table(ctx.engine, "core_customers"), customers)
    week_later = replace(ctx, batch_id="b3", extracted_at=datetime(2026, 10, 8))
    assert run(week_later).detail["model"].startswith("trained (the model was trained")
    kept = read_table(ctx.engine, MODEL_TABLE).assign(fingerprint="rules of another version")
    replace_table(ctx.engine, MODEL_TABLE, kept)
    assert run(week_later).detail["model"].startswith("trained (the model's rules")
    _load(ctx, {**frames, "sales": frames["sales"].iloc[: len(frames["sales"]) // 2]})
    assert run(week_later).detail["model"].startswith("trained (records")
    always = replace(
        week_later,
        settings=Settings(
            warehouse_url=ctx.settings.warehouse_url,
            resolution=ResolutionSettings(retrain_after_days=0),
        ),
    )
    assert run(always).detail["model"] == "trained"


def _day(frames: dict[str, pd.DataFrame], day: int) -> dict[str, pd.DataFrame]:
    """A day's changes: edited, added and deleted records in every system. New records
    share a company email domain the kept model has not seen, and phones with old records."""
    sales, service, finance = (frames[s].copy() for s in ("sales", "service", "finance"))
    domain = "@newly-seen-domain.cn"
    if day == 1:
        sales.loc[0, "phone"] = sales.loc[5, "phone"]
        sales.loc[3, "customer_name"] = str(sales.loc[3, "customer_name"]) + "股份"
        sales.loc[12, "email"] = None
        sales = sales.drop(index=7)
        # Two more records of one company, with a domain that is new: their pair is
        # scored with the domain's frequency.
        added = sales.loc[[10, 10]].assign(source_record_id=["C900001", "C900002"], uscc=None)
        added["email"] = ["info" + domain, "sales" + domain]
        sales = pd.concat([sales, added], ignore_index=True)
        service = service.drop(index=2).reset_index(drop=True)
        service.loc[4, "address"] = "上海市浦东新区世纪大道100号"
        finance = pd.concat(
            [finance, finance.loc[[2]].assign(source_record_id="F900001")], ignore_index=True
        )
    else:  # one more record with the new domain: the day-1 records' domain got commoner
        added = sales.loc[[20]].assign(source_record_id="C900003", email="hr" + domain)
        added["phone"] = sales.loc[0, "phone"]
        sales = pd.concat([sales, added], ignore_index=True)
        finance.loc[1, "phone"] = finance.loc[3, "phone"]
    return {"sales": sales, "service": service, "finance": finance}


def _core_tables(engine) -> dict[str, pd.DataFrame]:
    keys = {
        "core_customers": ["customer_id"],
        "core_customer_xref": ["source_system", "source_record_id"],
        "core_match_review": ["id_l", "id_r"],
        "core_resolution_events": ["event_id"],
        # What the next day starts from is the same too.
        "resolution_records": ["unique_id"],
        "resolution_pairs": ["id_l", "id_r"],
    }
    return {
        table: read_table(engine, table).sort_values(columns).reset_index(drop=True)
        for table, columns in keys.items()
    }


@pytest.mark.parametrize(
    ("warehouse", "max_block"), [("sqlite", 100), ("sqlite", 2), ("postgresql", 2)]
)
def test_a_day_of_changes_is_resolved_in_part_as_a_whole_run_would(
    tmp_path: Path, staged, monkeypatch, caplog, warehouse: str, max_block: int
) -> None:
    """With a kept model, a day's few changes are standardized, scored and survived alone,
    and give exactly the tables a whole run gives with that model, also when blocking keys
    become too common (a tiny MAX_BLOCK_SIZE makes them) and when a new email domain gets
    commoner, which moves the score of pairs between unchanged records."""
    import logging
    from contextlib import ExitStack
    from dataclasses import replace

    import sqlalchemy as sa

    from pipeline.resolution import STATE_TABLE
    from pipeline.transform import resolve
    from tests.conftest import postgres_schema

    monkeypatch.setattr(resolve, "MAX_BLOCK_SIZE", max_block)
    frames, _ = staged
    with ExitStack() as stack:
        engines = []
        for name in ("partial", "whole"):
            if warehouse == "postgresql":
                engines.append(stack.enter_context(postgres_schema()))
            else:
                engines.append(create_engine(f"sqlite:///{tmp_path / name}.db"))
        base = _context(tmp_path)
        ctx = replace(base, engine=engines[0])
        _load(ctx, frames)
        assert run(ctx).detail["resolved"] == "whole"
        moved = 0
        for day in (1, 2):
            if day == 2:
                # Archive staff split a customer that no change touches, and join two
                # others: decisions reach customers the day's records do not.
                xref = read_table(ctx.engine, "core_customer_xref")
                xref["unique_id"] = xref["source_system"] + ":" + xref["source_record_id"]
                sizes = xref.groupby("customer_id")["unique_id"].transform("size")
                pair = sorted(xref.loc[sizes >= 2].sort_values("customer_id")["unique_id"][:2])
                alone = xref.loc[sizes == 1].sort_values("customer_id")["unique_id"]
                joined = sorted(alone.iloc[[0, -1]])
                replace_table(
                    ctx.engine,
                    "core_review_decisions",
                    pd.DataFrame(
                        {
                            "id_l": [pair[0], joined[0]],
                            "id_r": [pair[1], joined[1]],
                            "decision": ["different", "same"],
                        }
                    ),
                )
            # The twin starts from the same tables, kept model included, and resolves
            # whole: on day 1 it has no kept state, on day 2 partial resolution is off.
            twin = replace(ctx, engine=engines[1], batch_id=f"day{day}")
            for table in sa.inspect(ctx.engine).get_table_names():
                replace_table(twin.engine, table, read_table(ctx.engine, table))
            if day == 1:
                with twin.engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP TABLE "{STATE_TABLE}"')
            else:
                settings = ctx.settings.model_copy(
                    update={"resolution": ResolutionSettings(partial=False)}
                )
                twin = replace(twin, settings=settings)
            frames = _day(frames, day)
            _load(ctx, frames)
            _load(twin, frames)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="pipeline.resolution"):
                partial = run(replace(ctx, batch_id=f"day{day}"))
            moved += sum(
                int(r.getMessage().split(", ")[2].split(" ")[0])
                for r in caplog.records
                if r.getMessage().startswith("partial:")
            )
            whole = run(twin)
            assert partial.detail["resolved"] == "partial"
            assert whole.detail["resolved"] == "whole"
            assert partial.detail["model"].startswith("reused")
            assert whole.detail["model"].startswith("reused")
            assert {k: v for k, v in partial.detail.items() if k != "resolved"} == {
                k: v for k, v in whole.detail.items() if k != "resolved"
            }
            mine, theirs = _core_tables(ctx.engine), _core_tables(twin.engine)
            for table, frame in mine.items():
                pd.testing.assert_frame_equal(
                    frame, theirs[table], check_exact=True, obj=f"{table} day {day}"
                )
        # The scenario did move keys or domains of unchanged records.
        assert moved > 0


def test_a_run_that_fails_while_writing_leaves_no_kept_state(
    tmp_path: Path, staged, monkeypatch
) -> None:
    """The kept state goes before the core tables change, so after a run that failed part
    way the next run resolves whole rather than from a state the tables have left."""
    from pipeline import resolution

    frames, _ = staged
    ctx = _context(tmp_path)
    _load(ctx, frames)
    run(ctx)
    assert run(_context(tmp_path, batch_id="b2")).detail["resolved"] == "partial"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(resolution, "_write_state", fail)
    _load(ctx, _day(frames, 1))
    with pytest.raises(OSError, match="disk full"):
        run(_context(tmp_path, batch_id="b3"))
    monkeypatch.undo()
    again = run(_context(tmp_path, batch_id="b4"))
    assert again.detail["resolved"] == "whole"
    assert again.detail["model"].startswith("reused")
    assert run(_context(tmp_path, batch_id="b5")).detail["resolved"] == "partial"
