"""The interval calibration as a Dagster asset: real runs of the real asset definitions on a
small DuckDB fixture city, with real Prophet/statsforecast fits.

The warehouse backtest that learns the calibration is scheduled (weekly, plus the first
night without one), and the nightly forecast then says its intervals are calibrated — in
the Dagster metadata, the summary and the plan's `intervals` column.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from support.forecast_city import AS_OF, build_city

from forecasts.config import ForecastConfig as ForecastEngineConfig
from pipelines.forecast_assets import (
    CALIBRATION_JOB,
    CALIBRATION_KEY,
    build_calibration_asset,
    build_calibration_job,
    build_calibration_schedule,
    build_forecast_asset,
)
from pipelines.notify import build_failure_hook
from pipelines.partitions import daily_partitions
from pipelines.resources import WarehouseResource
from pipelines.settings import NotifySettings, Settings

DEMAND = dg.AssetKey(["forecasts", "demand_forecast"])
PLAN = dg.AssetKey(["forecasts", "staging_plan"])
NIGHT_1, NIGHT_2 = "2026-01-05", "2026-01-06"  # partitions after the fixture's last day: as_of = AS_OF


def _defs(db: Path, exports: Path) -> dg.Definitions:
    calibration = build_calibration_asset(ForecastEngineConfig())
    nightly = build_forecast_asset(exports, daily_partitions(Settings.from_env({}, db.parent).schedule.start_date), ForecastEngineConfig())
    return dg.Definitions(
        assets=[calibration, nightly],
        jobs=[
            dg.define_asset_job(CALIBRATION_JOB, selection=[calibration], executor_def=dg.in_process_executor),
            dg.define_asset_job("nightly", selection=[nightly], executor_def=dg.in_process_executor,
                                partitions_def=nightly.partitions_def),
        ],
        resources={"warehouse": WarehouseResource(home=str(db.parent))},
    )


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetKey, dict]:
    out = {}
    for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        mat = rec.event_log_entry.asset_materialization
        out[mat.asset_key] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _warehouse(db: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        fc = con.execute("select series_id, kind, method, mean, calibration from forecasts.demand_forecast").pl()
        plan = con.execute("select neighbourhood_id, category, intervals from forecasts.staging_plan").pl()
    finally:
        con.close()
    return fc, plan


def _assert_calibrated(db: Path, forecast_md: dict, plan_md: dict) -> None:
    """Every series with demand gets the backtest's intervals: the smooth ones their own
    group's, the city's one intermittent series the blend's (its own class has 35 backtest
    errors here, under the 40 a group needs, so the lookup pools over classes). The
    all-zero series keeps its zero in-sample interval, and says so."""
    assert forecast_md["intervals"] == plan_md["intervals"] == "calibrated"
    assert forecast_md["calibration"] == f"table as of {AS_OF}"
    fc, plan = _warehouse(db)
    assert fc.filter(pl.col("kind") == "smooth")["calibration"].str.starts_with("blend/smooth").all()
    assert fc.filter(pl.col("series_id") == "N2|meds")["calibration"].str.starts_with("blend/*").all()
    assert set(fc.filter(pl.col("calibration") == "in_sample")["series_id"]) == {"N3|meds"}
    # the plan says where each row's interval came from
    by_series = dict(plan.group_by("neighbourhood_id", "category").agg(pl.col("intervals").unique())
                     .select(pl.concat_str("neighbourhood_id", "category", separator="|"), "intervals").iter_rows())
    assert by_series == {"N1|parcels": ["calibrated"], "N1|groceries": ["calibrated"], "N2|parcels": ["calibrated"],
                         "N3|parcels": ["calibrated"], "N2|meds": ["calibrated"], "N3|meds": ["in_sample"]}


@pytest.mark.slow  # ~30 s: two backtests and three forecasts of a 6-series city
def test_weekly_calibration_run_then_the_nightly_forecast_is_calibrated(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    build_city(db, n_days=150).close()
    defs = _defs(db, tmp_path / "exports")
    with dg.instance_for_test() as instance:
        weekly = defs.resolve_job_def(CALIBRATION_JOB).execute_in_process(instance=instance)
        assert weekly.success
        md = _materializations(instance, weekly.run_id)[CALIBRATION_KEY]
        assert md["as_of"] == str(AS_OF) and md["series"] == 6 and md["origins"] == 4
        assert 0 < md["mase"] < 2 and md["mase_vs_seasonal_naive"] < 1.0
        for c, q in (("p10", 0.10), ("p50", 0.50), ("p80", 0.80), ("p90", 0.90), ("p95", 0.95)):
            assert 0.0 <= md[f"coverage_{c} (nominal {q:.2f})"] <= 1.0
        assert md["calibration_groups"] > 0 and "| civicflow | * |" in md["metrics"]
        con = duckdb.connect(str(db), read_only=True)
        stored = {t: con.execute(f"select count(*) from forecasts.{t}").fetchone()[0]
                  for t in ("calibration", "backtest_metrics", "backtest_metrics_series", "value_metrics")}
        con.close()
        assert all(n > 0 for n in stored.values()), stored

        night = defs.resolve_job_def("nightly").execute_in_process(instance=instance, partition_key=NIGHT_1)
        assert night.success
        mats = _materializations(instance, night.run_id)
        assert CALIBRATION_KEY not in mats  # a calibration exists: the night does not redo it
        _assert_calibrated(db, mats[DEMAND], mats[PLAN])


@pytest.mark.slow  # ~25 s
def test_first_night_without_calibration_learns_it_before_forecasting(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    build_city(db, n_days=150).close()
    defs = _defs(db, tmp_path / "exports")
    with dg.instance_for_test() as instance:
        first = defs.resolve_job_def("nightly").execute_in_process(instance=instance, partition_key=NIGHT_1)
        assert first.success
        mats = _materializations(instance, first.run_id)
        assert mats[CALIBRATION_KEY]["series"] == 6 and "mase" in mats[CALIBRATION_KEY]
        _assert_calibrated(db, mats[DEMAND], mats[PLAN])
        latest = instance.get_latest_materialization_event(CALIBRATION_KEY)
        assert latest is not None and latest.run_id == first.run_id

        second = defs.resolve_job_def("nightly").execute_in_process(instance=instance, partition_key=NIGHT_2)
        assert second.success and CALIBRATION_KEY not in _materializations(instance, second.run_id)


def test_calibration_schedule_is_weekly_and_configurable(tmp_path: Path) -> None:
    job = build_calibration_job(build_calibration_asset(ForecastEngineConfig()), build_failure_hook(NotifySettings(), {}))

    def schedule(env: dict[str, str]) -> dg.ScheduleDefinition:
        s = Settings.from_env(env, tmp_path).schedule  # as the Dagster definitions read it
        return build_calibration_schedule(job, s.calibration_cron, s.calibration_tz)

    default = schedule({})
    assert (default.cron_schedule, default.execution_timezone) == ("0 23 * * 0", "Europe/Amsterdam")
    moved = schedule({"CIVICFLOW_CALIBRATION_CRON": "30 4 * * 6", "CIVICFLOW_CALIBRATION_TZ": "UTC"})
    assert (moved.cron_schedule, moved.execution_timezone) == ("30 4 * * 6", "UTC")


def test_randomised_pit_means_something_where_most_days_are_zero():
    """Counts with 74 % zeros and the true Poisson(0.3) quantiles as forecast: "y ≤ p10"
    calls 74 % of days covered at the 10 % level; the randomised PIT stays near nominal."""
    import numpy as np

    from forecasts.quantiles import LEVELS, randomised_pit

    rng = np.random.default_rng(3)
    y = rng.poisson(0.3, 20_000).astype(float)
    from scipy.stats import poisson

    q = np.tile(poisson.ppf(LEVELS, 0.3), (len(y), 1))
    naive_p10 = float(np.mean(y <= q[:, 0]))
    pit = randomised_pit(y, q)
    assert naive_p10 > 0.7
    # the true quantiles, read on a 5-level grid: near nominal (not exact: the grid does not
    # say where between two levels the CDF jumps)
    assert abs(float(np.mean(pit <= 0.1)) - 0.1) < 0.05
    assert abs(float(np.mean(pit <= 0.5)) - 0.5) < 0.08
    assert abs(float(np.mean(pit <= 0.95)) - 0.95) < 0.03
    assert np.array_equal(pit, randomised_pit(y, q))  # seeded: a rerun gives the same figure


def test_quantile_sweep_is_lowest_at_the_planners_level_when_quantiles_are_true():
    """Demand drawn from known negative-binomial / Poisson laws and their true quantiles as
    the forecast: the realised cost of staging at level τ is lowest at the critical ratio
    the planner uses (within the flat bottom of the curve: ≤ 1.5 % above the best)."""
    import numpy as np
    import polars as pl
    from scipy.stats import poisson

    from forecasts.quantiles import LEVEL_COLUMNS, LEVELS
    from forecasts.value import quantile_sweep, sweep_verdict

    rng = np.random.default_rng(5)
    rows = []
    for cat, mu in (("parcels", 25.0), ("meds", 2.0), ("groceries", 9.0)):
        for k in range(3000):
            m = mu * (1 + 0.3 * np.sin(k))
            rows.append({"series_id": f"N1|{cat}", "method": "civicflow", "ds": k, "step": 1,
                         "y": float(rng.poisson(m)), **dict(zip(LEVEL_COLUMNS, poisson.ppf(LEVELS, m)))})
    pts = pl.DataFrame(rows)
    costs = {"parcels": (3.0, 1.0), "meds": (9.0, 1.0), "groceries": (1.0, 1.0)}
    v = sweep_verdict(quantile_sweep(pts, costs))
    assert v.height == 3
    assert (v["excess_pct"] < 1.5).all(), v
    assert dict(zip(v["category"], v["planner_level"])) == {"groceries": 0.5, "meds": 0.9, "parcels": 0.75}
