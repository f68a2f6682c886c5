"""The dbt project on its Spark target (dbt-spark on Sail's Spark Connect server, started by the test) against
its DuckDB target, from the same lake: every gold table row for row.

Tolerances: floating-point columns to a relative 1e-9 (sums and ratios add up in another order); every other
column exactly (timestamps to the microsecond, decimals to their scale, strings, dates, booleans)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import GOLD_SELECT, gold_models, read_warehouse, run_dbt

from data_contracts import load_contracts
from lake.settings import REPO_ROOT, Settings

FLOAT_RELATIVE_TOLERANCE = 1e-9


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with its columns in name order, every column but the floating ones as text (the engines type
    integers and decimals alike but not always with the same width), sorted by the text columns and then the
    floats."""
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    texts = [c for c in frame.columns if c not in floats]
    frame = frame.select(sorted(frame.columns)).with_columns(
        [pl.col(c).dt.convert_time_zone("UTC") for c, t in frame.schema.items() if isinstance(t, pl.Datetime)]
    )
    frame = frame.with_columns([pl.col(c).cast(pl.String) for c in texts])
    return frame.sort(sorted(texts) + sorted(floats), nulls_last=True)


def differences(duckdb: pl.DataFrame, spark: pl.DataFrame) -> list[str]:
    """What differs between two versions of one table, after :func:`comparable`: columns, row count, then per
    column the rows that differ beyond the tolerances."""
    if sorted(duckdb.columns) != sorted(spark.columns):
        return [f"columns {sorted(duckdb.columns)} != {sorted(spark.columns)}"]
    if duckdb.height != spark.height:
        return [f"{duckdb.height} rows != {spark.height}"]
    spark = spark.with_columns([pl.col(c).cast(t) for c, t in duckdb.schema.items() if t.is_float()])
    left, right = comparable(duckdb), comparable(spark)
    found = []
    for column in left.columns:
        a, b = left[column], right[column]
        if a.dtype.is_float():
            same_nulls = (a.is_null() == b.is_null()).all()
            x, y = a.fill_null(0).to_numpy(), b.fill_null(0).to_numpy()
            close = np.isclose(x, y, rtol=FLOAT_RELATIVE_TOLERANCE, atol=0.0, equal_nan=True)
            bad = int((~close).sum()) if same_nulls else a.len()
        else:
            bad = int((a.ne_missing(b)).sum())
        if bad:
            found.append(f"{column}: {bad} rows differ")
    return found


def test_differences_see_a_changed_value_and_forgive_float_noise() -> None:
    """The comparison itself: float noise of 1e-12 passes; a float off by 1e-6, or a changed text, fails."""
    base = pl.DataFrame({"k": ["a", "b"], "x": [1.0, 2.0], "n": [1, 2]})
    assert differences(base, base.with_columns(pl.col("x") * (1 + 1e-12))) == []
    assert differences(base, base.with_columns(pl.col("x") * (1 + 1e-6))) == ["x: 2 rows differ"]
    assert differences(base, base.with_columns(pl.Series("k", ["a", "c"]))) != []


