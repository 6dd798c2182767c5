"""The plan's blocking checks: a good plan passes all four; each kind of bad plan fails its
check with the offending rows named; a refused plan is neither stored nor exported."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from forecasts.plan_checks import check_plan
from forecasts.planner import plan_staging
from forecasts.windows import split_plan

AS_OF = date(2024, 6, 30)
DAYS = [AS_OF + timedelta(days=k) for k in (1, 2)]
HUBS = pl.DataFrame({"hub_id": ["HUB-A", "HUB-B", "HUB-C"], "neighbourhood_id": ["N1", "N1", "N2"]})
CAP = pl.DataFrame({"hub_id": ["HUB-A", "HUB-B", "HUB-C"], "category": ["parcels", "parcels", "meds"],
                    "capacity_units": [30, 7, 10]})
FC = pl.DataFrame({
    "neighbourhood_id": ["N1", "N1", "N2", "N2"], "category": ["parcels", "parcels", "meds", "meds"],
    "forecast_date": DAYS * 2,
    "p10": [30.0, 22, 0, 0], "p50": [40.0, 33, 1, 1], "p80": [46.0, 39, 2, 2], "p90": [50.0, 43, 3, 3],
    "p95": [54.0, 47, 4, 4]})


def _plan() -> pl.DataFrame:
    cats = pl.DataFrame({"category": ["parcels", "meds"], "under_cost": [3.0, 9.0], "over_cost": [1.0, 1.0]})
    profile = pl.DataFrame({"neighbourhood_id": ["N1"] * 4, "category": ["parcels"] * 4, "dow": [0] * 4,
                            "window": ["night", "morning", "afternoon", "evening"],
                            "share": [0.0, 0.5, 0.3, 0.2], "day_units": [100.0] * 4})
    return split_plan(plan_staging(FC, HUBS, CAP, cats), profile)


def _failed(plan: pl.DataFrame) -> dict[str, str]:
    return {c.name: c.description for c in check_plan(plan, FC, HUBS, CAP) if not c.passed}


def test_the_planners_plan_passes_every_check():
    checks = check_plan(_plan(), FC, HUBS, CAP)
    assert [c.name for c in checks] == ["one_row_per_hub_category_window", "no_negative_units",
                                        "within_capacity", "totals_consistent_with_forecast"]
    assert all(c.passed for c in checks), [c.description for c in checks]


def test_duplicate_and_missing_rows_fail_the_key_check():
    plan = _plan()
    dup = pl.concat([plan, plan.head(1)])
    assert "duplicate" in _failed(dup)["one_row_per_hub_category_window"]
    missing = plan.filter(pl.col("hub_id") != "HUB-C")
    assert "HUB-C" in _failed(missing)["one_row_per_hub_category_window"]
    no_night = plan.filter(~((pl.col("hub_id") == "HUB-A") & (pl.col("window") == "night")))
    assert "windows afternoon,evening,morning" in _failed(no_night)["one_row_per_hub_category_window"]


def test_negative_units_fail():
    plan = _plan().with_columns(pl.when(pl.col("hub_id") == "HUB-C").then(-1).otherwise(pl.col("units")).alias("units"))
    failed = _failed(plan)
    assert "no_negative_units" in failed and "HUB-C" in failed["no_negative_units"]


def test_over_capacity_fails():
    bump = (pl.col("hub_id") == "HUB-B") & (pl.col("window") == "morning") & (pl.col("plan_date") == DAYS[0])
    plan = _plan().with_columns(pl.when(bump).then(pl.col("units") + 20).otherwise(pl.col("units")).alias("units"))
    failed = _failed(plan)
    assert "within_capacity" in failed and "HUB-B" in failed["within_capacity"]
    assert "totals_consistent_with_forecast" in failed  # more than the forecast's quantile too


def test_totals_that_drift_from_the_forecast_fail():
    plan = _plan().with_columns(pl.when(pl.col("hub_id") == "HUB-C").then(0).otherwise(pl.col("units")).alias("units"))
    failed = _failed(plan)  # HUB-C is not capped, so its units must equal the target
    assert set(failed) == {"totals_consistent_with_forecast"} and "N2" in failed["totals_consistent_with_forecast"]


def test_a_refused_plan_is_neither_stored_nor_exported(tmp_path):
    from support.forecast_city import build_city

    from forecasts.run import run_nightly_forecast
    from pipelines.forecast_assets import PlanRefused, plan_gate

    con = build_city(tmp_path / "w.duckdb", n_days=70)
    seen: list = []

    def corrupt_then_check(plan, forecast, hubs, capacity):
        bad = plan.with_columns((pl.col("units") + 1000).alias("units"))
        plan_gate(seen)(bad, forecast, hubs, capacity)

    with pytest.raises(PlanRefused):
        run_nightly_forecast(con, None, 2, tmp_path / "exports", workers=1, calibrate=False, report=False,
                             before_export=corrupt_then_check)
    assert {c.name for c in seen if not c.passed} == {"within_capacity", "totals_consistent_with_forecast"}
    assert not (tmp_path / "exports").exists()
    have = con.execute("select count(*) from information_schema.tables where table_schema = 'forecasts'").fetchone()[0]
    assert have == 0
    good: list = []
    s = run_nightly_forecast(con, None, 2, tmp_path / "exports", workers=1, calibrate=False, report=False,
                             before_export=plan_gate(good))
    assert all(c.passed for c in good) and s.plan_path.exists()
    con.close()


def test_a_complete_forecast_passes_and_gaps_duplicates_and_nans_fail_with_the_rows_named():
    from forecasts.plan_checks import check_forecast

    (ok,) = check_forecast(FC)
    assert ok.passed and ok.name == "forecast_complete"
    gap = FC.filter(~((pl.col("neighbourhood_id") == "N2") & (pl.col("forecast_date") == DAYS[1])))
    (c,) = check_forecast(gap)
    assert not c.passed and c.failing == 1 and "N2" in c.description and "missing" in c.description
    (c,) = check_forecast(pl.concat([FC, FC.head(1)]))
    assert not c.passed and "duplicate" in c.description
    (c,) = check_forecast(FC.with_columns(pl.when(pl.col("category") == "meds").then(float("nan")).otherwise(pl.col("p90")).alias("p90")))
    assert not c.passed and c.failing == 2 and "finite" in c.description
    (c,) = check_forecast(FC.clear())
    assert not c.passed


def test_the_forecast_and_the_plan_carry_their_blocking_checks_in_the_ui(tmp_path):
    import dagster as dg

    from forecasts.config import ForecastConfig
    from pipelines.forecast_assets import FORECAST_CHECKS, PLAN_CHECKS, build_forecast_asset
    from pipelines.partitions import daily_partitions

    asset = build_forecast_asset(tmp_path, daily_partitions(date(2026, 1, 1)), ForecastConfig())
    specs = {(s.asset_key.to_user_string(), s.name): s for s in asset.check_specs}
    assert {name for key, name in specs if key == "forecasts/demand_forecast"} == set(FORECAST_CHECKS)
    assert {name for key, name in specs if key == "forecasts/staging_plan"} == set(PLAN_CHECKS)
    assert all(s.blocking and s.description for s in specs.values())
    assert isinstance(asset, dg.AssetsDefinition)
