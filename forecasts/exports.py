"""Plan files for operations: `<exports_dir>/<first plan date>/staging_plan.{csv,parquet}`.

Byte-identical on a re-run of the same day: rows sorted, floats rounded upstream, no
timestamps in the files, Parquet without statistics that could vary. Files are written to
a temporary name and renamed, so a reader never sees half a plan.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def export_plan(plan: pl.DataFrame, exports_dir: Path, first_date: object) -> dict[str, Path]:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan.sort("plan_date", "hub_id", "category")
    csv = out_dir / "staging_plan.csv"
    pq = out_dir / "staging_plan.parquet"
    _atomic_write(csv, lambda p: plan.write_csv(p, float_precision=4))
    _atomic_write(pq, lambda p: plan.write_parquet(p, compression="zstd", statistics=False))
    return {"csv": csv, "parquet": pq}


def export_forecast(forecast: pl.DataFrame, exports_dir: Path, first_date: object) -> Path:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demand_forecast.csv"
    _atomic_write(path, lambda p: forecast.sort("series_id", "forecast_date").write_csv(p, float_precision=4))
    return path
