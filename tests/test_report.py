"""The operations report: rendered offline, deterministic, and — in headless Chromium, with
no network — it shows the plan rows and draws the plotly charts."""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta

import polars as pl
import pytest
from support.chromium import chromium, open_page
from support.forecast_city import build_city, store_nights

from forecasts.exports import export_xlsx
from forecasts.planner import plan_staging
from forecasts.report import render
from forecasts.run import report_from_warehouse
from forecasts.windows import split_plan

AS_OF = date(2024, 6, 30)
DAYS = [AS_OF + timedelta(days=k) for k in (1, 2)]


def _inputs():
    fc = pl.DataFrame({
        "series_id": ["N1|parcels"] * 2 + ["N2|meds"] * 2,
        "neighbourhood_id": ["N1", "N1", "N2", "N2"], "category": ["parcels", "parcels", "meds", "meds"],
        "forecast_date": DAYS * 2,
        "p10": [30.0, 22, 0, 0], "p50": [40.0, 33, 1, 1], "p80": [46.0, 39, 2, 2], "p90": [50.0, 43, 3, 3],
        "p95": [54.0, 47, 4, 4],
    })
    hubs = pl.DataFrame({"hub_id": ["HUB-A", "HUB-B", "HUB-C"], "neighbourhood_id": ["N1", "N1", "N2"]})
    cap = pl.DataFrame({"hub_id": ["HUB-A", "HUB-B", "HUB-C"], "category": ["parcels", "parcels", "meds"],
                        "capacity_units": [30, 7, 10]})
    cats = pl.DataFrame({"category": ["parcels", "meds"], "under_cost": [3.0, 9.0], "over_cost": [1.0, 1.0]})
    plan = plan_staging(fc.drop("series_id"), hubs, cap, cats)
    profile = pl.DataFrame({"neighbourhood_id": ["N1"] * 4, "category": ["parcels"] * 4, "dow": [0] * 4,
                            "window": ["night", "morning", "afternoon", "evening"],
                            "share": [0.0, 0.5, 0.3, 0.2], "day_units": [100.0] * 4})
    plan = split_plan(plan, profile)
    hist = pl.DataFrame({"neighbourhood_id": ["N1"] * 30 + ["N2"] * 30, "category": ["parcels"] * 30 + ["meds"] * 30,
                         "ds": [AS_OF - timedelta(days=29 - k) for k in range(30)] * 2,
                         "y": [float(25 + k % 7) for k in range(30)] + [float(k % 3) for k in range(30)]})
    metrics = pl.DataFrame({"method": ["civicflow", "seasonal_naive"], "kind": ["*", "*"], "n_series": [2, 2],
                            "mase": [0.6, 1.0], "mase_vs_naive": [0.6, 1.0], "pinball": [1.2, 2.0],
                            "cov_p10": [0.1, 0.12], "cov_p50": [0.5, 0.52], "cov_p80": [0.8, 0.79],
                            "cov_p90": [0.9, 0.88], "cov_p95": [0.95, 0.94], "mae_event": [5.0, 12.0],
                            "mae_non_event": [3.0, 4.0]})
    value = pl.DataFrame({"policy": ["civicflow", "reactive", "yesterday"], "days": [28] * 3, "demand_units": [900.0] * 3,
                          "staged_units": [950.0, 0.0, 880.0], "units_short": [40.0, 900.0, 120.0],
                          "units_excess": [90.0, 0.0, 100.0], "cost": [210.0, 2700.0, 460.0],
                          "civicflow_reduction": [None, 0.92, 0.54], "reduction_ci_low": [None, 0.9, 0.4],
                          "reduction_ci_high": [None, 0.94, 0.65]})
    return plan, fc, hist, metrics, value


