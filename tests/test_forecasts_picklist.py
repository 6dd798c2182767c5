"""Pick lists: one printable page per hub with what to stage per window, the median and 90 %
demand and the space left; printed to one PDF page per hub by headless Chromium, offline."""

from __future__ import annotations

import re
from datetime import timedelta

import polars as pl
import pytest
from support.chromium import chromium, open_page
from support.forecast_city import AS_OF, build_city

from forecasts.picklist import export_pick_lists, pick_lists
from forecasts.places import read_places
from forecasts.planner import plan_staging
from forecasts.windows import split_plan

DAY = AS_OF + timedelta(days=1)
WINDOWS = ["night", "morning", "afternoon", "evening"]


@pytest.fixture()
def plan_and_places(tmp_path):
    con = build_city(tmp_path / "w.duckdb")
    places = read_places(con)
    hubs = con.execute("select hub_id, neighbourhood_id from marts.dim_hubs").pl()
    cap = con.execute("select hub_id, category, capacity_units from marts.hub_capacity").pl()
    cats = con.execute("select category, under_cost, over_cost from marts.dim_categories").pl()
    con.close()
    fc = pl.DataFrame({"neighbourhood_id": ["N1", "N2", "N1"], "category": ["parcels", "meds", "parcels"],
                       "forecast_date": [DAY, DAY, DAY + timedelta(days=1)], "p10": [30.0, 0, 5], "p50": [40.0, 1, 9],
                       "p80": [46.0, 2, 11], "p90": [50.0, 3, 12], "p95": [54.0, 4, 13]})
    profile = pl.DataFrame({"neighbourhood_id": ["N1"] * 4, "category": ["parcels"] * 4, "dow": [0] * 4,
                            "window": WINDOWS, "share": [0.1, 0.4, 0.3, 0.2], "day_units": [100.0] * 4})
    return split_plan(plan_staging(fc, hubs, cap, cats), profile), places


def test_one_page_per_hub_with_units_demand_and_space_left(plan_and_places):
    plan, places = plan_and_places
    pages = pick_lists(plan, places, DAY)
    assert sorted(pages) == ["H1a.html", "H1b.html", "H2.html", "all.html"]
    h1a = pages["H1a.html"]
    assert "Pick list · North A" in h1a and "Northfield" in h1a and "Mill Lane 3" in h1a and "51.51200, -0.12100" in h1a and "@page" in h1a
    assert [w for w in WINDOWS if f"<td colspan=\"7\">{w} " in h1a] == WINDOWS
    assert h1a.index(">night ") < h1a.index(">morning ") < h1a.index(">afternoon ") < h1a.index(">evening ")
    assert "for Monday 1 July 2024" in h1a
    day = plan.filter((pl.col("hub_id") == "H1a") & (pl.col("plan_date") == DAY))
    units = [int(u) for u in re.findall(r'class="units">([\d,]+)<', h1a)]
    assert units == day["units"].to_list()  # the first day only, windows in time order
    left = [int(x) for x in re.findall(r'class="left">(-?\d+)<', h1a)]
    assert left == [40 - u for u in day["units"].to_list()]  # H1a has 40 units of parcel space
    assert "nothing to stage</span>" not in h1a
    assert int(re.search(r'class="total">([\d,]+)<', h1a).group(1)) == day["units"].sum()
    assert pages["all.html"].count('class="page"') == 3 and pages == pick_lists(plan, places, DAY)  # deterministic


def test_a_row_with_nothing_to_stage_is_left_out(plan_and_places):
    plan, places = plan_and_places
    night = (pl.col("hub_id") == "H1a") & (pl.col("window") == "night") & (pl.col("plan_date") == DAY)
    h1a = pick_lists(plan.with_columns(pl.when(night).then(0).otherwise(pl.col("units")).alias("units")),
                     places, DAY)["H1a.html"]
    assert '<td colspan="7">night 00:00–06:00 <span class="none">· nothing to stage</span></td>' in h1a
    rest = plan.filter(~night & (pl.col("hub_id") == "H1a") & (pl.col("plan_date") == DAY))["units"].to_list()
    assert [int(u) for u in re.findall(r'class="units">([\d,]+)<', h1a)] == rest


@pytest.mark.slow
def test_pdf_has_one_page_per_hub_and_the_page_requests_nothing(plan_and_places, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    plan, places = plan_and_places
    folder = export_pick_lists(plan, places, tmp_path, DAY, exe)
    pdf = (folder / "pick_lists.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 3
    assert b"/CreationDate (D:20240701000000" in pdf
    again = export_pick_lists(plan, places, tmp_path / "again", DAY, exe)
    assert (again / "pick_lists.pdf").read_bytes() == pdf  # the same plan prints the same bytes
    page = open_page((folder / "H2.html").as_uri(), width=900, height=900)
    assert page.requests and page.remote == []
    assert "Pick list · Centre" in page.dom


def test_a_missing_chromium_fails_with_its_name(plan_and_places, tmp_path):
    plan, places = plan_and_places
    with pytest.raises((RuntimeError, FileNotFoundError), match="no-such-chromium"):
        export_pick_lists(plan, places, tmp_path, DAY, "/nonexistent/no-such-chromium")
