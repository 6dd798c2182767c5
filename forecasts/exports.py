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


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def export_plan(plan: pl.DataFrame, exports_dir: Path, first_date: object) -> dict[str, Path]:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan.sort([c for c in ("plan_date", "hub_id", "category", "window") if c in plan.columns])
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


# ---- Excel and HTML ------------------------------------------------------------------------

_FIXED_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


def _deterministic_xlsx(raw: bytes, stamp: str) -> bytes:
    """openpyxl stamps the zip entries with the wall clock and docProps/core.xml with the
    save time; rewrite both with fixed values (entries kept in openpyxl's order) so the
    same plan gives the same bytes."""
    import io
    import re
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:)", rb"\g<1>" + stamp.encode() + rb"\g<3>", data)
            zi = zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o600 << 16
            z.writestr(zi, data)
    return out.getvalue()


def _sheet_name(name: str, used: set[str]) -> str:
    base = "".join("_" if ch in '[]:*?/\\' else ch for ch in str(name))[:31] or "sheet"
    n, k = base, 1
    while n in used:
        k += 1
        n = f"{base[:28]}~{k}"
    used.add(n)
    return n


def export_xlsx(plan: pl.DataFrame, exports_dir: Path, first_date: object) -> Path:
    """`staging_plan.xlsx`: an overview sheet (units per hub × category × day) and one sheet
    per neighbourhood with its rows, header frozen, columns sized. Deterministic bytes."""
    import io
    from datetime import datetime

    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "staging_plan.xlsx"
    plan = plan.sort([c for c in ("plan_date", "hub_id", "category", "window") if c in plan.columns])
    wb = Workbook()
    stamp = datetime.fromisoformat(f"{first_date}T00:00:00")
    wb.properties.creator = "civicflow"
    wb.properties.created = stamp
    wb.properties.modified = stamp
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="FFF4E5")
    used: set[str] = set()

    def fill_sheet(ws, df: pl.DataFrame) -> None:
        ws.append(df.columns)
        for c in ws[1]:
            c.font = bold
        cap_col = df.columns.index("cap_reason") if "cap_reason" in df.columns else None
        for row in df.iter_rows():
            ws.append([str(v) if hasattr(v, "isoformat") else v for v in row])
            if cap_col is not None and row[cap_col]:
                for c in ws[ws.max_row]:
                    c.fill = fill
        ws.freeze_panes = "A2"
        for i, col in enumerate(df.columns, start=1):
            width = max([len(col)] + [len(str(v)) for v in df[col].head(200).to_list()])
            ws.column_dimensions[ws.cell(1, i).column_letter].width = min(width + 2, 40)

    ws = wb.active
    ws.title = _sheet_name("overview", used)
    if plan.height:
        overview = (plan.group_by("plan_date", "neighbourhood_id", "hub_id", "category")
                    .agg(pl.col("units").sum()).sort("plan_date", "neighbourhood_id", "hub_id", "category"))
        fill_sheet(ws, overview)
        for nb in sorted(plan["neighbourhood_id"].unique().to_list()):
            fill_sheet(wb.create_sheet(_sheet_name(nb, used)), plan.filter(pl.col("neighbourhood_id") == nb))
    buf = io.BytesIO()
    wb.save(buf)
    data = _deterministic_xlsx(buf.getvalue(), stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
    _atomic_write(path, lambda p: p.write_bytes(data))
    return path


def export_report(html_text: str, exports_dir: Path, first_date: object) -> Path:
    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    _atomic_write(path, lambda p: p.write_text(html_text, encoding="utf-8"))
    return path
