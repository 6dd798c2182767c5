"""Interval calibration learned from rolling-origin backtest residuals, applied nightly.

Why: a model's in-sample residuals are always optimistic (the fit has seen those points),
and how optimistic depends on the method (Prophet with 30 parameters vs seasonal naive
with none), on the series' class, and on how far ahead we forecast. Refitting every series
on a holdout each night measured that per series, at twice the cost of a fit. Instead the
backtest, which refits at several origins anyway, measures it once for all series:

    u = (y - point) / (s_in · sqrt(max(point, 1)))

- `sqrt(max(point, 1))` stabilises count noise (spread grows with the level), so event
  days get wider intervals;
- `s_in` is the series' own in-sample spread of standardised residuals (`series_spread`),
  so a noisy series gets wider intervals than a regular one of the same level;
- the empirical quantiles of u over every out-of-sample point of a group (used method ×
  series class × horizon bucket) are the group's *offsets*: they carry both the
  out-of-sample widening and any bias (a model that under-forecasts shifts its quantiles).

Nightly: quantile = point + offset[level] · s_in · sqrt(max(point, 1)), clipped at 0 and
monotone. Groups with fewer than MIN_POINTS residuals fall back to coarser groups
(method × class over all horizons, then method), and with no table at all to the series'
own in-sample quantiles (marked `in_sample`: uncalibrated).

Stored in `forecasts.calibration` (one row per group × level), replaced by every warehouse
backtest; read by the nightly run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import polars as pl

from forecasts.quantiles import LEVEL_COLUMNS, LEVELS, make_quantiles
from warehouse.tables import table_exists

ANY = "*"
MIN_POINTS = 40
IN_SAMPLE = "in_sample"

CALIBRATION_DDL = """
    create table if not exists forecasts.calibration (
        method VARCHAR, kind VARCHAR, horizon_bucket VARCHAR, level DOUBLE, "offset" DOUBLE,
        n_points BIGINT, as_of DATE, n_origins INTEGER)"""


def horizon_bucket(step: int) -> str:
    """1 (tomorrow, what the nightly plan uses most), 2-7 (this week), 8+ (further)."""
    return "1" if step <= 1 else "2-7" if step <= 7 else "8+"


def series_spread(z_in: np.ndarray) -> float:
    """Robust in-sample spread of standardised residuals: mean absolute deviation from the
    median, floored so that a perfectly fitted history does not produce zero-width intervals."""
    z = np.asarray(z_in, dtype=float)
    z = z[np.isfinite(z)]
    if len(z) < 5:
        return 1.0
    return float(max(np.mean(np.abs(z - np.median(z))), 0.1))


def _u(y: np.ndarray, point: np.ndarray, spread: np.ndarray) -> np.ndarray:
    return (y - point) / (np.maximum(spread, 1e-6) * np.sqrt(np.maximum(point, 1.0)))


@dataclass(frozen=True)
class Calibration:
    """Offsets per (method, kind, bucket); `ANY` in a key position means pooled over it."""
    offsets: dict[tuple[str, str, str], tuple[float, ...]] = field(default_factory=dict)
    n_points: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.offsets)

    def lookup(self, method: str, kind: str, step: int) -> tuple[np.ndarray, str] | None:
        b = horizon_bucket(step)
        for key in ((method, kind, b), (method, kind, ANY), (method, ANY, b), (method, ANY, ANY)):
            if key in self.offsets:
                return np.asarray(self.offsets[key]), "/".join(key)
        return None

    def to_frame(self, as_of: date | None = None, n_origins: int | None = None) -> pl.DataFrame:
        rows = []
        for key in sorted(self.offsets):
            for lv, off in zip(LEVELS, self.offsets[key]):
                rows.append({"method": key[0], "kind": key[1], "horizon_bucket": key[2], "level": lv,
                             "offset": round(float(off), 6), "n_points": self.n_points.get(key, 0),
                             "as_of": as_of, "n_origins": n_origins})
        return pl.DataFrame(rows, schema={"method": pl.String, "kind": pl.String, "horizon_bucket": pl.String,
                                          "level": pl.Float64, "offset": pl.Float64, "n_points": pl.Int64,
                                          "as_of": pl.Date, "n_origins": pl.Int32})

    @staticmethod
    def from_frame(df: pl.DataFrame) -> "Calibration":
        offsets: dict[tuple[str, str, str], tuple[float, ...]] = {}
        n: dict[tuple[str, str, str], int] = {}
        for (m, k, b), g in df.group_by("method", "kind", "horizon_bucket", maintain_order=True):
            g = g.sort("level")
            if [round(x, 6) for x in g["level"].to_list()] != [round(x, 6) for x in LEVELS]:
                continue
            offsets[(m, k, b)] = tuple(float(x) for x in g["offset"].to_list())
            n[(m, k, b)] = int(g["n_points"][0] or 0)
        return Calibration(offsets, n)


def learn(points: pl.DataFrame, min_points: int = MIN_POINTS) -> Calibration:
    """Offsets from out-of-sample points: columns used_method, kind, step, y, point, spread."""
    if points.is_empty():
        return Calibration()
    u = _u(points["y"].to_numpy().astype(float), points["point"].to_numpy().astype(float),
           points["spread"].to_numpy().astype(float))
    d = pl.DataFrame({"m": points["used_method"], "k": points["kind"],
                      "b": [horizon_bucket(int(s)) for s in points["step"].to_list()], "u": u})
    offsets: dict[tuple[str, str, str], tuple[float, ...]] = {}
    n: dict[tuple[str, str, str], int] = {}
    for keys in (("m", "k", "b"), ("m", "k"), ("m", "b"), ("m",)):
        for key, g in d.group_by(*keys, maintain_order=True):
            key = dict(zip(keys, key))
            full = (key["m"], key.get("k", ANY), key.get("b", ANY))
            if g.height < min_points:
                continue
            offsets[full] = tuple(float(x) for x in np.quantile(g["u"].to_numpy(), LEVELS))
            n[full] = g.height
    return Calibration(offsets, n)


def apply(point: np.ndarray, spread: float, offsets: np.ndarray) -> np.ndarray:
    """(h, L) quantiles from a point forecast, the series' spread and level offsets."""
    return make_quantiles(point, np.asarray(offsets, dtype=float) * spread)


