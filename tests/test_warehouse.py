from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from tests.conftest import POSTGRES_URL, postgres_schema


def _frame(quarter: str, n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"CUST-{i:04d}" for i in range(n)],
            "value_tier": ["A", "B", None, "C", "A"][:n],
            "amount_cny": np.linspace(0.5, 100.25, n),
            "n_orders": pd.array([1, None, 3, 4, 5][:n], dtype="Int64"),
            "is_risk": [True, False, True, False, True][:n],
            "opened_at": pd.to_datetime(
                [
                    "2026-07-01 08:00:00",
                    None,
                    "2026-09-30 23:59:59",
                    "2026-08-01 00:00:00",
                    "2026-08-02 00:00:00",
                ][:n]
            ),
            "paid_date": pd.to_datetime(
                ["2026-07-01", "2026-07-02", None, "2026-08-01", "2026-08-02"][:n]
            ),
        }
    )


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        yield warehouse.create_engine(f"sqlite:///{tmp_path}/wh.db")
        return
    with postgres_schema() as scoped:
        yield scoped


def test_replace_partition_is_idempotent(engine):
    warehouse.replace_partition(engine, "mart_test", _frame("2026Q2"), quarter="2026Q2")
    warehouse.replace_partition(engine, "mart_test", _frame("2026Q3"), quarter="2026Q3")
    first = warehouse.read_table(engine, "mart_test")
    warehouse.replace_partition(engine, "mart_test", _frame("2026Q3"), quarter="2026Q3")
    second = warehouse.read_table(engine, "mart_test")
    assert len(second) == 10
    assert warehouse.frame_digest(first) == warehouse.frame_digest(second)


def test_values_round_trip(engine):
    frame = _frame("2026Q3")
    warehouse.replace_table(engine, "rt", frame)
    back = warehouse.read_table(engine, "rt").sort_values("customer_id").reset_index(drop=True)
    assert back["value_tier"].isna().sum() == 1
    assert back["amount_cny"].tolist() == pytest.approx(frame["amount_cny"].tolist())
    assert back["n_orders"].isna().sum() == 1
    assert back.loc[2, "opened_at"] == pd.Timestamp("2026-09-30 23:59:59")
    assert pd.isna(back.loc[1, "opened_at"])
    assert back.loc[0, "paid_date"] == pd.Timestamp("2026-07-01")


def test_partition_replace_leaves_other_partitions(engine):
    warehouse.replace_partition(engine, "mart_test", _frame("q", 5), quarter="2026Q2")
    warehouse.replace_partition(engine, "mart_test", _frame("q", 2), quarter="2026Q3")
    assert len(warehouse.read_table(engine, "mart_test", quarter="2026Q2")) == 5
    assert len(warehouse.read_table(engine, "mart_test", quarter="2026Q3")) == 2


def test_failed_write_keeps_previous_state(engine):
    warehouse.replace_table(engine, "t", _frame("q"))
    before = warehouse.read_table(engine, "t")
    bad = _frame("q")
    bad["amount_cny"] = ["not a number"] * len(bad)  # cannot go into a FLOAT column on PostgreSQL
    if engine.dialect.name == "sqlite":
        # SQLite accepts anything in any column; break the write another way.
        bad = bad.rename(columns={"amount_cny": 'amount"cny'})
    with pytest.raises((sa.exc.SQLAlchemyError, Exception)):
        warehouse.replace_table(engine, "t", bad)
    after = warehouse.read_table(engine, "t")
    pd.testing.assert_frame_equal(before, after)


def test_missing_table_is_a_clear_error(engine):
    with pytest.raises(LookupError, match="warehouse table 'nope' does not exist yet"):
        warehouse.read_table(engine, "nope")


def test_migrations_create_the_baseline_schema_and_rerun_cleanly(engine):
    warehouse.migrate(engine)
    warehouse.migrate(engine)  # already at head: nothing to do
    tables = set(sa.inspect(engine).get_table_names())
    assert {"raw_sales_customers", "stg_finance_payments", "run_log", "alembic_version"} <= tables
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("stg_service_surveys")}
    assert isinstance(columns["csat_score"], sa.BigInteger)
    assert isinstance(columns["answered_at"], sa.DateTime)


