"""Rolling-origin backtest: refit at several origins, forecast the next `horizon` periods,
score against what happened.

Scores per series and method: MASE (scaled by the in-sample seasonal-naive MAE of the
training window, the usual Hyndman–Koehler scale), out-of-sample MAE relative to seasonal
naive, pinball loss averaged over the quantile levels, empirical coverage per level
(share of actuals at or below the level's quantile; nominal = the level), the same by the
randomised PIT (`pit_p10`…: meaningful on counts with many zeros, quantiles.randomised_pit), the coverage of
the 10–90 % interval, and MAE / MASE on event days separately — events are where a
forecaster earns its keep and where averages hide failures.

Methods: `civicflow` (what the nightly run would use for the series: the blend of Prophet,
ETS and seasonal naive for daily series, Prophet for hourly ones, or a fallback, with
calibrated quantiles), `seasonal_naive` and `ses` baselines.

Calibration (calibration.py) is cross-fitted in time: `calibration_origins` extra, earliest
origins are run (one by default); the quantiles of origin o are calibrated with the
out-of-sample errors of origins < o only, and the extra origins are not scored — coverage is measured the way the nightly run lives it (a
table learned on the past, applied to new days). The table learned from every origin is
returned (`summary.calibration`) for the nightly run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from forecasts import calibration, intermittent
from forecasts.calibration import Calibration
from forecasts.config import ForecastConfig
from forecasts.engine import run_tasks
from forecasts.model import SeriesForecast, SeriesTask, season_length
from forecasts.quantiles import LEVEL_COLUMNS, LEVELS, pinball_loss, randomised_pit
from forecasts.series import classify_values

CIVICFLOW = "civicflow"
BASELINES = (intermittent.SEASONAL_NAIVE, intermittent.SES)
METHODS = (CIVICFLOW, *BASELINES)


@dataclass(frozen=True)
class BacktestConfig:
    horizon: int
    n_origins: int = 4
    step: int | None = None          # periods between origins (default: the horizon)
    freq: str = "D"
    methods: tuple[str, ...] = METHODS
    min_train: int | None = None     # default: 4 seasons
    calibrate: bool = True           # cross-fitted calibration; adds `calibration_origins` burn-in origins
    # origins before the scored ones that only teach the calibration: one when there are
    # many series (one origin of a city holds hundreds of errors); a single series needs
    # more (`burn_in_origins`), or its first scored origins keep their in-sample (too
    # narrow) quantiles — which no night of a city does
    calibration_origins: int = 1


@dataclass(frozen=True)
class BacktestSummary:
    n_series: int
    n_origins: int
    horizon: int
    overall: pl.DataFrame            # one row per method
    per_series: pl.DataFrame         # one row per series × method
    points: pl.DataFrame             # one row per series × method × origin × step
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    calibration: Calibration = field(default_factory=Calibration)  # learned from every origin
    by_kind: pl.DataFrame = field(default_factory=pl.DataFrame)    # overall per method × series class


def burn_in_origins(n_series: int, horizon: int) -> int:
    """Calibration burn-in origins for `n_series` series: enough that the first scored origin
    is calibrated with at least calibration.MIN_POINTS errors (one for a city's hundreds of
    series; ⌈40 / horizon⌉ for a single series)."""
    per_origin = max(n_series * horizon, 1)
    return max(1, -(-calibration.MIN_POINTS // per_origin))


def origins(n: int, horizon: int, n_origins: int, step: int | None = None, min_train: int = 28) -> list[int]:
    """Cut points c (train = [:c], test = [c:c+horizon]), latest last; fewer when the
    history is short, none when it cannot hold min_train + horizon."""
    step = step or horizon
    cuts = [n - horizon - k * step for k in range(n_origins)]
    return sorted(c for c in cuts if c >= min_train)


def _step(freq: str) -> np.timedelta64:
    return np.timedelta64(1, "h") if freq.upper().startswith("H") else np.timedelta64(1, "D")


def make_backtest_tasks(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    events: dict[str, list[tuple[str, date, date]]],
    cfg: BacktestConfig,
    attendance: dict[str, np.ndarray] | None = None,
) -> list[tuple[SeriesTask, dict]]:
    """(task, meta) for every series × origin × method; meta carries the actuals."""
    season = season_length(cfg.freq)
    min_train = cfg.min_train or 4 * season
    out = []
    n_cuts = cfg.n_origins + (cfg.calibration_origins if cfg.calibrate else 0)  # the first ones only teach the calibration
    for sid in sorted(series):
        ds, y = series[sid]
        att = (attendance or {}).get(sid)
        ev = tuple(events.get(sid, []))
        cuts = origins(len(y), cfg.horizon, n_cuts, cfg.step, min_train)
        for c in cuts:
            o = n_cuts - len(cuts) + cuts.index(c)  # origin numbers aligned across series: latest = n_cuts - 1
            kind = classify_values(y[:c])
            for m in cfg.methods:
                task = SeriesTask(
                    series_id=sid, ds=ds[:c], y=y[:c], future_ds=ds[c:c + cfg.horizon], kind=kind,
                    freq=cfg.freq, events=ev,
                    attendance_hist=None if att is None else att[:c],
                    attendance_future=None if att is None else att[c:c + cfg.horizon],
                    method=None if m == CIVICFLOW else m, calibrate=False,
                )
                out.append((task, {"series_id": sid, "method": m, "origin": o, "cut": c, "kind": kind,
                                   "actual": y[c:c + cfg.horizon], "train": y[:c]}))
    return out


def _event_mask(ds: np.ndarray, ev: list[tuple[str, date, date]], freq: str) -> np.ndarray:
    days = ds.astype("datetime64[D]")
    mask = np.zeros(len(ds), dtype=bool)
    for _, s, e in ev:
        mask |= (days >= np.datetime64(s, "D")) & (days <= np.datetime64(e, "D"))
    return mask


def points_frame(pairs: list[tuple[SeriesTask, dict]], results: list[SeriesForecast],
                 events: dict[str, list[tuple[str, date, date]]], freq: str) -> pl.DataFrame:
    season = season_length(freq)
    cols: dict[str, list] = {k: [] for k in ("series_id", "method", "used_method", "kind", "origin", "step",
                                             "ds", "y", "point", *LEVEL_COLUMNS, "spread", "scale", "is_event")}
    for (task, meta), r in zip(pairs, results):
        train = meta["train"]
        # MASE scale: in-sample MAE of the seasonal naive on this origin's training window
        # (pairs with a missing period are left out: NaN-aware means)
        diffs = train[season:] - train[:-season] if len(train) > season else np.diff(train)
        diffs = diffs[np.isfinite(diffs)]
        scale = float(np.mean(np.abs(diffs))) if len(diffs) else 0.0
        ev = _event_mask(np.asarray(task.future_ds), events.get(meta["series_id"], []), freq)
        for k in range(len(meta["actual"])):
            if not np.isfinite(meta["actual"][k]):  # a period nobody observed is not scored
                continue
            cols["series_id"].append(meta["series_id"])
            cols["method"].append(meta["method"])
            cols["used_method"].append(r.method)
            cols["kind"].append(meta["kind"])
            cols["spread"].append(float(r.spread))
            cols["origin"].append(meta["origin"])
            cols["step"].append(k + 1)
            cols["ds"].append(np.asarray(task.future_ds)[k].astype("datetime64[s]").astype(datetime))
            cols["y"].append(float(meta["actual"][k]))
            cols["point"].append(float(r.point[k]))
            for j, c in enumerate(LEVEL_COLUMNS):
                cols[c].append(float(r.quantiles[k, j]))
            cols["scale"].append(scale)
            cols["is_event"].append(bool(ev[k]))
    return pl.DataFrame(cols)


def _metrics(g: pl.DataFrame) -> dict[str, float | int | None]:
    y = g["y"].to_numpy()
    p = g["point"].to_numpy()
    scale = g["scale"].to_numpy()
    ae = np.abs(y - p)
    # a flat training window has scale 0: MASE is undefined there, not infinite
    ok = scale > 1e-9
    out: dict[str, float | int | None] = {
        "n": len(y),
        "mae": float(ae.mean()) if len(y) else None,
        "mase": float(np.mean(ae[ok] / scale[ok])) if ok.any() else None,
        "pinball": float(np.mean([pinball_loss(y, g[c].to_numpy(), q) for q, c in zip(LEVELS, LEVEL_COLUMNS)])),
    }
    for c in LEVEL_COLUMNS:
        out[f"cov_{c}"] = float(np.mean(y <= g[c].to_numpy() + 1e-9))
    # coverage that means something on counts with many zeros: the randomised PIT
    pit = randomised_pit(y, g.select(LEVEL_COLUMNS).to_numpy().astype(float)) if len(y) else np.zeros(0)
    for q, c in zip(LEVELS, LEVEL_COLUMNS):
        out[f"pit_{c}"] = float(np.mean(pit <= q)) if len(y) else None
    out["cov_p10_p90"] = float(np.mean((y >= g["p10"].to_numpy() - 1e-9) & (y <= g["p90"].to_numpy() + 1e-9)))
    ev = g["is_event"].to_numpy()
    out["n_event"] = int(ev.sum())
    out["mae_event"] = float(ae[ev].mean()) if ev.any() else None
    out["mase_event"] = float(np.mean(ae[ev & ok] / scale[ev & ok])) if (ev & ok).any() else None
    out["mae_non_event"] = float(ae[~ev].mean()) if (~ev).any() else None
    return out


def score(points: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per series × method, overall per method); both with MAE relative to seasonal naive."""
    per = []
    for (sid, m), g in points.group_by("series_id", "method", maintain_order=True):
        per.append({"series_id": sid, "method": m,
                    "used_methods": ",".join(sorted(set(g["used_method"].to_list()))), **_metrics(g)})
    # every row decides the types: a metric can be None (no event day, a flat window) for the
    # first hundred series and a float only later
    per_df = pl.DataFrame(per, infer_schema_length=None).sort("series_id", "method") if per else pl.DataFrame()
    overall = []
    for (m,), g in points.group_by("method", maintain_order=True):
        d = _metrics(g)
        # overall MASE = mean of per-series MASE (each series weighs the same, whatever its volume)
        sub = per_df.filter(pl.col("method") == m)["mase"].drop_nulls()
        d["mase"] = float(sub.mean()) if len(sub) else None
        overall.append({"method": m, "n_series": g["series_id"].n_unique(), **d})
    overall_df = pl.DataFrame(overall, infer_schema_length=None).sort("method") if overall else pl.DataFrame()
    for name, df in (("per", per_df), ("overall", overall_df)):
        if df.is_empty():
            continue
        keys = ["series_id"] if name == "per" else []
        naive = df.filter(pl.col("method") == intermittent.SEASONAL_NAIVE).select(
            *keys, pl.col("mae").alias("_naive_mae"), pl.col("mase").alias("_naive_mase"))
        if naive.height:
            df = (df.join(naive, on=keys, how="left") if keys else df.join(naive, how="cross"))
            df = df.with_columns(
                (pl.col("mae") / pl.col("_naive_mae")).alias("rel_mae_vs_naive"),
                (pl.col("mase") / pl.col("_naive_mase")).alias("mase_vs_naive"),
            ).drop("_naive_mae", "_naive_mase")
        if name == "per":
            per_df = df
        else:
            overall_df = df
    return per_df, overall_df