def test_windows_split_units_exactly():
    plan, *_ = _inputs()
    a = plan.filter((pl.col("hub_id") == "HUB-A") & (pl.col("plan_date") == DAYS[0]))
    assert a["window"].to_list() == ["night", "morning", "afternoon", "evening"]
    # day 1: p75 of N1 = 44.5 → 45 units > 30 + 7 capacity: both hubs capped, HUB-A's 30 split
    assert a["units"].sum() == 30 and a["cap_reason"].to_list() == ["hub_capacity"] * 4
    assert a.filter(pl.col("window") == "morning")["units"][0] == 15
    c = plan.filter(pl.col("hub_id") == "HUB-C")
    assert set(c["window"]) == {"day"}  # no hourly profile for N2|meds: one whole-day row


def test_report_and_xlsx_are_deterministic(tmp_path):
    plan, fc, hist, metrics, value = _inputs()
    html1 = render(plan, fc, hist, metrics, value, AS_OF, DAYS[0], "test")
    html2 = render(plan, fc, hist, metrics, value, AS_OF, DAYS[0], "test")
    assert html1 == html2
    assert "<script" not in html1 and not re.search(r"""(src|href)=["']?(https?:)?//""", html1)  # nothing to fetch
    assert len(html1) < 100_000  # inline SVG, no plotly.js
    assert 'id="chart-HUB-A"' in html1 and 'id="plan-table"' in html1
    x1 = export_xlsx(plan, tmp_path / "a", DAYS[0]).read_bytes()
    x2 = export_xlsx(plan, tmp_path / "b", DAYS[0]).read_bytes()
    assert hashlib.sha256(x1).digest() == hashlib.sha256(x2).digest()
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "a" / str(DAYS[0]) / "staging_plan.xlsx")
    assert wb.sheetnames == ["Overview", "N1", "N2"]
    assert wb["N1"].max_row == 2 + plan.filter(pl.col("neighbourhood_id") == "N1").height  # header, rows, totals


def _cells(dom: str, table_id: str) -> list[list[str]]:
    body = dom.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows
            if "<td" in r]


@pytest.fixture(scope="module")
def city_report(tmp_path_factory):
    """A report rendered from a real warehouse: the forecast city with four nights of plans
    and the hubs' pickups; returns (report path, tonight's plan, warehouse path)."""
    tmp = tmp_path_factory.mktemp("report")
    con = build_city(tmp / "w.duckdb")
    store_nights(con, {AS_OF - timedelta(days=k): p50 for k, p50 in zip(range(3, -1, -1), (20.0, 22.0, 26.0, 60.0))})
    path = report_from_warehouse(con, tmp / "exports", chromium=chromium())
    plan = con.execute("select * from forecasts.staging_plan where as_of = ?", [AS_OF]).pl()
    con.close()
    return path, plan


