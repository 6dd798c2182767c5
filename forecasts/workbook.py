"""`staging_plan.xlsx` for operations: an Overview sheet (units per day × hub × category), one
sheet per neighbourhood, named by its name, and the review's sheets (what changed since last
night's plan, how last night's plan went, the 28-day scorecard) when there is something in them.

Each sheet: real dates (not text), number, percent and EUR formats, an autofilter on the
header, panes frozen under the header and right of the key columns, and a totals row whose
SUBTOTAL formulas follow the filter (Excel's 109 = sum of visible rows). Same plan, same
bytes: openpyxl's save time and zip timestamps are replaced by the plan date.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from datetime import datetime
from pathlib import Path

import polars as pl

from forecasts.places import for_people, kinds

FORMATS: dict[str, str] = {
    "date": "yyyy-mm-dd", "int": "#,##0", "float": "#,##0.0", "pct": "0.0%",
    "eur": '#,##0.00 "EUR"', "coord": "0.00000", "text": "@",
    "count": "0",  # a count that is not additive (days scored): formatted, never totalled
}
SUMMED = ("int",)  # the totals row sums unit counts; shares, costs per unit and dates are not additive
FROZEN_KEYS = 3    # plan date, hub, hub name stay in view when scrolling right
_FIXED_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


def _deterministic_xlsx(raw: bytes, stamp: str) -> bytes:
    """openpyxl stamps the zip entries with the wall clock and docProps/core.xml with the
    save time; rewrite both with fixed values (entries kept in openpyxl's order) so the
    same plan gives the same bytes."""
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


def sheet_name(name: str, used: set[str]) -> str:
    base = "".join("_" if ch in '[]:*?/\\' else ch for ch in str(name))[:31] or "sheet"
    n, k = base, 1
    while n.lower() in {u.lower() for u in used}:  # Excel compares sheet names case-blind
        k += 1
        n = f"{base[:28]}~{k}"
    used.add(n)
    return n


def fill_sheet(ws, df: pl.DataFrame, col_kinds: list[str] | None = None, frozen: int = FROZEN_KEYS) -> None:
    """Header, typed rows, formats, autofilter, frozen panes, totals row. `col_kinds`:
    each column's kind (default: looked up from the plan's headers)."""
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    bold, capped = Font(bold=True), PatternFill("solid", fgColor="FFF4E5")
    col_kinds = col_kinds or kinds(df.columns)
    ws.append(df.columns)
    for c in ws[1]:
        c.font = bold
    cap_col = df.columns.index("capped by") if "capped by" in df.columns else None
    for row in df.iter_rows():
        ws.append(list(row))
        r = ws.max_row
        for j, kind in enumerate(col_kinds, start=1):
            ws.cell(r, j).number_format = FORMATS[kind]
        if cap_col is not None and row[cap_col]:
            for c in ws[r]:
                c.fill = capped
    last = ws.max_row
    ws.auto_filter.ref = f"A1:{get_column_letter(len(df.columns))}{last}"
    ws.freeze_panes = ws.cell(2, min(frozen, len(df.columns)) + 1).coordinate
    total = last + 1
    ws.cell(total, 1, "Total").font = bold
    for j, kind in enumerate(col_kinds, start=1):
        if kind in SUMMED and j > 1:
            L = get_column_letter(j)
            c = ws.cell(total, j, f"=SUBTOTAL(109,{L}2:{L}{last})")
            c.number_format, c.font = FORMATS[kind], bold
    for j, col in enumerate(df.columns, start=1):
        width = max([len(col)] + [len(str(v)) for v in df[col].head(200).to_list()])
        ws.column_dimensions[get_column_letter(j)].width = min(width + 2, 40)


def overview(people: pl.DataFrame) -> pl.DataFrame:
    keys = ["plan date", "hub", "hub name", "neighbourhood", "category"]
    return (people.group_by(keys).agg(pl.col("units to stage (units)").sum(),
                                      pl.col("hub capacity (units)").first())
            .sort(keys))


def export_xlsx(plan: pl.DataFrame, exports_dir: Path, first_date: object,
                places: pl.DataFrame | None = None,
                extra: list[tuple[str, pl.DataFrame, list[str]]] | None = None) -> Path:
    """The workbook; `extra`: further sheets after the neighbourhoods, as (sheet name,
    frame with people's headers, each column's kind) — the review's what changed, how it
    went and the scorecard."""
    from openpyxl import Workbook

    out_dir = Path(exports_dir) / str(first_date)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "staging_plan.xlsx"
    people = for_people(plan, places)
    wb = Workbook()
    stamp = datetime.fromisoformat(f"{first_date}T00:00:00")
    wb.properties.creator = "civicflow"
    wb.properties.created = stamp
    wb.properties.modified = stamp
    used: set[str] = set()
    ws = wb.active
    ws.title = sheet_name("Overview", used)
    if people.height:
        fill_sheet(ws, overview(people))
        for nb in sorted(people["neighbourhood"].unique().to_list()):
            fill_sheet(wb.create_sheet(sheet_name(nb, used)), people.filter(pl.col("neighbourhood") == nb))
    for name, df, col_kinds in extra or []:
        if df.height:
            fill_sheet(wb.create_sheet(sheet_name(name, used)), df, col_kinds, frozen=min(3, df.width))
    buf = io.BytesIO()
    wb.save(buf)
    data = _deterministic_xlsx(buf.getvalue(), stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a workbook
    return path