def run_backtest(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    events: dict[str, list[tuple[str, date, date]]],
    cfg: BacktestConfig,
    workers: int = 2,
    attendance: dict[str, np.ndarray] | None = None,
    config: ForecastConfig = ForecastConfig(),
) -> BacktestSummary:
    """Replay the forecaster at `cfg`'s origins on every series and score it; `config`: where
    the fits run (the local pool, or a Dask cluster)."""
    t0 = time.perf_counter()
    pairs = make_backtest_tasks(series, events, cfg, attendance)
    results = run_tasks([t for t, _ in pairs], workers=workers, config=config)
    raw = points_frame(pairs, results, events, cfg.freq)
    cal = Calibration()
    points = raw
    if cfg.calibrate and raw.height:
        cal = calibration.learn(raw)
        # score only origins that had an earlier one to learn from (the nightly situation)
        points = calibration.cross_fit(raw).filter(pl.col("origin") >= cfg.calibration_origins)
    per, overall = score(points) if points.height else (pl.DataFrame(), pl.DataFrame())
    by_kind = score_by_kind(points) if points.height else pl.DataFrame()
    n_orig = int(points["origin"].n_unique()) if points.height else 0
    return BacktestSummary(len(series), n_orig, cfg.horizon, overall, per, points,
                           seconds=time.perf_counter() - t0, calibration=cal, by_kind=by_kind)


