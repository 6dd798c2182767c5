"""The operations report: rendered offline, deterministic, and — in headless Chromium, with
no network — it shows the plan rows and draws the plotly charts."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from datetime import date, timedelta

import polars as pl
import pytest

from forecasts.exports import export_report, export_xlsx
from forecasts.planner import plan_staging
from forecasts.report import render
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
    assert not re.search(r"<script[^>]*\bsrc=", html1)  # plotly.js inlined: nothing fetched
    assert html1.count("<script") >= 2 and len(html1) > 1_000_000
    assert 'id="chart-HUB-A"' in html1 and 'id="plan-table"' in html1
    x1 = export_xlsx(plan, tmp_path / "a", DAYS[0]).read_bytes()
    x2 = export_xlsx(plan, tmp_path / "b", DAYS[0]).read_bytes()
    assert hashlib.sha256(x1).digest() == hashlib.sha256(x2).digest()
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "a" / str(DAYS[0]) / "staging_plan.xlsx")
    assert wb.sheetnames == ["Overview", "N1", "N2"]
    assert wb["N1"].max_row == 2 + plan.filter(pl.col("neighbourhood_id") == "N1").height  # header, rows, totals


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_plan_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        print("SKIP reason: chromium not installed (apt-get install -y chromium; .ci/run does it in CI)")
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run installs it in CI)")
    plan, fc, hist, metrics, value = _inputs()
    path = export_report(render(plan, fc, hist, metrics, value, AS_OF, DAYS[0], "test"), tmp_path, DAYS[0])
    profile = tmp_path / "chromium-profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    # the plan table: HUB-A's morning row of the first day with its units
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", dom.split('id="plan-table"', 1)[1].split("</table>", 1)[0], re.S)
    cells = [c for c in (re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows) if c]
    assert [str(DAYS[0]), "HUB-A", "N1", "parcels", "morning", "15"] in [c[:6] for c in cells]
    assert any(c[1] == "HUB-B" and c[-1] == "hub_capacity" for c in cells)
    # plotly ran (offline): every hub's chart has its SVG
    for hub in ("HUB-A", "HUB-B", "HUB-C"):
        chart = dom.split(f'id="chart-{hub}"', 1)[1][:20000]
        assert "main-svg" in chart, f"no plotly svg for {hub}"
    assert "fulfilment cost saved" in dom