def test_report_from_the_warehouse_names_places_and_links_the_pick_lists(city_report):
    path, plan = city_report
    text = path.read_text()
    for section in ("overview", "map", "glance", "events", "uncertainty", "changes", "how-it-went", "scorecard",
                    "hubs", "quality", "value", "plan"):
        assert f'href="#{section}"' in text and f'id="{section}"' in text, section
    assert text.index('id="overview"') < text.index('id="hubs"') < text.index('id="plan"')  # overview first
    assert "North A" in text and "Northfield" in text
    # where each hub stands: its address in the glance table and its chart's title, its own point on the map
    glance = {r[0]: r[1] for r in _cells(text, "glance-table")}
    assert glance == {"North A": "Mill Lane 3", "North B": "Church Street 40", "Centre": "Market Square 1"}
    assert "North A (H1a) · Mill Lane 3" in text
    spots = re.findall(r'class="hub" data-hub="[^"]+" data-units="\d+" cx="([\d.]+)" cy="([\d.]+)"', text)
    assert len(set(spots)) == len(spots) == plan["hub_id"].n_unique()  # H1a and H1b apart, not on one centroid
    # no section shows a bare id where a name exists: hub cells are names, the id sits in its own last column
    for table in ("glance-table", "plan-table", "changes-table"):
        for row in _cells(text, table):
            assert row[0] in {"North A", "North B", "Centre", "South"}, (table, row)
    assert text.count('class="hub-chart"') == plan["hub_id"].n_unique()  # one compact chart per hub
    for hub in plan["hub_id"].unique():
        assert f'href="pick_lists/{hub}.html"' in text
        assert (path.parent / "pick_lists" / f"{hub}.html").is_file()
    # the review in the report, as CSV and as workbook sheets, with the same numbers
    sc = pl.read_csv(path.parent / "scorecard_28_days.csv")
    assert sc.height == 3 and "28-day saving vs yesterday's demand (%)" in sc.columns
    last = sc.sort("day").row(-1, named=True)
    assert f"the model's plans cost {last['28-day cost of the plans (EUR)']:,.0f} EUR" in text
    assert f"staging nothing {last['28-day cost staging nothing (EUR)']:,.0f} EUR" in text
    went = pl.read_csv(path.parent / "how_it_went.csv")
    assert f"The model's plan staged {went['units staged (units)'].sum():,} units for {went['units picked up (units)'].sum():,.0f} picked up" in text
    changes = pl.read_csv(path.parent / "plan_changes.csv")
    assert set(changes["hub name"]) <= {"North A", "North B", "Centre", "South"} and "main reason" in changes.columns
    from openpyxl import load_workbook

    wb = load_workbook(path.parent / "staging_plan.xlsx")
    assert wb.sheetnames == ["Overview", "Northfield", "Old Town", "What changed", "How it went", "Scorecard 28 days"]
    ws = wb["Scorecard 28 days"]
    header = [c.value for c in ws[1]]
    assert ws.cell(2, header.index("day") + 1).is_date
    assert ws.cell(2, header.index("28-day saving vs staging nothing (%)") + 1).number_format == "0.0%"


@pytest.mark.slow
def test_report_in_chromium_requests_nothing_and_shows_the_plan(city_report, tmp_path):
    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    path, plan = city_report
    page = open_page(path.resolve().as_uri(), pdf=True)
    (tmp_path / "report.png").write_bytes(page.screenshot)
    assert page.requests and page.remote == []  # it loaded, and nothing but the file itself
    day = plan.filter(pl.col("plan_date") == DAYS[0])
    # the headline number and the glance table are the plan's sums
    total = re.search(r'id="total-units">([\d,]+)<', page.dom).group(1)
    assert int(total.replace(",", "")) == day["units"].sum()
    names = {"H1a": "North A", "H1b": "North B", "H2": "Centre", "H3": "South"}
    glance = {r[0]: int(r[-3 if "vs last night" in page.dom else -2].replace(",", "")) for r in _cells(page.dom, "glance-table")}
    per_hub = {names[h]: u for h, u in day.group_by("hub_id").agg(pl.col("units").sum()).iter_rows()}
    assert glance == per_hub
    # the plan table: every non-zero row, units as planned
    shown = {(r[0], r[2], r[3]): int(r[4].replace(",", "")) for r in _cells(page.dom, "plan-table")}
    want = {(names[r["hub_id"]], r["category"], r["window"]): r["units"]
            for r in day.filter(pl.col("units") > 0).iter_rows(named=True)}
    assert shown == want
    # each chart's bars carry the staged units of every day
    for r in plan.group_by("hub_id", "category", "plan_date").agg(pl.col("units").sum()).iter_rows(named=True):
        chart = page.dom.split(f'id="chart-{r["hub_id"]}"', 1)[1].split("</svg>", 1)[0]
        assert f'data-day="{r["plan_date"]}" data-category="{r["category"]}" data-units="{r["units"]}"' in chart
    # the map: one circle per hub, sized by its units
    assert sorted(re.findall(r'class="hub" data-hub="([^"]+)" data-units="(\d+)"', page.dom)) == sorted(
        (h, str(u)) for h, u in day.group_by("hub_id").agg(pl.col("units").sum()).iter_rows())
    assert page.pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", page.pdf)) >= 2  # it prints