def score_by_kind(points: pl.DataFrame) -> pl.DataFrame:
    """Overall metrics per method × series class (coverage of low quantiles on intermittent
    series is dominated by the point mass at zero: read it per class)."""
    rows = []
    for (m, k), g in points.group_by("method", "kind", maintain_order=True):
        rows.append({"method": m, "kind": k, "n_series": g["series_id"].n_unique(), **_metrics(g)})
    return pl.DataFrame(rows, infer_schema_length=None).sort("method", "kind") if rows else pl.DataFrame()


# ---- the generic command: any series file -------------------------------------------------

def _parse_ts(col: pl.Expr) -> pl.Expr:
    return col.cast(pl.String).str.to_datetime(strict=False, time_unit="us")


GAPS_MISSING = "missing"
GAPS_ZERO = "zero"


def read_series_file(path: Path, freq: str = "D", gaps: str = GAPS_MISSING) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`series_id,ds,y` or `ds,y`. Each series is put on a complete grid at `freq` and
    sorted in time. A period absent from the file is, by `gaps`:

    - `missing` (default): not observed — NaN; the models are fitted on the series with the
      gap filled (model.fill_gaps) and the period is never scored. Page views, ridership,
      a business-day series: a day without a row is a day without a measurement, and
      scoring it as zero demand rewards a forecaster for predicting the holes;
    - `zero`: no demand — 0 (an export of the demand mart, which is zero-filled already).

    An empty `y` in a row that is present is missing under both."""
    df = pl.read_csv(path, infer_schema_length=10000)
    if "series_id" not in df.columns:
        df = df.with_columns(pl.lit("series").alias("series_id"))
    missing = {"ds", "y"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected series_id,ds,y or ds,y")
    if gaps not in (GAPS_MISSING, GAPS_ZERO):
        raise ValueError(f"gaps must be {GAPS_MISSING!r} or {GAPS_ZERO!r}, not {gaps!r}")
    hourly = freq.upper().startswith("H")
    df = df.select(
        pl.col("series_id").cast(pl.String),
        _parse_ts(pl.col("ds")).alias("ds"),
        pl.col("y").cast(pl.Float64, strict=False),
    )
    if df["ds"].null_count():
        raise ValueError(f"{path}: {df['ds'].null_count()} value(s) in ds are not dates/timestamps")
    df = df.with_columns(pl.col("ds").dt.truncate("1h" if hourly else "1d"))
    # a period whose every value is empty stays missing (sum() would make it 0)
    df = df.group_by("series_id", "ds").agg(
        pl.when(pl.col("y").is_not_null().any()).then(pl.col("y").sum()).otherwise(None).alias("y")
    ).sort("series_id", "ds")
    step = _step(freq)
    out = {}
    for (sid,), g in df.group_by("series_id", maintain_order=True):
        ds = g["ds"].to_numpy().astype("datetime64[h]" if hourly else "datetime64[D]")
        grid = np.arange(ds[0], ds[-1] + step, step)
        y = np.full(len(grid), np.nan if gaps == GAPS_MISSING else 0.0)
        y[((ds - ds[0]) // step).astype(int)] = g["y"].to_numpy().astype(float)
        out[sid] = (grid, y)
    return out


def read_events_file(path: Path | None, series_ids: list[str]) -> dict[str, list[tuple[str, date, date]]]:
    """`name,start,end[,series_id]`; an event without series_id applies to every series."""
    if path is None:
        return {}
    df = pl.read_csv(path, infer_schema_length=10000)
    missing = {"name", "start", "end"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected name,start,end[,series_id]")
    df = df.with_columns(_parse_ts(pl.col("start")).dt.date().alias("s"), _parse_ts(pl.col("end")).dt.date().alias("e"))
    out: dict[str, list[tuple[str, date, date]]] = {sid: [] for sid in series_ids}
    has_sid = "series_id" in df.columns
    for r in df.iter_rows(named=True):
        if r["s"] is None:
            continue
        name = "event_" + "".join(ch if ch.isalnum() else "_" for ch in str(r["name"]).lower())
        ev = (name, r["s"], r["e"] or r["s"])
        targets = [str(r["series_id"])] if has_sid and r["series_id"] is not None else series_ids
        for sid in targets:
            if sid in out:
                out[sid].append(ev)
    return {k: sorted(v) for k, v in out.items()}


def format_table(df: pl.DataFrame, cols: list[str] | None = None) -> str:
    """Plain-text table for the CLI (no dependency on a terminal library)."""
    if df.is_empty():
        return "(no rows)"
    cols = [c for c in (cols or df.columns) if c in df.columns]
    rows = [[("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)) for v in r]
            for r in df.select(cols).iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows)])


OVERALL_COLUMNS = ["method", "n_series", "n", "mae", "mase", "mase_vs_naive", "rel_mae_vs_naive", "pinball",
                   "cov_p10", "cov_p50", "cov_p80", "cov_p90", "cov_p95", "cov_p10_p90", "mae_event", "mase_event"]


def backtest_file(
    series_csv: Path,
    events_csv: Path | None,
    horizon: int,
    freq: str,
    out_dir: Path,
    n_origins: int = 4,
    workers: int = 2,
    config: ForecastConfig = ForecastConfig(),
    gaps: str = GAPS_MISSING,
) -> BacktestSummary:
    """Backtest any series file (`gaps`: what a period absent from the file is, see
    read_series_file); writes `metrics_per_series.csv`, `metrics_overall.csv`,
    `metrics_by_kind.csv`, `backtest_points.csv` and `calibration.csv` to `out_dir`. Print `format_table(summary.overall,
    OVERALL_COLUMNS)` for the command-line table."""
    freq = "H" if freq.upper().startswith("H") else "D"
    series = read_series_file(Path(series_csv), freq, gaps)
    events = read_events_file(Path(events_csv) if events_csv else None, sorted(series))
    summary = run_backtest(series, events, BacktestConfig(horizon=horizon, n_origins=n_origins, freq=freq,
                                                          calibration_origins=burn_in_origins(len(series), horizon)),
                           workers=workers, config=config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_series": out / "metrics_per_series.csv", "overall": out / "metrics_overall.csv",
             "by_kind": out / "metrics_by_kind.csv", "points": out / "backtest_points.csv",
             "calibration": out / "calibration.csv"}
    summary.per_series.write_csv(paths["per_series"], float_precision=4)
    summary.overall.write_csv(paths["overall"], float_precision=4)
    summary.by_kind.write_csv(paths["by_kind"], float_precision=4)
    summary.points.write_csv(paths["points"], float_precision=4)
    summary.calibration.to_frame().write_csv(paths["calibration"], float_precision=6)
    return replace(summary, paths=paths)
