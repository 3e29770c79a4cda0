"""The compute_metrics stage end to end on a small demo warehouse (SQLite), with an
independent SQL cross-check of the main quarterly metrics."""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import metrics
from pipeline.datasets import DATASETS
from pipeline.demo import generate_demo_sources
from pipeline.extract import finance, sales, service
from pipeline.quarters import Quarter
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.warehouse import create_engine, frame_digest, read_table, replace_table

Q3 = Quarter(2026, 3)
TZ = "Asia/Shanghai"


def _cast(name: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Type the extract's text output like the validation stage would (valid rows only)."""
    dataset = DATASETS[name]
    out = raw.copy()
    for column in dataset.columns:
        text = out[column.name]
        if column.kind in ("int", "float"):
            numbers = pd.to_numeric(text, errors="coerce")
            out[column.name] = numbers.astype("Int64" if column.kind == "int" else "float64")
        elif column.kind == "date":
            out[column.name] = pd.to_datetime(text, errors="coerce", format="mixed").dt.normalize()
        elif column.kind == "datetime":
            local = pd.to_datetime(text, errors="coerce", format="mixed")
            out[column.name] = (
                local.dt.tz_localize(TZ, ambiguous="NaT", nonexistent="NaT")
                .dt.tz_convert("UTC")
                .dt.tz_localize(None)
            )
        elif column.kind == "bool":
            out[column.name] = text.map({"1": True, "0": False}).astype("boolean")
        elif column.kind == "vocab":
            out[column.name] = text.map(column.vocab)
    required = [c.name for c in dataset.columns if c.required]
    out = out.dropna(subset=["source_record_id", *required])
    return out.drop_duplicates("source_record_id", keep=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("metrics")
    src = root / "src"
    generate_demo_sources(src, customers=200, seed=7, as_of=date(2026, 11, 23))
    settings = Settings(
        warehouse_url=f"sqlite:///{root}/warehouse.db",
        sources={
            "sales_url": f"sqlite:///{src}/sales.db",
            "service_url": f"sqlite:///{src}/service.db",
            "finance_dir": src / "finance",
        },
    )
    chunks: dict[str, list[pd.DataFrame]] = {}
    for adapter in (sales, service, finance):
        for name, chunk in adapter.extract(settings, "b1", datetime(2026, 11, 23)):
            chunks.setdefault(name, []).append(chunk)
    stg = {name: _cast(name, pd.concat(parts, ignore_index=True)) for name, parts in chunks.items()}
    truth = pd.read_csv(src / "truth" / "entities.csv", dtype=str)
    return settings, stg, truth


def _write_core(engine: sa.Engine, stg: dict[str, pd.DataFrame], xref: pd.DataFrame) -> None:
    """core_customer_xref from the generator's truth, core_customers from the sales records."""
    replace_table(engine, "core_customer_xref", xref)
    sales_rows = stg["sales_customers"].merge(
        xref[xref["source_system"] == "sales"], on="source_record_id"
    )
    core = (
        sales_rows[["customer_id", "province", "industry", "account_manager"]]
        .drop_duplicates("customer_id")
        .merge(xref[["customer_id"]].drop_duplicates(), how="right")
    )
    replace_table(engine, "core_customers", core)


def _warehouse(demo, tmp_path, with_core: bool):
    settings, stg, truth = demo
    settings = settings.model_copy(update={"warehouse_url": f"sqlite:///{tmp_path}/wh.db"})
    engine = create_engine(settings.warehouse_url)
    for name, frame in stg.items():
        replace_table(engine, f"stg_{name}", frame)
    if with_core:
        _write_core(engine, stg, truth.rename(columns={"entity_id": "customer_id"}))
    ctx = StageContext(settings, engine, Q3, "b1", datetime(2026, 11, 23))
    return ctx


def _sql_metrics(engine: sa.Engine, quarter: Quarter) -> dict[str, tuple[float, int]]:
    """CSAT, NPS and SLA share of the quarter by plain SQL over the staging tables, counting
    only records mapped to a golden customer."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    params = {
        "start": quarter.start_utc(TZ).strftime(fmt),
        "end": quarter.end_utc(TZ).strftime(fmt),
    }
    mapped = (
        "customer_record_id IN (SELECT source_record_id FROM core_customer_xref "
        "WHERE source_system = 'service')"
    )
    surveys = f"""
        SELECT AVG(CASE WHEN csat_score >= 4 THEN 1.0 ELSE 0.0 END), AVG(csat_score * 1.0),
               COUNT(csat_score)
        FROM stg_service_surveys
        WHERE csat_score IS NOT NULL AND answered_at >= :start AND answered_at < :end AND {mapped}
    """
    nps = f"""
        SELECT 100.0 * (SUM(CASE WHEN nps_score >= 9 THEN 1 ELSE 0 END)
                        - SUM(CASE WHEN nps_score <= 6 THEN 1 ELSE 0 END)) / COUNT(*), COUNT(*)
        FROM stg_service_surveys
        WHERE nps_score IS NOT NULL AND answered_at >= :start AND answered_at < :end AND {mapped}
    """
    sla = f"""
        SELECT AVG(CASE WHEN first_response_at IS NOT NULL
                         AND (julianday(first_response_at) - julianday(opened_at)) * 24 <= 24
                        THEN 1.0 ELSE 0.0 END), COUNT(*)
        FROM stg_service_tickets
        WHERE opened_at >= :start AND opened_at < :end AND {mapped}
          AND (first_response_at IS NOT NULL OR julianday(opened_at) + 1 <= julianday(:end))
    """
    with engine.connect() as conn:
        top2, mean, n_csat = conn.execute(sa.text(surveys), params).one()
        nps_value, n_nps = conn.execute(sa.text(nps), params).one()
        sla_value, n_sla = conn.execute(sa.text(sla), params).one()
    return {
        "csat_top2_share": (top2, n_csat),
        "csat_mean": (mean, n_csat),
        "nps": (nps_value, n_nps),
        "first_response_sla_share": (sla_value, n_sla),
    }


def _overall(frame: pd.DataFrame, name: str) -> pd.Series:
    row = frame[(frame["metric"] == name) & (frame["dimension"] == "overall")]
    assert len(row) == 1
    return row.iloc[0]


def test_stage_with_core_matches_sql_and_is_idempotent(demo, tmp_path) -> None:
    ctx = _warehouse(demo, tmp_path, with_core=True)
    result = metrics.run(ctx)
    assert result.stage == "compute_metrics"
    assert len(result.detail["quarters"]) == ctx.settings.metrics.trend_quarters
    quarters = set(read_table(ctx.engine, "mart_metrics", ["quarter"])["quarter"])
    assert quarters == {str(Q3.shift(-i)) for i in range(8)}

    per_customer = read_table(ctx.engine, "mart_customer_quarter", quarter=str(Q3))
    entities = demo[2]["entity_id"].nunique()
    assert len(per_customer) == entities and per_customer["customer_id"].is_unique
    tiered = per_customer["value_tier"].notna()
    assert (per_customer.loc[~tiered, "lifecycle_stage"].isin(["potential", "churned"])).all()

    table = read_table(ctx.engine, "mart_metrics", quarter=str(Q3))
    for name, (expected, n) in _sql_metrics(ctx.engine, Q3).items():
        row = _overall(table, name)
        assert row["n"] == n, name
        assert row["value"] == pytest.approx(expected, abs=1e-9), name
    previous = _sql_metrics(ctx.engine, Q3.previous())
    row = _overall(table, "nps")
    assert row["previous_value"] == pytest.approx(previous["nps"][0])
    assert row["change"] == pytest.approx(row["value"] - previous["nps"][0])

    before = {t: frame_digest(read_table(ctx.engine, t)) for t in metrics.OUTPUT_TABLES}
    metrics.run(ctx)
    metrics.compute_history(ctx.engine, ctx.settings, Q3, 3, recompute=True)
    after = {t: frame_digest(read_table(ctx.engine, t)) for t in metrics.OUTPUT_TABLES}
    assert after == before

    # a quarter missing between written ones: it and the current quarter are written, the
    # quarters between are computed again (the window goes quarter by quarter) and kept
    gap = Q3.shift(-5)
    with ctx.engine.begin() as conn:
        for table in metrics.OUTPUT_TABLES:
            conn.execute(sa.text(f'DELETE FROM "{table}" WHERE quarter = :q'), {"q": str(gap)})
    written = metrics.compute_history(ctx.engine, ctx.settings, Q3, 8)
    assert sorted(written) == sorted([str(gap), str(Q3)])
    again = {t: frame_digest(read_table(ctx.engine, t)) for t in metrics.OUTPUT_TABLES}
    assert again == before


def test_stage_falls_back_to_source_records_without_core(demo, tmp_path, caplog) -> None:
    ctx = _warehouse(demo, tmp_path, with_core=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        metrics.compute_history(ctx.engine, ctx.settings, Q3, 1)
    assert "each source record counts as one customer" in caplog.text
    per_customer = read_table(ctx.engine, "mart_customer_quarter", quarter=str(Q3))
    _, stg, _ = demo
    records = sum(len(stg[n]) for n in ("sales_customers", "service_accounts", "finance_accounts"))
    assert len(per_customer) == records
    migration = read_table(ctx.engine, "mart_tier_migration", quarter=str(Q3))
    assert migration["customers"].sum() >= per_customer["value_tier"].notna().sum()


def test_a_quarter_before_any_activity_is_refused(demo, tmp_path) -> None:
    # Every customer would be unclassified and every rate empty: nothing to report.
    ctx = _warehouse(demo, tmp_path, with_core=True)
    first = metrics.first_activity(ctx.engine)
    assert first is not None
    before = Quarter.of(first.date()).previous()
    with pytest.raises(
        metrics.NothingToReport, match=f"first quarter with activity is {before.shift(1)}"
    ):
        metrics.run(dataclasses.replace(ctx, quarter=before))
    assert not sa.inspect(ctx.engine).has_table("mart_metrics")
    metrics.check_activity(ctx.engine, before.shift(1))  # the first quarter with activity is fine
    empty = create_engine(f"sqlite:///{tmp_path}/empty.db")
    assert metrics.first_activity(empty) is None
    metrics.check_activity(empty, before)  # no activity at all yet: customers are still reported


def test_records_missing_from_xref_are_left_out(demo, caplog) -> None:
    _, stg, truth = demo
    xref = truth.rename(columns={"entity_id": "customer_id"})
    xref = xref[xref["source_system"] != "finance"]
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        inputs = metrics.build_inputs(stg, xref, None)
    assert "invoices:" in caplog.text
    assert inputs.invoices.empty
    assert not inputs.sales.empty


def test_warehouse_inputs_sum_lines_per_order_without_changing_results(demo, tmp_path) -> None:
    """load_inputs reads order lines summed per order (memory follows orders, not lines);
    the customer-quarter results equal those computed from every line in memory."""
    ctx = _warehouse(demo, tmp_path, with_core=True)
    from_warehouse = metrics.load_inputs(ctx.engine)
    assert "contribution_cny" in from_warehouse.sales
    assert from_warehouse.sales["order_id"].is_unique
    _, stg, _ = demo
    xref = read_table(ctx.engine, "core_customer_xref")
    core = read_table(ctx.engine, "core_customers")
    per_line = metrics.build_inputs(stg, xref, core)
    assert len(per_line.sales) > len(from_warehouse.sales)
    for quarter in (Q3, Q3.shift(-3)):
        a = metrics.customer_quarter(from_warehouse, quarter, ctx.settings)
        b = metrics.customer_quarter(per_line, quarter, ctx.settings)
        a = a.sort_values("customer_id").reset_index(drop=True)
        b = b.sort_values("customer_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(
            a, b[a.columns], check_exact=False, rtol=1e-9, check_dtype=False
        )


def test_history_longer_than_the_data_on_postgresql(demo) -> None:
    """The oldest trend quarters can predate every invoice: their text columns are all
    empty. PostgreSQL types a table by its first write, so they must still be text."""
    import uuid

    settings, stg, _ = demo
    schema = f"t_{uuid.uuid4().hex[:10]}"
    base = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{base}?options=-csearch_path%3D{schema}"
        engine = create_engine(url)
        for name, frame in stg.items():
            replace_table(engine, f"stg_{name}", frame)
        settings = settings.model_copy(update={"warehouse_url": url})
        written = metrics.compute_history(engine, settings, Q3, 16)
        assert len(written) == 16
        oldest = read_table(engine, "mart_customer_quarter", quarter=str(Q3.shift(-15)))
        assert oldest["credit_grade"].isna().all()
        current = read_table(engine, "mart_customer_quarter", quarter=str(Q3))
        assert current["credit_grade"].notna().any()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def _with_old_history(stg: dict[str, pd.DataFrame], xref: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The staging frames plus rows from years before every window: the only order of a
    customer who never bought again, a complaint still open and one open until 2025Q1."""
    stg = dict(stg)
    ordered = set(stg["sales_orders"]["customer_record_id"])
    mapped = set(xref.loc[xref["source_system"] == "sales", "source_record_id"])
    buyer = sorted(set(stg["sales_customers"]["source_record_id"]) & mapped - ordered)[0]
    order = (
        stg["sales_orders"]
        .iloc[[0]]
        .assign(
            source_record_id="O-OLD-1",
            customer_record_id=buyer,
            order_date=pd.Timestamp("2020-03-02"),
            order_status="completed",
        )
    )
    line = (
        stg["sales_order_lines"]
        .iloc[[0]]
        .assign(
            source_record_id="L-OLD-1",
            order_record_id="O-OLD-1",
            amount_cny=5000.0,
            cost_cny=float("nan"),
        )
    )
    stg["sales_orders"] = pd.concat([stg["sales_orders"], order], ignore_index=True)
    stg["sales_order_lines"] = pd.concat([stg["sales_order_lines"], line], ignore_index=True)
    tickets = stg["service_tickets"]
    complaints = tickets.iloc[[0, 1]].assign(
        source_record_id=["T-OLD-1", "T-OLD-2"],
        category=metrics.tiers.COMPLAINT_CATEGORY,
        opened_at=[pd.Timestamp("2020-06-01 02:00"), pd.Timestamp("2021-01-04 09:30")],
        first_response_at=[pd.Timestamp("2020-06-01 05:00"), pd.Timestamp("2021-01-04 10:00")],
        resolved_at=[pd.NaT, pd.Timestamp("2025-03-03 08:00")],
    )
    stg["service_tickets"] = pd.concat([tickets, complaints], ignore_index=True)
    # Invoices from years before every credit window: one never paid, one paid off in
    # 2025Q2 (open at the earlier quarters' ends, not at the later ones), one paid in full
    # at once. Each customer keeps its invoices in the window too.
    invoices, payments = stg["finance_invoices"], stg["finance_payments"]
    debtors = list(invoices["customer_record_id"].dropna().unique()[:3])
    old = invoices.iloc[[0, 1, 2]].assign(
        source_record_id=["I-OLD-1", "I-OLD-2", "I-OLD-3"],
        customer_record_id=debtors,
        invoice_date=pd.Timestamp("2020-05-01"),
        due_date=pd.Timestamp("2020-06-01"),
        amount_cny=1000.0,
    )
    paid = payments.iloc[[0, 1]].assign(
        source_record_id=["P-OLD-2", "P-OLD-3"],
        invoice_record_id=["I-OLD-2", "I-OLD-3"],
        paid_date=[pd.Timestamp("2025-05-20"), pd.Timestamp("2020-05-20")],
        amount_cny=1000.0,
    )
    stg["finance_invoices"] = pd.concat([invoices, old], ignore_index=True)
    stg["finance_payments"] = pd.concat([payments, paid], ignore_index=True)
    return stg, buyer


@pytest.mark.parametrize(
    ("backend", "floors"),
    [("sqlite", True), ("sqlite", False), ("postgresql", True), ("postgresql", False)],
)
def test_windowed_inputs_give_the_results_of_all_history(demo, tmp_path, backend, floors) -> None:
    """compute_history holds only a window of history per quarter (read in small chunks
    here, so windows start and end inside chunks); every output frame of every trend
    quarter equals the one computed over all of history in memory, including a customer
    whose only purchase and complaints older than every window. With floors (the oldest
    quarter known), older history is read as SQL aggregates; without, it streams by."""
    import uuid

    settings, stg, truth = demo
    xref = truth.rename(columns={"entity_id": "customer_id"})
    stg, buyer = _with_old_history(stg, xref)
    admin, schema = None, f"t_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/wh.db"
    else:
        base = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = f"{base}?options=-csearch_path%3D{schema}"
    try:
        engine = create_engine(url)
        settings = settings.model_copy(update={"warehouse_url": url})
        for name, frame in stg.items():
            replace_table(engine, f"stg_{name}", frame)
        _write_core(engine, stg, xref)

        everything = metrics.load_inputs(engine)
        first = Q3.shift(-7) if floors else None
        # With the last quarter known, the old open invoices are read once for all.
        last = Q3 if floors else None
        window = metrics.InputWindow(engine, settings, first=first, chunk_rows=257, last=last)
        full_cache, window_cache = metrics.QuarterCache(), metrics.QuarterCache()
        try:
            for q in (Q3.shift(-i) for i in range(7, -1, -1)):
                inputs = window.inputs_for(q)
                expected = metrics.compute_quarter(everything, q, settings, full_cache)
                got = metrics.compute_quarter(inputs, q, settings, window_cache)
                for table, frame in expected.items():
                    pd.testing.assert_frame_equal(
                        got[table].reset_index(drop=True),
                        frame.reset_index(drop=True),
                        check_dtype=False,
                        obj=f"{table} {q}",
                    )
            # the window slid: the oldest rows left it and were folded in
            assert window.frames["sales"]["order_date"].min() >= pd.Timestamp("2025-01-01")
            assert len(window.frames["sales"]) < len(everything.sales)
            assert "T-OLD-1" in set(window.frames["tickets"]["ticket_id"])
            assert "T-OLD-2" not in set(window.frames["tickets"]["ticket_id"])
            golden = xref.set_index(["source_system", "source_record_id"])["customer_id"]
            # inside the window customers are codes of the golden ids
            assert window.frames["sales"]["customer_id"].dtype.kind == "i"
            first_buyers = window.golden.decode(window.first_purchases.index)
            assert golden[("sales", buyer)] in set(first_buyers)
            with pytest.raises(ValueError, match="oldest first"):
                window.inputs_for(Q3.previous())
            with pytest.raises(ValueError, match="one after another"):
                window.inputs_for(Q3.shift(2))
        finally:
            window.close()
        stage = expected["mart_customer_quarter"].set_index("customer_id")["lifecycle_stage"]
        assert stage[golden[("sales", buyer)]] == "churned"  # bought in 2020, not potential
        # The invoice unpaid since 2020 is overdue in the last quarter, in both computations.
        debtor = stg["finance_invoices"].set_index("source_record_id").loc["I-OLD-1"]
        last = got["mart_customer_quarter"].set_index("customer_id")
        assert (
            last.loc[golden[("finance", debtor["customer_record_id"])], "max_overdue_days"] >= 2000
        )
    finally:
        if admin is not None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def test_window_queries_never_scan_one_table_per_row_of_another_on_sqlite(demo, tmp_path) -> None:
    """SQLite runs a join as nested loops in the order it picks: the inner table must be
    searched through an index, not scanned once per outer row. Such a plan took 77 s on
    the demo warehouse (payments scanned once per invoice) where it takes 0.05 s."""
    import sqlite3

    ctx = _warehouse(demo, tmp_path, with_core=True)
    window = metrics.InputWindow(ctx.engine, ctx.settings, first=Q3.shift(-7))
    try:
        queries = [window._sql(name) for name in metrics.FEEDS]
        queries.append((metrics.FIRST_ORDERS, {"floor": "2025-01-01"}))
    finally:
        window.close()
    with sqlite3.connect(ctx.engine.url.database) as conn:
        for sql, params in queries:
            text = sql.replace("%(floor)s", f"'{params['floor']}'")
            plan = conn.execute(f"EXPLAIN QUERY PLAN {text}").fetchall()
            # top-level steps are the join's loops, outermost first
            scans = [
                detail for _, parent, _, detail in plan if parent == 0 and detail.startswith("SCAN")
            ]
            assert len(scans) <= 1, (text, plan)


def test_golden_ids_map_records_to_codes_that_sort_as_the_ids() -> None:
    xref = pd.DataFrame(
        {
            "source_system": ["sales", "sales", "service", "finance"],
            "source_record_id": ["S2", "S1", "V1", "F1"],
            "customer_id": ["CUST-B", "CUST-A", "CUST-B", "CUST-C"],
        }
    )
    core = pd.DataFrame({"customer_id": ["CUST-A", "CUST-B", "CUST-C", "CUST-0"]})
    golden = metrics.GoldenIds(xref, core)
    assert list(golden.ids) == ["CUST-0", "CUST-A", "CUST-B", "CUST-C"]
    codes = golden.map(pd.Series(["S1", "S2", "nope", None], dtype="str"), "sales")
    assert list(codes) == [1, 2, metrics.NO_CUSTOMER, metrics.NO_CUSTOMER]
    assert list(golden.map(pd.Series(["V1"]), "unknown system")) == [metrics.NO_CUSTOMER]
    assert list(golden.decode(codes[:2])) == ["CUST-A", "CUST-B"]
    assert list(golden.encode(pd.Series(["CUST-C", "CUST-X"]))) == [3, metrics.NO_CUSTOMER]
    frame = pd.DataFrame({"customer_id": codes, "n": range(4)})
    assert list(metrics._mapped_only("sales", frame)["n"]) == [0, 1]