def test_migrations_adopt_tables_the_stages_created(engine):
    """A warehouse filled before migrations ran keeps its rows and gains what it lacked."""
    frame = pd.DataFrame({"source_record_id": ["C1"], "customer_name": ["甲公司"]})
    warehouse.replace_table(engine, "raw_sales_customers", frame)
    warehouse.migrate(engine)
    back = warehouse.read_table(engine, "raw_sales_customers")
    assert back["customer_name"].tolist() == ["甲公司"]
    assert {"uscc", "extracted_at"} <= set(back.columns)
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("stg_sales_customers")}
    assert "ix_stg_sales_customers_source_record_id" in indexes


def test_parallel_migrations_do_not_collide(engine):
    """Parallel Airflow tasks each migrate at start; they take turns and all succeed."""
    from concurrent.futures import ThreadPoolExecutor

    url = engine.url.render_as_string(hide_password=False)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: warehouse.migrate(warehouse.create_engine(url)), range(3)))
    assert "run_log" in sa.inspect(engine).get_table_names()


def test_awkward_text_survives_the_load(engine) -> None:
    """Tabs, newlines, backslashes, a literal \\N, empty strings, NULLs and CJK come back as
    they went in (on PostgreSQL the rows go as COPY text built in bulk)."""
    awkward = ["a\tb", "line1\nline2\r\n", "back\\slash", "\\N", "", None, "客户 名称", "\\."]
    frame = pd.DataFrame(
        {
            "source_record_id": [f"R{i}" for i in range(len(awkward))],
            "text": pd.Series(awkward, dtype=object),
            "amount": [1.5, float("nan"), 1e20, -0.0, 2.0, 3.25, float("inf"), 0.1],
            "count": np.arange(len(awkward), dtype="int64"),
            "flag": pd.array([True, None, False, True, None, False, True, True], dtype="boolean"),
            "empty": pd.Series([None] * len(awkward), dtype=object),
        }
    )
    warehouse.replace_table(engine, "awkward", frame)
    back = warehouse.read_table(engine, "awkward").sort_values("source_record_id")
    back = back.reset_index(drop=True)
    expected = frame.sort_values("source_record_id").reset_index(drop=True)
    assert [None if pd.isna(v) else v for v in back["text"]] == expected["text"].tolist()
    assert back["amount"].tolist()[2:] == expected["amount"].tolist()[2:]
    assert pd.isna(back.loc[1, "amount"]) and back.loc[0, "amount"] == 1.5
    assert back["count"].tolist() == expected["count"].tolist()
    assert [None if pd.isna(v) else bool(v) for v in back["flag"]] == [
        None if pd.isna(v) else bool(v) for v in expected["flag"]
    ]
    assert back["empty"].isna().all()


def test_copy_text_falls_back_for_python_objects() -> None:
    from decimal import Decimal

    assert warehouse._copy_text(pd.DataFrame({"x": [Decimal("1.1"), "a"]})) is None
    text = warehouse._copy_text(pd.DataFrame({"x": ["a\tb", None], "n": [1, 2]}))
    assert bytes(text) == b"a\\tb\t1\n\\N\t2\n"


def test_copy_text_takes_datetime_objects() -> None:
    import datetime

    frame = pd.DataFrame(
        {"at": pd.Series([datetime.datetime(2024, 1, 2, 3, 4, 5, 600000), None], dtype=object)}
    )
    assert bytes(warehouse._copy_text(frame)) == b"2024-01-02 03:04:05.600000\n\\N\n"