def apply_frame(points: pl.DataFrame, cal: Calibration) -> pl.DataFrame:
    """Replace p10…p95 of each row whose group the calibration knows; adds `calibration`
    (the group key used, or IN_SAMPLE when the row kept its own in-sample quantiles)."""
    if points.is_empty():
        return points.with_columns(pl.lit(None, pl.String).alias("calibration"))
    q = points.select(LEVEL_COLUMNS).to_numpy().astype(float).copy()
    src: list[str] = []
    for i, (m, k, s, p, sp) in enumerate(points.select("used_method", "kind", "step", "point", "spread").iter_rows()):
        hit = cal.lookup(m, k, int(s)) if cal else None
        if hit is None:
            src.append(IN_SAMPLE)
            continue
        q[i] = apply(np.array([p]), sp, hit[0])[0]
        src.append(hit[1])
    return points.with_columns(
        *[pl.Series(c, np.round(q[:, j], 6)) for j, c in enumerate(LEVEL_COLUMNS)],
        pl.Series("calibration", src, dtype=pl.String),
    )


def cross_fit(points: pl.DataFrame, min_points: int = MIN_POINTS) -> pl.DataFrame:
    """Honest backtest quantiles: the points of origin o are calibrated with what was
    learned from origins < o only (as the nightly run uses last backtest's table for new
    days). The first origin has nothing before it and is returned uncalibrated — callers
    score from the second origin on."""
    out = []
    for o in sorted(points["origin"].unique().to_list()):
        cal = learn(points.filter(pl.col("origin") < o), min_points)
        out.append(apply_frame(points.filter(pl.col("origin") == o), cal))
    return pl.concat(out, how="vertical") if out else points


def write(con: duckdb.DuckDBPyConnection, cal: Calibration, as_of: date | None, n_origins: int | None) -> int:
    """Replace the whole table (one calibration in force at a time; its as_of says when)."""
    con.execute("create schema if not exists forecasts")
    con.execute(CALIBRATION_DDL)
    df = cal.to_frame(as_of, n_origins)
    con.execute("begin transaction")
    try:
        con.execute("delete from forecasts.calibration")
        if df.height:
            con.register("_cf_cal", df.to_arrow())
            con.execute("insert into forecasts.calibration by name select * from _cf_cal")
            con.unregister("_cf_cal")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return df.height


def read(con: duckdb.DuckDBPyConnection) -> Calibration:
    if not table_exists(con, "forecasts", "calibration"):
        return Calibration()
    return Calibration.from_frame(con.execute(
        'select method, kind, horizon_bucket, level, "offset", n_points from forecasts.calibration '
        "order by method, kind, horizon_bucket, level").pl())