@pytest.mark.slow
def test_gold_tables_equal_on_spark_and_duckdb(
    gold_lake: Settings, spark_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gold models built by dbt on Spark (Sail) from the lake of ``gold_lake`` equal, row for row, those
    its DuckDB build made; every dbt test passes on Spark too (run_dbt asserts the build's success)."""
    from lake.spark_warehouse import connected, mirror_models, publish_silver

    warehouse = tmp_path / "spark_warehouse"
    monkeypatch.setenv("DBT_TARGET", "spark")
    monkeypatch.setenv("SPARK_REMOTE", spark_server.remote)
    monkeypatch.setenv("SPARK_WAREHOUSE_DIR", str(warehouse))
    with connected(spark_server.remote) as session:
        publish_silver(gold_lake, load_contracts(gold_lake.contracts_dir), session)
    run_dbt(gold_lake, tmp_path, "build", "--select", *GOLD_SELECT)
    models = gold_models(tmp_path)
    assert models == [
        "decision_outcomes",
        "identity_person_map",
        "person_features_daily",
        "training_decisions",
        "training_propensity",
    ]
    # the Spark build as the warehouse's readers see it: views of a warehouse file over the Delta tables
    mirror = replace(gold_lake, warehouse_path=tmp_path / "mirror.duckdb", spark_warehouse_dir=str(warehouse))
    assert mirror_models(mirror, [*models, "no_such_model"]) == models
    found = {}
    for model in models:
        duckdb = read_warehouse(gold_lake, f"select * from main.{model}")
        spark = read_warehouse(mirror, f"select * from main.{model}")
        assert duckdb.height > 0, model
        assert spark.height == pl.read_delta(str(warehouse / model)).height, model
        found[model] = differences(duckdb, spark)
    assert found == {model: [] for model in models}


@pytest.mark.slow
def test_a_new_spark_server_gets_the_tables_written_before_and_the_views_over_them(
    gold_lake: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sail's catalog lives in the server's memory. On a new server, a model whose upstream views it does not
    build fails; once the tables the Spark target wrote are registered again and the views that can be are
    run again, it builds, and a model table reads as its Delta table. A view over a table never built stays
    out."""
    from lake import spark_server as servers
    from lake.spark_warehouse import connected, publish_silver, register_models, views_to_restore

    warehouse = tmp_path / "spark_warehouse"
    settings = replace(gold_lake, spark_warehouse_dir=str(warehouse))
    contracts = load_contracts(gold_lake.contracts_dir)
    monkeypatch.setenv("DBT_TARGET", "spark")
    monkeypatch.setenv("SPARK_WAREHOUSE_DIR", str(warehouse))
    with servers.running(log=tmp_path / "first.log") as first:
        monkeypatch.setenv("SPARK_REMOTE", first.remote)
        with connected(first.remote) as session:
            publish_silver(settings, contracts, session)
        run_dbt(gold_lake, tmp_path, "build", "--select", "+int_marts__data_window", "identity_fanout_limits")
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    window_rows = pl.read_delta(str(warehouse / "int_marts__data_window")).height

    with contextlib.ExitStack() as stack:
        second = stack.enter_context(servers.running(log=tmp_path / "second.log"))
        monkeypatch.setenv("SPARK_REMOTE", second.remote)
        session = stack.enter_context(connected(second.remote))
        publish_silver(settings, contracts, session)
        command = [
            "dbt",
            "run",
            "--select",
            "int_marts__data_window",
            "--profiles-dir",
            str(REPO_ROOT / "dbt_project"),
        ]
        command += ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
        env = {**os.environ, "LAKE_ROOT": gold_lake.lake_root}
        failed = subprocess.run(
            command, cwd=REPO_ROOT / "dbt_project", env=env, capture_output=True, text=True
        )
        assert failed.returncode != 0 and "stg_" in failed.stdout

        assert register_models(settings, session, manifest) == [
            "identity_fanout_limits",
            "int_marts__data_window",
        ]
        assert session.table("main.int_marts__data_window").count() == window_rows
        # the columns dbt reads from the catalog (an incremental model compares them with its query's)
        described = session.sql("describe table main.int_marts__data_window").collect()
        columns = pl.read_delta(str(warehouse / "int_marts__data_window")).columns
        assert [row.col_name for row in described[: len(columns)]] == columns
        views = views_to_restore(session, manifest)
        assert "stg_clickstream__events" in views and "stg_shop__orders_history" in views
        # int_marts__person_activities reads identity_person_map, which this Spark target never built
        assert not [view for view in views if not view.startswith("stg_")]
        run_dbt(gold_lake, tmp_path, "run", "--select", *views)
        assert views_to_restore(session, manifest) == []
        run_dbt(gold_lake, tmp_path, "build", "--select", "int_marts__data_window")
        assert register_models(settings, session, manifest) == []
        assert session.table("main.int_marts__data_window").count() == window_rows


def test_the_shared_session_outlives_an_idle_time_that_sail_would_end_it_after(tmp_path: Path) -> None:
    """Sail removes an idle session (after 15 minutes by default) and refuses its id afterwards: with a 2 s
    limit the shared session is gone after 4 idle seconds; the servers the project starts keep it, and its
    catalog, as long as they run."""
    from lake import spark_server as servers
    from lake.spark_warehouse import connected

    def catalog_after_idle(server) -> set[str]:
        with connected(server.remote) as session:
            session.sql("create schema if not exists kept")
        time.sleep(4)
        with connected(server.remote) as session:
            return {row[0] for row in session.sql("show schemas").collect()}

    server = servers.start(log=tmp_path / "short.log", session_timeout_s=2)
    try:
        with pytest.raises(Exception, match="is not running"):
            catalog_after_idle(server)
    finally:
        servers.stop(server)
    with servers.running(log=tmp_path / "default.log") as server:
        assert "kept" in catalog_after_idle(server)


def test_the_spark_server_holds_a_query_to_its_memory_limit_and_spills_beyond_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking 5,000,000 rows sorts more than a 30 MB limit holds: the server the project starts spills to its
    spill folder and answers; with spilling turned off the same limit refuses the query (Sail's own default is
    no limit at all)."""
    from lake import spark_server as servers
    from lake.spark_warehouse import connected

    rows = 5_000_000
    ranking = (
        f"select count(*), max(r) from (select row_number() over (order by hash(id)) r from range({rows}))"
    )

    def answer(name: str):
        spill = tmp_path / f"{name}-spill"
        server = servers.start(log=tmp_path / f"{name}.log", memory_limit=30_000_000, spill_directory=spill)
        try:
            with connected(server.remote) as session:
                return tuple(session.sql(ranking).collect()[0]), sorted(p.name for p in spill.iterdir())
        finally:
            servers.stop(server)

    answered, spilled = answer("spilling")
    assert answered == (rows, rows)
    assert any(name.startswith("datafusion-") for name in spilled)
    monkeypatch.setenv("SAIL_RUNTIME__TEMPORARY_FILES__MAX_SIZE", "0")  # Sail's switch: no spilling
    with pytest.raises(Exception, match="Memory Exhausted"):
        answer("held")


def test_a_spawned_dagster_step_process_can_import_great_expectations_beside_the_spark_client() -> None:
    """A step process (``python -c``: no file, no spec for ``__main__``) imports the code location, then Great
    Expectations, which imports pyspark's Connect client: the client must not take it for a doctest run."""
    environment = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"}
    code = "import orchestration, great_expectations; print('imported')"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "imported"


@pytest.mark.slow
def test_the_dagster_dbt_assets_on_the_spark_target_keep_their_keys_and_checks(tmp_path: Path) -> None:
    """With ``DBT_TARGET=spark`` the code location loads the Spark target's manifest (its own target path):
    the same dbt asset keys and asset checks as on DuckDB, so run, partition and check history carry over
    from one engine to the other."""
    code = (
        "import json; from orchestration.definitions import defs; "
        "from orchestration.dbt_project import dbt_project; "
        "graph = defs.resolve_asset_graph(); "
        "print(json.dumps({'manifest': str(dbt_project.manifest_path), "
        "'assets': sorted(k.to_user_string() for k in graph.get_all_asset_keys()), "
        "'checks': sorted(c.to_user_string() for c in graph.asset_check_keys)}))"
    )
    found = {}
    for target in ("local", "spark"):
        environment = {**os.environ, "DBT_TARGET": target, "DAGSTER_HOME": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found[target] = json.loads(done.stdout.splitlines()[-1])
    assert found["spark"]["manifest"].endswith("dbt_project/target/spark/manifest.json")
    assert found["local"]["manifest"].endswith("dbt_project/target/manifest.json")
    assert any(key.endswith("int_identity__components") for key in found["spark"]["assets"])
    assert found["spark"]["assets"] == found["local"]["assets"]
    assert found["spark"]["checks"] == found["local"]["checks"]