@pytest.mark.postgres
def test_postgres_arrow_reads_give_the_frame_the_driver_gives():
    """read_table on PostgreSQL goes through ADBC (Arrow); it must give exactly what
    ``pd.read_sql`` on the driver's rows gives, for every column type the warehouse uses."""
    with postgres_schema() as engine:
        frame = _frame("2026Q3")
        frame["note"] = ["a,b", 'say "hi"', "two\nlines", "", None]  # '' is not NULL
        frame["empty_text"] = pd.Series([None] * 5, dtype=object)
        frame["city"] = ["上海", "北京", None, "深圳", "广州"]
        warehouse.replace_partition(engine, "rt_types", frame, quarter="2026Q3")
        with engine.begin() as conn:
            conn.exec_driver_sql('ALTER TABLE rt_types ADD COLUMN "price" NUMERIC(12, 2)')
            conn.exec_driver_sql("UPDATE rt_types SET price = 12.5 WHERE customer_id = 'CUST-0001'")

        def both(*args, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
            arrow = warehouse.read_table(engine, *args, **kwargs)
            original = warehouse._read_arrow
            warehouse._read_arrow = lambda *a, **k: None  # the driver's rows
            try:
                driver = warehouse.read_table(engine, *args, **kwargs)
            finally:
                warehouse._read_arrow = original
            return arrow, driver

        arrow, driver = both("rt_types")
        pd.testing.assert_frame_equal(arrow, driver)
        assert arrow.set_index("customer_id").loc["CUST-0003", "note"] == ""
        assert pd.isna(arrow.set_index("customer_id").loc["CUST-0004", "note"])
        assert arrow["price"].dtype == "float64" and arrow["price"].max() == 12.5
        pd.testing.assert_frame_equal(*both("rt_types", ["customer_id", "opened_at"]))
        pd.testing.assert_frame_equal(*both("rt_types", quarter="2026Q3"))
        pd.testing.assert_frame_equal(*both("rt_types", quarter="it's none"))  # quoted
        assert warehouse.read_table(engine, "rt_types", quarter="it's none").empty
        totals = warehouse.read_query(
            engine, 'SELECT quarter, SUM(n_orders) AS n FROM "rt_types" GROUP BY quarter'
        )
        assert totals["n"].tolist() == [13.0]


@pytest.mark.parametrize("unit", ["ns", "us", "s"])
def test_datetimes_cast_to_copy_text_as_strftime_renders_them(unit: str) -> None:
    """COPY text of datetime columns is cast in Arrow; it must be the text ``strftime``
    gives (before 1970 too, dates floored to their day, NaT as NULL, zone-aware in UTC),
    and anything finer than a microsecond goes back to ``strftime``."""
    rng = np.random.default_rng(7)
    micros = rng.integers(-2_000_000_000, 4_000_000_000, 3000) * 1_000_000
    micros += rng.integers(0, 1_000_000, 3000)
    series = pd.Series(pd.to_datetime(micros, unit="us")).astype(f"datetime64[{unit}]")
    series[5] = pd.NaT
    aware = series.dt.tz_localize("Asia/Shanghai", ambiguous="NaT", nonexistent="NaT")
    for values, name in [(series, "opened_at"), (series, "paid_date"), (aware, "sent_at")]:
        cast = warehouse._datetime_arrow_text(values, name)
        assert cast is not None
        assert cast.to_pylist() == list(warehouse._datetime_text(values, name))
    finer = pd.Series(pd.to_datetime(["2026-01-01 00:00:00.000000001"]))
    assert warehouse._datetime_arrow_text(finer, "opened_at") is None
    text = bytes(warehouse._copy_text(pd.DataFrame({"opened_at": finer})))
    assert text == b"2026-01-01 00:00:00.000000\n"


def test_copy_text_writes_nul_as_replacement_character(caplog):
    frame = pd.DataFrame({"source_record_id": ["K1", "K2"], "x": ["a\x00b", "c\td"]})
    with caplog.at_level("WARNING", logger="pipeline.warehouse"):
        text = bytes(warehouse._copy_text(frame, "raw_t"))
    assert text == "K1\ta\ufffdb\nK2\tc\\td\n".encode()
    assert "raw_t: 1 value(s) of column x hold NUL characters" in caplog.text
    assert "source_record_id K1" in caplog.text


def test_nul_in_text_is_written_on_both_copy_paths(engine, caplog):
    """COPY text built in Arrow, and rows the driver renders (a column mixing numbers and
    text): either way PostgreSQL gets U+FFFD for NUL, with a warning; SQLite stores NUL."""
    arrow = pd.DataFrame({"source_record_id": ["K1", "K2"], "x": ["a\x00b", "c"]})
    driver = arrow.assign(n=pd.Series([1, "2"], dtype=object))
    assert warehouse._copy_text(driver) is None  # the driver renders these rows
    with caplog.at_level("WARNING", logger="pipeline.warehouse"):
        warehouse.replace_table(engine, "t_arrow", arrow)
        warehouse.replace_table(engine, "t_driver", driver)
    expected = "a\ufffdb" if engine.dialect.name == "postgresql" else "a\x00b"
    for table in ("t_arrow", "t_driver"):
        back = warehouse.read_table(engine, table).sort_values("source_record_id")
        assert back["x"].tolist() == [expected, "c"]
    if engine.dialect.name == "postgresql":
        for table in ("t_arrow", "t_driver"):
            assert caplog.text.count(f"{table}: 1 value(s) of column x hold NUL characters") == 1
        assert "source_record_id K1" in caplog.text


def test_stream_query_gives_read_query_in_chunks(engine):
    """Chunks of at most chunk_rows rows that together are the frame read_query gives; an
    empty result is one empty frame with the columns; parameters bind on both paths."""
    frame = pd.concat([_frame("q")] * 7, ignore_index=True)
    frame["customer_id"] = [f"CUST-{i:04d}" for i in range(len(frame))]
    warehouse.replace_table(engine, "streamed", frame)
    sql = "SELECT * FROM streamed WHERE amount_cny > %(low)s ORDER BY customer_id"
    whole = warehouse.read_query(engine, sql, {"low": 1.0})
    chunks = list(warehouse.stream_query(engine, sql, 4, params={"low": 1.0}))
    assert [len(c) for c in chunks] == [4] * (len(whole) // 4) + (
        [len(whole) % 4] if len(whole) % 4 else []
    )
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole, check_dtype=False)
    empty = list(warehouse.stream_query(engine, sql, 4, params={"low": 1e9}))
    assert len(empty) == 1 and empty[0].empty
    assert list(empty[0].columns) == list(whole.columns)


