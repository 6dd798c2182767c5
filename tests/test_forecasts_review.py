"""What changed and how it went, on a real DuckDB warehouse: plans of several nights stored
by the nightly writer, pickups per hub in `marts.hub_utilisation_daily`."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from support.forecast_city import AS_OF, build_city, store_nights

from forecasts.review import outcome, plan_changes, scorecard


@pytest.fixture()
def warehouse(tmp_path):
    con = build_city(tmp_path / "w.duckdb")
    # nights AS_OF-3 … AS_OF; N1's median grows 20 → 26, then 60 (H1a 40 + H1b 20 caps it at 60 staged)
    store_nights(con, {AS_OF - timedelta(days=k): p50 for k, p50 in zip(range(3, -1, -1), (20.0, 22.0, 26.0, 60.0))})
    yield con
    con.close()


def test_plan_against_last_night_names_the_reason(warehouse):
    ch = plan_changes(warehouse, AS_OF - timedelta(days=1))  # median 22 → 26: the trend
    h1a = ch.filter((pl.col("hub_id") == "H1a") & (pl.col("category") == "parcels")).row(0, named=True)
    assert h1a["units_yesterday"] is not None and h1a["change"] == h1a["units"] - h1a["units_yesterday"] > 0
    assert h1a["reason"] == "trend" and "→" in h1a["why"]
    ch = plan_changes(warehouse, AS_OF)  # median 60: N1's 60 units of space cut it
    h1b = ch.filter(pl.col("hub_id") == "H1b").row(0, named=True)
    assert h1b["reason"] == "capacity" and h1b["units"] == 20
    meds = ch.filter(pl.col("hub_id") == "H2").row(0, named=True)
    assert meds["change"] == 0 and meds["reason"] == ""
    events = warehouse.execute("select * from marts.dim_events").pl().with_columns(
        pl.lit(AS_OF).alias("start_date"), pl.lit(AS_OF).alias("end_date"),
        pl.lit("Cup Final").alias("name"), pl.lit(29500).alias("expected_attendance"))
    ch = plan_changes(warehouse, AS_OF - timedelta(days=1), events.head(1))
    assert ch.filter(pl.col("hub_id") == "H1a")["why"][0] == "Cup Final (29,500 expected)"
    assert plan_changes(warehouse, AS_OF - timedelta(days=3)).is_empty()  # no night before the first


def test_last_nights_plan_against_what_happened(warehouse):
    out = outcome(warehouse, AS_OF)  # the plan of AS_OF-1 for AS_OF
    plan = warehouse.execute("select hub_id, category, sum(units) u from forecasts.staging_plan "
                             "where as_of = ? and plan_date = ? group by all", [AS_OF - timedelta(days=1), AS_OF]).pl()
    assert out["staged"].sum() == plan["u"].sum()
    a = out.filter(pl.col("hub_id") == "H1a").row(0, named=True)
    assert a["demand"] == 30 and a["units_short"] == 30 - a["staged"] > 0 and a["hauled_back"] == 0
    assert a["service_level"] == pytest.approx(a["staged"] / 30, abs=1e-4)
    assert a["cost"] == pytest.approx(3.0 * a["units_short"])  # parcels: 3 EUR a unit short
    m = out.filter(pl.col("hub_id") == "H2").row(0, named=True)
    assert m["hauled_back"] == m["staged"] - 3 and m["cost"] == pytest.approx(1.0 * m["hauled_back"])


def test_scorecard_rolls_cost_against_yesterday_and_reactive(warehouse):
    sc = scorecard(warehouse, AS_OF)
    assert sc["day"].to_list() == [AS_OF - timedelta(days=k) for k in (2, 1, 0)]  # days with a plan the night before
    assert sc["days_scored"].to_list() == [1, 2, 3]
    # reactive: every unit short, 3 EUR parcels, 9 EUR meds
    react = [3 * (15 + 9 + 20) + 9 * 3, 3 * (15 + 9 + 20) + 9 * 3, 3 * (30 + 9 + 20) + 9 * 3]
    assert sc["cost_reactive"].to_list() == react
    # yesterday on AS_OF: H1a stages 15 for 30 (15 short), the others exact
    assert sc["cost_yesterday"][-1] == 3 * 15
    assert sc["rolling_civicflow"][-1] == pytest.approx(sc["cost_civicflow"].sum())
    assert sc["rolling_saving_vs_reactive"][-1] == pytest.approx(1 - sc["cost_civicflow"].sum() / sum(react), abs=1e-4)
    assert scorecard(warehouse, AS_OF, days=1).height == 1