@pytest.mark.slow
def test_the_network_check_sees_a_request(tmp_path):
    """The harness behind the test above: a page that fetches from a server is caught."""
    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    assert open_page(page_file.as_uri(), settle_s=0.5).remote == ["http://127.0.0.1:9/pixel.png"]


def test_report_of_a_small_city_sized_plan_stays_under_1_5_mb():
    """The small city's shape (12 neighbourhoods, 30 hubs, 6 categories, 4 windows), planned
    a week ahead — more days than the nightly plan — with 4 weeks of history."""
    import numpy as np

    rng = np.random.default_rng(3)
    nbs = [f"N{i:02d}" for i in range(12)]
    cats = ["electronics", "event_gear", "groceries", "meal_kits", "parcels", "pharmacy"]
    days = [AS_OF + timedelta(days=k) for k in range(1, 8)]
    rows = []
    for nb in nbs:
        for c in cats:
            for d in days:
                m = float(rng.integers(2, 60))
                rows.append((nb, c, d, m * 0.6, m, m * 1.2, m * 1.35, m * 1.5))
    fc = pl.DataFrame(rows, schema=["neighbourhood_id", "category", "forecast_date", "p10", "p50", "p80", "p90", "p95"],
                      orient="row")
    hubs = pl.DataFrame({"hub_id": [f"H{i:04d}" for i in range(30)], "neighbourhood_id": [nbs[i % 12] for i in range(30)]})
    cap = pl.DataFrame({"hub_id": [h for h in hubs["hub_id"] for _ in cats], "category": cats * 30,
                        "capacity_units": [80] * 180})
    costs = pl.DataFrame({"category": cats, "under_cost": [3.0] * 6, "over_cost": [1.0] * 6})
    profile = pl.DataFrame([(nb, c, dow, w, s, 100.0) for nb in nbs for c in cats for dow in range(7)
                            for w, s in zip(["night", "morning", "afternoon", "evening"], [0.1, 0.4, 0.3, 0.2])],
                           schema=["neighbourhood_id", "category", "dow", "window", "share", "day_units"], orient="row")
    plan = split_plan(plan_staging(fc, hubs, cap, costs), profile)
    hist = pl.DataFrame([(nb, c, AS_OF - timedelta(days=k), float(rng.integers(0, 60))) for nb in nbs for c in cats
                         for k in range(28)], schema=["neighbourhood_id", "category", "ds", "y"], orient="row")
    places = pl.DataFrame({"hub_id": hubs["hub_id"], "hub_name": [f"Hub {i}" for i in range(30)],
                           "neighbourhood_id": hubs["neighbourhood_id"],
                           "neighbourhood_name": [f"Quarter {n}" for n in hubs["neighbourhood_id"]],
                           "hub_address": [f"Kerkstraat {i + 1}" for i in range(30)],
                           "lat": [52.0 + int(n[1:]) * 0.01 + i * 1e-4 for i, n in enumerate(hubs["neighbourhood_id"])],
                           "lon": [4.0 + int(n[1:]) % 4 * 0.02 for n in hubs["neighbourhood_id"]],
                           "neighbourhood_lat": [52.0 + int(n[1:]) * 0.01 for n in hubs["neighbourhood_id"]],
                           "neighbourhood_lon": [4.0 + int(n[1:]) % 4 * 0.02 for n in hubs["neighbourhood_id"]]})
    *_, metrics, value = _inputs()
    text = render(plan, fc.with_columns(pl.lit("calibrated").alias("calibration")), hist, metrics, value, AS_OF, days[0],
                  places=places, pick_lists="pick_lists")
    assert plan.height == 30 * 6 * 4 * 7
    assert text.count('class="hub-chart"') == 30
    assert len(text.encode()) < 1_500_000, len(text.encode())