def test_read_ahead_closes_the_reader_when_stopped():
    from pipeline.readahead import read_ahead

    closed = []

    def reader():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    ahead = read_ahead(reader(), depth=1)
    assert next(ahead) == 0
    ahead.close()
    assert closed == [True]  # its connection would be released here
    read_ahead(reader(), depth=1).close()  # closed before anything was asked of it
    assert closed == [True, True]


def _settings_of(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    """(jit, search_path) as the engine's sessions and its ADBC reads see them."""
    sql = "SELECT current_setting('jit') AS jit, current_setting('search_path') AS path"
    with engine.connect() as conn:
        session = tuple(conn.exec_driver_sql(sql).one())
        arrow = warehouse.read_query_on(conn, sql).iloc[0]
    return {"session": session, "adbc": (arrow["jit"], arrow["path"])}


def test_postgres_sessions_run_without_jit_unless_the_url_says(tmp_path) -> None:
    """The engine turns PostgreSQL's JIT off for its sessions and its ADBC reads, keeping
    the URL's other options (a search_path); a URL that sets jit keeps its own."""
    with postgres_schema() as scoped:
        schema = scoped.url.query["options"].split("=")[1].split()[0]
        seen = _settings_of(scoped)
        assert seen == {"session": ("off", schema), "adbc": ("off", schema)}
        again = warehouse.create_engine(scoped.url.render_as_string(hide_password=False))
        assert again.url == scoped.url  # a worker's engine, from the rendered URL
        again.dispose()
        url = f"{POSTGRES_URL}?options=-c%20jit%3Don%20-csearch_path%3D{schema}"
        own = warehouse.create_engine(url)
        assert _settings_of(own) == {"session": ("on", schema), "adbc": ("on", schema)}
        own.dispose()
