"""Which combination of forecasts to run nightly: every candidate scored on the points the
forecast benchmark saved, with no refit (a candidate is a function of its members' point
forecasts at the same series, origin and step).

    .venv/bin/python bench/bench_forecast_accuracy.py --methods prophet,ets,seasonal_naive,ses,auto_ets \\
        --points /tmp/points
    .venv/bin/python bench/bench_forecast_blends.py --points /tmp/points [--kind smooth|intermittent]

Prints MASE (mean over series, as the benchmark's) per data set × candidate, and per
candidate its worst excess over the best single method of each data set. Candidates: each
single method, medians of three to five members, means, `blend` (what model.BLEND fits:
the mean of Prophet and the median of Prophet, ETS and seasonal naive) and per-series
selection (each series' best method over its earlier origins, scored on the later ones).
The choice is made on the same data it is scored on: read small differences as ties.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

Combine = Callable[[dict[str, np.ndarray]], np.ndarray]


def _median(*members: str) -> Combine:
    return lambda x: np.median(np.stack([x[m] for m in members]), axis=0)


def _mean(*members: str) -> Combine:
    return lambda x: np.mean(np.stack([x[m] for m in members]), axis=0)


CANDIDATES: dict[str, tuple[tuple[str, ...], Combine]] = {
    "median(prophet,ets,snaive)": (("prophet", "ets", "seasonal_naive"), _median("prophet", "ets", "seasonal_naive")),
    "median(prophet,auto_ets,snaive)": (("prophet", "auto_ets", "seasonal_naive"),
                                        _median("prophet", "auto_ets", "seasonal_naive")),
    "median(prophet,ses,snaive)": (("prophet", "ses", "seasonal_naive"), _median("prophet", "ses", "seasonal_naive")),
    "median(prophet,ets,ses)": (("prophet", "ets", "ses"), _median("prophet", "ets", "ses")),
    "median(prophet,ets,snaive,ses)": (("prophet", "ets", "seasonal_naive", "ses"),
                                       _median("prophet", "ets", "seasonal_naive", "ses")),
    "median(prophet×2,ets,snaive,ses)": (("prophet", "ets", "seasonal_naive", "ses"),
                                         _median("prophet", "prophet", "ets", "seasonal_naive", "ses")),
    "mean(prophet,ets)": (("prophet", "ets"), _mean("prophet", "ets")),
    "mean(prophet,ets,snaive)": (("prophet", "ets", "seasonal_naive"), _mean("prophet", "ets", "seasonal_naive")),
    "blend": (("prophet", "ets", "seasonal_naive"),
              lambda x: (x["prophet"] + _median("prophet", "ets", "seasonal_naive")(x)) / 2),
}
SINGLES = ("prophet", "ets", "auto_ets", "seasonal_naive", "ses", "auto_arima")


def wide_points(points: pl.DataFrame) -> pl.DataFrame:
    """One row per series × origin × step with each method's point forecast as a column
    (rows whose MASE scale is 0 dropped, as the benchmark does)."""
    return (points.pivot(on="method", index=["series_id", "origin", "step", "y", "scale"], values="point",
                         aggregate_function="first")
            .filter(pl.col("scale") > 1e-9))


def mase(wide: pl.DataFrame, point: np.ndarray) -> float:
    err = np.abs(wide["y"].to_numpy() - point) / wide["scale"].to_numpy()
    return float(pl.DataFrame({"s": wide["series_id"], "e": err}).group_by("s").agg(pl.col("e").mean())["e"].mean())


def selection_mase(wide: pl.DataFrame, methods: list[str]) -> float | None:
    """Per-series selection, honest in time: at origin o, each series takes the method with
    the lowest mean scaled error over its origins < o; scored from the second origin on."""
    scale = wide["scale"].to_numpy()
    err = {m: np.abs(wide["y"].to_numpy() - wide[m].to_numpy()) / scale for m in methods}
    df = wide.select("series_id", "origin").with_columns(*[pl.Series(f"e_{m}", e) for m, e in err.items()])
    origins = sorted(df["origin"].unique().to_list())
    picked = []
    for o in origins[1:]:
        past = df.filter(pl.col("origin") < o).group_by("series_id").agg(pl.col(f"e_{m}").mean() for m in methods)
        best = {r["series_id"]: min(methods, key=lambda m: r[f"e_{m}"]) for r in past.iter_rows(named=True)}
        for r in df.filter(pl.col("origin") == o).iter_rows(named=True):
            picked.append((r["series_id"], r[f"e_{best[r['series_id']]}"]))
    if not picked:
        return None
    return float(pl.DataFrame(picked, schema=["s", "e"], orient="row").group_by("s").agg(pl.col("e").mean())["e"].mean())


def score_candidates(points: pl.DataFrame) -> dict[str, float]:
    wide = wide_points(points)
    have = {m: wide[m].to_numpy() for m in wide.columns if m not in ("series_id", "origin", "step", "y", "scale")}
    out = {m: mase(wide, have[m]) for m in SINGLES if m in have}
    for name, (members, combine) in CANDIDATES.items():
        if all(m in have for m in members):
            out[name] = mase(wide, combine(have))
    singles = [m for m in SINGLES if m in have]
    sel = selection_mase(wide, singles)
    if sel is not None:
        out["selection(singles)"] = sel
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=Path, required=True, help="the folder bench_forecast_accuracy.py --points wrote")
    ap.add_argument("--kind", default=None, help="score only series of this class (smooth, intermittent)")
    a = ap.parse_args()
    rows = []
    for f in sorted(a.points.glob("*.parquet")):
        pts = pl.read_parquet(f)
        if a.kind:
            pts = pts.filter(pl.col("kind") == a.kind)
        if pts.is_empty():
            continue
        rows.append({"dataset": f.stem, **score_candidates(pts)})
    df = pl.DataFrame(rows)
    singles = [c for c in SINGLES if c in df.columns]
    best = df.select(pl.min_horizontal(singles)).to_series()
    cols = [c for c in df.columns if c != "dataset"]
    print(f"MASE per data set ({a.kind or 'all series'}); last column: worst excess over the data set's best single method")
    width = max(len(c) for c in cols)
    print(f"{'candidate':<{width}}  " + "  ".join(f"{d:>10}" for d in df["dataset"]) + "  worst vs best single")
    for c in cols:
        vals = df[c].to_numpy()
        excess = np.nanmax(vals / best.to_numpy() - 1)
        print(f"{c:<{width}}  " + "  ".join(f"{v:10.4f}" for v in vals) + f"  {100 * excess:+6.1f} %")


if __name__ == "__main__":
    main()
