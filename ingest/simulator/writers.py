"""Render delivered files to bytes (polars writers, then line-level faults) and write them.

Only files that carry line faults are split into lines in Python; everything else is one
polars `write_ndjson` / `write_csv` call.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from ingest.contracts import CLEARING

from .faults import OutFile

LINE_FAULTS = ("corrupt_line", "wrong_type")
# (field, wrong-typed value) used for `wrong_type` faults, per contract
WRONG_TYPES = {
    "telemetry": (("seq", "abc"), ("value", "n/a")),
    "pass_scans": (("scanned_at", "yesterday 25:61"),),
    "transactions": (("amount_cents", "12,50"),),
}


def header_lines(f: OutFile) -> int:
    """Lines before the first data row."""
    return 1 if (f.contract.file_format == "csv" or f.header is not None) else 0


def columns(f: OutFile) -> list[str]:
    if f.contract.name == CLEARING.name:
        return ["record", *CLEARING.field_names]
    return list(f.contract.field_names)


def _corrupt(f: OutFile, line: bytes, kind: str, n: int) -> bytes:
    if f.contract.file_format == "jsonl":
        if kind == "corrupt_line":
            return line[: len(line) // 2]  # the object is never closed
        obj = json.loads(line)
        field, bad = WRONG_TYPES[f.contract.name][n % len(WRONG_TYPES[f.contract.name])]
        obj[field] = bad
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    parts = line.split(b",")
    if kind == "corrupt_line":
        return b",".join(parts[:4])  # a partly written row: too few fields
    field, bad = WRONG_TYPES[f.contract.name][0]
    parts[columns(f).index(field)] = bad.encode()
    return b",".join(parts)


def render(f: OutFile) -> bytes:
    if f.data is not None:
        return f.data
    if f.copy_of is not None:
        src = render(f.copy_of)
        if f.truncate_frac is None:
            f.data = src
        else:
            lines = src.split(b"\n")[:-1]
            first = header_lines(f)
            j = max(first, min(len(lines) - 1, first + int((len(lines) - first) * f.truncate_frac)))
            kept = b"\n".join(lines[:j])
            cut = lines[j][: max(1, len(lines[j]) // 2)]
            f.data = (kept + b"\n" if j else b"") + cut
            f.cut_line = j + 1
        return f.data
    buf = io.BytesIO()
    body = f.rows.select(columns(f))
    if f.contract.file_format == "csv":
        body.write_csv(buf)
    else:
        if f.header is not None:
            buf.write(json.dumps(f.header, separators=(",", ":")).encode() + b"\n")
        body.write_ndjson(buf)
    data = buf.getvalue()
    faulty = f.rows.with_row_index("_pos").filter(pl.col("_fault").is_in(LINE_FAULTS)).select("_pos", "_fault")
    if faulty.height:
        lines = data.split(b"\n")
        off = header_lines(f)
        for n, (pos, kind) in enumerate(faulty.iter_rows()):
            lines[pos + off] = _corrupt(f, lines[pos + off], kind, n)
        data = b"\n".join(lines)
    f.data = data
    return data


def write(out: Path, f: OutFile) -> int:
    path = out / f.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = f.data is None and f.copy_of is None and f.header is None
    if plain and not f.rows["_fault"].is_in(LINE_FAULTS).any():
        # the common case: polars writes the file itself, no bytes pass through Python
        body = f.rows.select(columns(f))
        if f.contract.file_format == "csv":
            body.write_csv(path)
        else:
            body.write_ndjson(path)
        return path.stat().st_size
    data = render(f)
    path.write_bytes(data)
    return len(data)


def write_reference(out: Path, name: str, df: pl.DataFrame) -> Path:
    path = out / "reference" / name / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    df.write_csv(buf)
    path.write_bytes(buf.getvalue())
    return path
