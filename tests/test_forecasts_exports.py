"""The plan files as operations read them: names and places, key columns first, windows in
time order, units and EUR in the headers; a workbook with typed dates, formats, autofilter,
frozen panes and a totals row. Read back with polars and openpyxl."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
from openpyxl import load_workbook
from support.forecast_city import build_city

from forecasts.exports import export_plan, export_xlsx
from forecasts.places import read_places
from forecasts.planner import plan_staging
from forecasts.windows import split_plan

AS_OF = date(2024, 6, 30)
DAYS = [AS_OF + timedelta(days=k) for k in (1, 2)]
TIME_ORDER = ["night", "morning", "afternoon", "evening"]


def _plan_and_places(tmp_path):
    con = build_city(tmp_path / "w.duckdb")
    places = read_places(con)
    hubs = con.execute("select hub_id, neighbourhood_id from marts.dim_hubs order by hub_id").pl()
    cap = con.execute("select hub_id, category, capacity_units from marts.hub_capacity").pl()
    cats = con.execute("select category, under_cost, over_cost from marts.dim_categories").pl()
    con.close()
    fc = pl.DataFrame({
        "neighbourhood_id": ["N1"] * 2 + ["N2"] * 2, "category": ["parcels"] * 2 + ["meds"] * 2,
        "forecast_date": DAYS * 2,
        "p10": [30.0, 22, 0, 0], "p50": [40.0, 33, 1, 1], "p80": [46.0, 39, 2, 2], "p90": [50.0, 43, 3, 3],
        "p95": [54.0, 47, 4, 4]})
    profile = pl.DataFrame({"neighbourhood_id": ["N1"] * 4, "category": ["parcels"] * 4, "dow": [0] * 4,
                            "window": TIME_ORDER, "share": [0.1, 0.4, 0.3, 0.2], "day_units": [100.0] * 4})
    return split_plan(plan_staging(fc, hubs, cap, cats), profile), places


def test_places_come_from_the_marts(tmp_path):
    _, places = _plan_and_places(tmp_path)
    north = places.filter(pl.col("hub_id") == "H1a").row(0, named=True)
    assert north["hub_name"] == "North A" and north["neighbourhood_name"] == "Northfield"
    # the hub's own site, not its neighbourhood's centroid (51.51, -0.12)
    assert (north["hub_address"], north["lat"], north["lon"]) == ("Mill Lane 3", 51.512, -0.121)
    assert (north["neighbourhood_lat"], north["neighbourhood_lon"]) == (51.51, -0.12)


def test_csv_has_names_key_columns_first_and_windows_in_time_order(tmp_path):
    plan, places = _plan_and_places(tmp_path)
    paths = export_plan(plan, tmp_path / "x", DAYS[0], places)
    csv = pl.read_csv(paths["csv"], try_parse_dates=True)
    assert csv.columns[:6] == ["plan date", "hub", "hub name", "neighbourhood", "category", "delivery window"]
    assert "units to stage (units)" in csv.columns and "cost per unit short (EUR)" in csv.columns
    h1b = csv.filter(pl.col("hub") == "H1b").row(0, named=True)
    assert (h1b["hub address"], h1b["hub latitude (°)"], h1b["hub longitude (°)"]) == ("Church Street 40", 51.508, -0.118)
    assert "neighbourhood_lat" not in csv.columns
    assert csv.height == plan.height
    h1a = csv.filter((pl.col("hub") == "H1a") & (pl.col("plan date") == DAYS[0]))
    assert h1a["delivery window"].to_list() == TIME_ORDER  # not alphabetical (afternoon first)
    assert h1a["window hours (local)"].to_list()[0] == "00:00–06:00"
    assert set(h1a["hub name"]) == {"North A"} and set(h1a["neighbourhood"]) == {"Northfield"}
    keys = csv.select("plan date", "hub", "category").rows()
    assert keys == sorted(keys)  # rows in plan date, hub, category order
    pq = pl.read_parquet(paths["parquet"])
    assert pq["units"].sum() == plan["units"].sum() and "hub_name" in pq.columns


def test_workbook_is_typed_formatted_filtered_frozen_and_totalled(tmp_path):
    plan, places = _plan_and_places(tmp_path)
    wb = load_workbook(export_xlsx(plan, tmp_path / "x", DAYS[0], places))
    assert wb.sheetnames == ["Overview", "Northfield", "Old Town"]
    ws = wb["Northfield"]
    header = [c.value for c in ws[1]]
    assert header[:6] == ["plan date", "hub", "hub name", "neighbourhood", "category", "delivery window"]
    col = {h: i + 1 for i, h in enumerate(header)}
    first = ws.cell(2, col["plan date"])
    assert isinstance(first.value, datetime) and first.value.date() == DAYS[0] and first.number_format == "yyyy-mm-dd"
    assert ws.cell(2, col["units to stage (units)"]).number_format == "#,##0"
    assert isinstance(ws.cell(2, col["units to stage (units)"]).value, int)
    assert ws.cell(2, col["service level staged for (%)"]).number_format == "0.0%"
    assert ws.cell(2, col["cost per unit short (EUR)"]).number_format.endswith('"EUR"')
    assert ws.cell(2, col["hub address"]).value in {"Mill Lane 3", "Church Street 40"}
    assert ws.cell(2, col["hub latitude (°)"]).value in {51.512, 51.508}
    assert ws.cell(2, col["hub latitude (°)"]).number_format == "0.00000"
    n = plan.filter(pl.col("neighbourhood_id") == "N1").height
    assert ws.max_row == 1 + n + 1  # header, rows, totals
    assert ws.auto_filter.ref == f"A1:{ws.cell(1, len(header)).column_letter}{n + 1}"
    assert ws.freeze_panes == "D2"
    assert ws.cell(n + 2, 1).value == "Total"
    units_letter = ws.cell(1, col["units to stage (units)"]).column_letter
    assert ws.cell(n + 2, col["units to stage (units)"]).value == f"=SUBTOTAL(109,{units_letter}2:{units_letter}{n + 1})"
    rows_units = sum(ws.cell(r, col["units to stage (units)"]).value for r in range(2, n + 2))
    assert rows_units == plan.filter(pl.col("neighbourhood_id") == "N1")["units"].sum()
    windows = [ws.cell(r, col["delivery window"]).value for r in range(2, 6)]
    assert windows == TIME_ORDER
    ov = wb["Overview"]
    assert [c.value for c in ov[1]][:5] == ["plan date", "hub", "hub name", "neighbourhood", "category"]
    assert ov.cell(ov.max_row, 1).value == "Total"
