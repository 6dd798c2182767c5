"""Plan files for operations: `<exports_dir>/<first plan date>/staging_plan.{csv,parquet,xlsx}`
and `report.html`.

Byte-identical on a re-run of the same day: rows sorted, floats rounded upstream, no
timestamps in the files, Parquet without statistics that could vary. Files are written to
a temporary name and renamed, so a reader never sees half a plan.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from forecasts.places import for_people, with_places
from forecasts.workbook import export_xlsx

__all__ = ["export_plan", "export_forecast", "export_report", "export_xlsx", "atomic_write"]


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def export_plan(plan: pl.DataFrame, exports_dir: Path, first_date: object,
                places: pl.DataFrame | None = None) -> dict[str, Path]:
    """The CSV carries the people's headers (names, window hours, units and EUR in the
    headers); the Parquet the same rows under the machine names, for tools."""
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    named = with_places(plan, places)
    people = for_people(plan, places)
    csv = out_dir / "staging_plan.csv"
    pq = out_dir / "staging_plan.parquet"
    atomic_write(csv, lambda p: people.write_csv(p, float_precision=4))
    atomic_write(pq, lambda p: named.write_parquet(p, compression="zstd", statistics=False))
    return {"csv": csv, "parquet": pq}


def export_forecast(forecast: pl.DataFrame, exports_dir: Path, first_date: object) -> Path:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demand_forecast.csv"
    atomic_write(path, lambda p: forecast.sort("series_id", "forecast_date").write_csv(p, float_precision=4))
    return path


# ---- HTML ----------------------------------------------------------------------------------


def export_report(html_text: str, exports_dir: Path, first_date: object) -> Path:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    atomic_write(path, lambda p: p.write_text(html_text, encoding="utf-8"))
    return path
