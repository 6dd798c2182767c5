"""`civicflow forecast …` on files it has never seen: a multi-series daily file with events,
a one-series `ds,y` file, an hourly file; and `forecast report` on a home."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _daily(n: int, rng, base: float, weekly: float) -> np.ndarray:
    t = np.arange(n)
    return rng.poisson(np.maximum(base + weekly * np.sin(2 * np.pi * t / 7), 0.1)).astype(float)


def test_forecast_help():
    for args in (["forecast", "--help"], ["forecast", "backtest", "--help"], ["forecast", "report", "--help"],
                 ["forecast", "evaluate", "--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    assert "--series" in runner.invoke(app, ["forecast", "backtest", "--help"]).output


@pytest.mark.slow
def test_forecast_backtest_multi_series_with_events(tmp_path):
    rng = np.random.default_rng(4)
    start, n = date(2024, 1, 1), 150
    rows = []
    for sid, base in (("north|parcels", 25.0), ("south|meds", 9.0)):
        y = _daily(n, rng, base, base / 4)
        rows += [(sid, str(start + timedelta(days=k)), float(y[k])) for k in range(n)]
    pl.DataFrame(rows, schema=["series_id", "ds", "y"], orient="row").write_csv(tmp_path / "s.csv")
    pl.DataFrame({"name": ["Spring fair"], "start": ["2024-05-20"], "end": ["2024-05-21"]}).write_csv(tmp_path / "e.csv")
    r = runner.invoke(app, ["forecast", "backtest", "--series", str(tmp_path / "s.csv"), "--events",
                            str(tmp_path / "e.csv"), "--horizon", "7", "--out", str(tmp_path / "out"),
                            "--origins", "3", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "seasonal_naive" in r.output and "civicflow" in r.output and "MASE" in r.output
    overall = pl.read_csv(tmp_path / "out" / "metrics_overall.csv")
    per = pl.read_csv(tmp_path / "out" / "metrics_per_series.csv")
    assert set(overall["method"]) == {"civicflow", "seasonal_naive", "ses"}
    assert set(per["series_id"]) == {"north|parcels", "south|meds"}
    assert (overall.filter(pl.col("method") == "seasonal_naive")["mase_vs_naive"] == 1.0).all()
    assert (tmp_path / "out" / "calibration.csv").exists()


@pytest.mark.slow
def test_forecast_backtest_single_series_and_hourly(tmp_path):
    rng = np.random.default_rng(8)
    n = 120
    y = _daily(n, rng, 30.0, 8.0)
    pl.DataFrame({"ds": [str(date(2024, 1, 1) + timedelta(days=k)) for k in range(n)], "y": y}).write_csv(tmp_path / "one.csv")
    r = runner.invoke(app, ["forecast", "backtest", "--series", str(tmp_path / "one.csv"), "--horizon", "7",
                            "--out", str(tmp_path / "one"), "--origins", "2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert pl.read_csv(tmp_path / "one" / "metrics_per_series.csv")["series_id"].unique().to_list() == ["series"]

    hours = 24 * 21
    t = np.arange(hours)
    mu = 6 + 5 * np.sin(2 * np.pi * (t % 24 - 6) / 24).clip(min=0) * 2
    yh = rng.poisson(mu).astype(float)
    ts = [datetime(2024, 3, 1) + timedelta(hours=int(k)) for k in t]
    pl.DataFrame({"series_id": ["hub-7"] * hours, "ds": [x.isoformat(sep=" ") for x in ts], "y": yh}).write_csv(
        tmp_path / "h.csv")
    r = runner.invoke(app, ["forecast", "backtest", "--series", str(tmp_path / "h.csv"), "--horizon", "24",
                            "--freq", "H", "--out", str(tmp_path / "h"), "--origins", "2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    pts = pl.read_csv(tmp_path / "h" / "backtest_points.csv", try_parse_dates=True)
    assert pts["step"].max() == 24 and pts["ds"].dt.hour().n_unique() == 24
    o = pl.read_csv(tmp_path / "h" / "metrics_overall.csv")
    civ, naive = (o.filter(pl.col("method") == m)["mase"][0] for m in ("civicflow", "seasonal_naive"))
    assert civ < 1.5 * naive  # the daily cycle is learned (seasonal naive repeats yesterday's same hour)


def test_forecast_backtest_rejects_bad_files(tmp_path):
    pl.DataFrame({"when": ["2024-01-01"], "y": [1]}).write_csv(tmp_path / "bad.csv")
    r = runner.invoke(app, ["forecast", "backtest", "--series", str(tmp_path / "bad.csv"), "--horizon", "7",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "missing column" in r.output


@pytest.mark.slow
def test_forecast_backtest_gaps_are_missing_not_zero_demand(tmp_path):
    """A business-day series (no rows on weekends): by default the weekend is not observed —
    never scored, and seasonal naive is not taught that Saturday sells nothing; `--gaps zero`
    keeps the old reading (a missing day is a day of zero demand)."""
    rng = np.random.default_rng(11)
    days = [date(2024, 1, 1) + timedelta(days=k) for k in range(140)]
    days = [d for d in days if d.weekday() < 5]
    y = rng.poisson(40 + 6 * np.array([d.weekday() for d in days])).astype(float)
    pl.DataFrame({"ds": [str(d) for d in days], "y": y}).write_csv(tmp_path / "bd.csv")
    out = {}
    for gaps in ("missing", "zero"):
        r = runner.invoke(app, ["forecast", "backtest", "--series", str(tmp_path / "bd.csv"), "--horizon", "7",
                                "--out", str(tmp_path / gaps), "--origins", "2", "--workers", "1", "--gaps", gaps])
        assert r.exit_code == 0, r.output
        out[gaps] = pl.read_csv(tmp_path / gaps / "backtest_points.csv", try_parse_dates=True)
    missing, zero = out["missing"], out["zero"]
    assert (missing["ds"].dt.weekday() <= 5).all() and (missing["y"] > 0).all()  # polars: Monday = 1
    assert (zero.filter(pl.col("ds").dt.weekday() > 5)["y"] == 0).all() and zero.height > missing.height
    # the forecast for an observed weekday is not dragged down by invented zeros
    civ = missing.filter(pl.col("method") == "civicflow")
    assert abs(float((civ["point"] - civ["y"]).mean())) < 0.15 * float(civ["y"].mean())
    assert (missing.filter(pl.col("method") == "seasonal_naive")["point"] > 0).all()


def test_read_series_file_keeps_empty_periods_missing(tmp_path):
    from forecasts.backtest import read_series_file

    pl.DataFrame({"ds": ["2024-01-01", "2024-01-02", "2024-01-04"], "y": [3.0, None, 5.0]}).write_csv(tmp_path / "g.csv")
    ds, y = read_series_file(tmp_path / "g.csv")["series"]
    assert len(ds) == 4 and y[0] == 3.0 and np.isnan(y[1]) and np.isnan(y[2]) and y[3] == 5.0
    _, y0 = read_series_file(tmp_path / "g.csv", gaps="zero")["series"]
    assert y0[2] == 0.0 and np.isnan(y0[1])  # an empty value in a present row is missing either way
