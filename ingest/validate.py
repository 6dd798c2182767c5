"""Parse one landed file against its contract: good rows typed, bad rows kept with the reason.

Pure data in, data out: nothing here touches the warehouse. The loader decides what to do
with the result (load the good rows, quarantine the bad, or refuse the file).

Every line of the file is framed first (line number + raw text), so a bad row can always be
reported by file, line, field and reason with its original text, and nothing is dropped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ingest.contracts import CITY_TZ, DEMAND_KINDS, ENTITLEMENTS, READING_KINDS, Contract

# Timestamps carry an explicit UTC offset or a Z: a naive local time is ambiguous around DST.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%#z"
POLARS_TYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "timestamp": pl.Datetime("us")}
BAD_SCHEMA = {"line": pl.Int64, "field": pl.String, "reason": pl.String, "raw_text": pl.String}


class FileRefused(Exception):
    """The whole file is refused: it stays in the landing zone and nothing of it is loaded."""


@dataclass
class ParseResult:
    good: pl.DataFrame  # contract fields typed, plus _line (and event_ts/event_date for event files)
    bad: pl.DataFrame  # line, field, reason, raw_text — one row per rejected line
    lines: int  # data lines in the file (header excluded)
    header: dict = field(default_factory=dict)  # clearing batch header, when the format has one

    @property
    def reject_ratio(self) -> float:
        return self.bad.height / self.lines if self.lines else 0.0


def frame_lines(path: Path) -> tuple[pl.DataFrame, bool]:
    """Every line of the file as (line, raw); and whether the file ends with a newline."""
    data = path.read_bytes()
    if not data.strip():
        raise FileRefused(f"{path.name}: empty file")
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    frame = pl.DataFrame({"raw": lines}, schema={"raw": pl.String}).with_row_index("line", offset=1)
    return frame.with_columns(pl.col("line").cast(pl.Int64)), ends_with_newline


def _fields_from_json(frame: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    return frame.with_columns([pl.col("raw").str.json_path_match(f"$.{n}").alias(n) for n in names])


def _fields_from_csv(frame: pl.DataFrame, contract: Contract, path: Path) -> tuple[pl.DataFrame, list[dict]]:
    """Split CSV lines into string columns; a line with the wrong field count is returned as bad."""
    header_line = frame["raw"][0].lstrip("\ufeff")
    header = next(csv.reader([header_line]))
    expected = list(contract.field_names)
    if header != expected:
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        raise FileRefused(
            f"{path.name}: columns changed (missing {missing or 'none'}, unexpected {extra or 'none'}); "
            f"the contract {contract.name!r} expects {','.join(expected)}"
        )
    body = frame.slice(1)
    width = len(expected)
    rows: list[list[str | None]] = []
    bad: list[dict] = []
    keep = []
    for line_no, raw in zip(body["line"].to_list(), body["raw"].to_list()):
        try:
            values = next(csv.reader([raw]))
        except (csv.Error, StopIteration):
            values = []
        if len(values) != width:
            bad.append({"line": line_no, "field": None, "reason": f"expected {width} fields, found {len(values)}", "raw_text": raw})
            continue
        rows.append([v if v != "" else None for v in values])
        keep.append(line_no)
    cols = {name: [r[i] for r in rows] for i, name in enumerate(expected)}
    parsed = pl.DataFrame(cols, schema={n: pl.String for n in expected})
    kept = body.filter(pl.col("line").is_in(keep)) if bad else body
    return pl.concat([kept, parsed], how="horizontal"), bad


def _checks(contract: Contract, known_devices: set[str] | None) -> list[tuple[str, pl.Expr, str]]:
    """(field, failing-condition, reason) in the order they are reported; first failure wins."""
    checks: list[tuple[str, pl.Expr, str]] = []
    for f in contract.fields:
        col = pl.col(f.name)
        typed = pl.col(f"__{f.name}")
        if f.required:
            checks.append((f.name, col.is_null() | (col.str.strip_chars() == ""), "missing required field"))
        if f.dtype in ("int", "float"):
            checks.append((f.name, col.is_not_null() & typed.is_null(), f"not a valid {'integer' if f.dtype == 'int' else 'number'}"))
        if f.dtype == "timestamp":
            checks.append((f.name, col.is_not_null() & typed.is_null(), "not an ISO-8601 timestamp with a UTC offset"))
        if f.allowed is not None:
            checks.append((f.name, col.is_not_null() & ~col.is_in(list(f.allowed)), f"not one of {', '.join(f.allowed)}"))
        if f.min is not None:
            checks.append((f.name, typed < f.min, f"below the minimum {f.min:g}"))
        if f.max is not None:
            checks.append((f.name, typed > f.max, f"above the maximum {f.max:g}"))
    names = contract.field_names
    if "device_id" in names and known_devices is not None:
        checks.append(("device_id", pl.col("device_id").is_not_null() & ~pl.col("device_id").is_in(list(known_devices)), "unknown device"))
    if contract.name == "telemetry":
        kind, value = pl.col("kind"), pl.col("__value")
        for k, (unit, lo, hi) in READING_KINDS.items():
            is_k = kind == k
            checks.append(("unit", is_k & (pl.col("unit") != unit), f"unit must be {unit!r} for {k}"))
            checks.append(("value", is_k & ((value < lo) | (value > hi)), f"impossible value for {k} (range {lo:g}..{hi:g})"))
        checks.append(("category", kind.is_in(list(DEMAND_KINDS)) & pl.col("category").is_null(), "category required for locker deposits and pickups"))
    if contract.name == "pass_scans":
        bad_token = pl.col("entitlements").str.split(";").list.eval(~pl.element().is_in(list(ENTITLEMENTS))).list.any()
        checks.append(("entitlements", pl.col("entitlements").is_not_null() & bad_token, f"entitlements must be a subset of {';'.join(ENTITLEMENTS)}"))
    return checks


def _typed(contract: Contract) -> list[pl.Expr]:
    exprs = []
    for f in contract.fields:
        col = pl.col(f.name)
        if f.dtype == "timestamp":
            expr = col.str.to_datetime(TS_FORMAT, strict=False, time_zone="UTC").dt.replace_time_zone(None)
        elif f.dtype in ("int", "float"):
            expr = col.cast(POLARS_TYPES[f.dtype], strict=False)
            if f.dtype == "int":  # "3.0" or "3.5" must not pass as an integer
                expr = pl.when(col.str.contains(r"^-?\d+$")).then(expr).otherwise(None)
        else:
            expr = col
        exprs.append(expr.alias(f"__{f.name}"))
    return exprs


def event_time_columns(contract: Contract) -> list[pl.Expr]:
    """event_ts (naive UTC) and event_date (the city's local date) — the partition of a row.

    Telemetry: the gateway's receive time is the trusted clock. When the device clock is off
    by more than the contract's threshold the row is flagged and received_at is used; the
    flag and the skew stay in the row, so nothing is corrected silently.
    """
    if contract.event_time is None:
        return []
    if contract.name == "telemetry":
        threshold = contract.extra.get("skew_threshold_s", 300)
        skew = (pl.col("device_time") - pl.col("received_at")).dt.total_microseconds() / 1e6
        exprs = [
            skew.alias("clock_skew_s"),
            (skew.abs() > threshold).alias("is_clock_skewed"),
            pl.when(skew.abs() > threshold).then(pl.col("received_at")).otherwise(pl.col("device_time")).alias("event_ts"),
        ]
    else:
        exprs = [pl.col(contract.event_time).alias("event_ts")]
    return exprs


def local_date(expr: pl.Expr) -> pl.Expr:
    return expr.dt.replace_time_zone("UTC").dt.convert_time_zone(CITY_TZ).dt.date()


def validate_file(contract: Contract, path: Path, known_devices: set[str] | None = None) -> ParseResult:
    """Parse and validate one file. Raises FileRefused when the file as a whole is unusable."""
    frame, ends_with_newline = frame_lines(path)
    header: dict = {}
    bad_rows: list[dict] = []
    if contract.file_format == "csv":
        if frame.height <= 1:
            raise FileRefused(f"{path.name}: header only, no rows")
        data_lines = frame.height - 1
        fields, bad_rows = _fields_from_csv(frame, contract, path)
    else:
        if contract.name == "clearing":
            header, frame = _split_clearing_header(frame, path)
        data_lines = frame.height
        fields = _fields_from_json(frame, contract.field_names)
    last_line = frame["line"].max() if frame.height else None

    # A line that is blank, not UTF-8, or not an object at all fails before any field rule.
    names = contract.field_names
    framing = (
        pl.when(pl.col("raw").str.contains("\ufffd", literal=True))
        .then(pl.lit("invalid UTF-8"))
        .when(pl.col("raw").str.strip_chars() == "")
        .then(pl.lit("blank line"))
    )
    if contract.file_format == "jsonl":
        framing = framing.when(pl.all_horizontal([pl.col(n).is_null() for n in names])).then(pl.lit("unparseable JSON line"))
    fields = fields.with_columns(framing.otherwise(None).alias("__framing"))
    fields = fields.with_columns(_typed(contract))

    reason = pl.when(pl.col("__framing").is_not_null()).then(pl.col("__framing"))
    field_name = pl.when(pl.col("__framing").is_not_null()).then(pl.lit(None, dtype=pl.String))
    for fname, failing, why in _checks(contract, known_devices):
        reason = reason.when(failing).then(pl.lit(why))
        field_name = field_name.when(failing).then(pl.lit(fname))
    fields = fields.with_columns(reason.otherwise(None).alias("__reason"), field_name.otherwise(None).alias("__field"))

    bad = fields.filter(pl.col("__reason").is_not_null()).select(
        pl.col("line"), pl.col("__field").alias("field"), pl.col("__reason").alias("reason"), pl.col("raw").alias("raw_text")
    )
    if bad_rows:
        bad = pl.concat([bad, pl.DataFrame(bad_rows, schema=BAD_SCHEMA)]).sort("line")

    # A last line cut off mid-record with no newline is a truncated delivery, not one bad row.
    if not ends_with_newline and last_line is not None and last_line in set(bad["line"].to_list()):
        raise FileRefused(f"{path.name}: truncated (last line {last_line} is incomplete and has no line end)")

    good = fields.filter(pl.col("__reason").is_null()).select(
        [pl.col(f"__{n}").alias(n) for n in names] + [pl.col("line").alias("_line")]
    )
    time_cols = event_time_columns(contract)
    if time_cols:
        good = good.with_columns(time_cols).with_columns(local_date(pl.col("event_ts")).alias("event_date"))
    return ParseResult(good=good, bad=bad.cast(BAD_SCHEMA), lines=data_lines, header=header)


def _split_clearing_header(frame: pl.DataFrame, path: Path) -> tuple[dict, pl.DataFrame]:
    """The first line of a clearing batch is its header: count and sum the lines must add up to."""
    try:
        header = json.loads(frame["raw"][0])
    except (json.JSONDecodeError, IndexError) as exc:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header ({exc})") from None
    missing = [k for k in ("batch_id", "line_count", "total_cents", "cleared_at") if k not in header]
    if header.get("record") != "header" or missing:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header (missing {missing or 'record=header'})")
    return header, frame.slice(1)


def check_clearing_totals(result: ParseResult, path: Path) -> None:
    """Refuse a batch whose lines do not add up to its header: truncated or tampered in transit."""
    h = result.header
    lines = result.lines
    total = int(result.good["amount_cents"].sum() or 0)
    if lines != int(h["line_count"]) or (result.bad.height == 0 and total != int(h["total_cents"])):
        raise FileRefused(
            f"{path.name}: batch {h['batch_id']} header says {h['line_count']} lines / {h['total_cents']} cents, "
            f"the file has {lines} lines / {total} cents in its valid lines"
        )

