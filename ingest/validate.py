"""Parse one landed file against its contract: good rows typed, bad rows kept with the reason.

Pure data in, data out: nothing here touches the warehouse. The loader decides what to do
with the result (load the good rows, quarantine the bad, or refuse the file).

Every line of the file is framed first (line number + raw text), so a bad row can always be
reported by file, line, field and reason with its original text, and nothing is dropped.

Speed and memory (issue 4, item 8): a file is read in chunks of whole lines
(`CHUNK_BYTES`, 16 MiB), so memory stays bounded whatever the file size, and small files are
validated several at a time (`validate_files`); lines are cut with numpy and handed to
polars as Arrow; a JSON line is decoded by DuckDB (`json_transform` to a struct of strings,
a string map only for the rare line whose keys are not exactly the contract's) on the Arrow
frame, in an in-memory DuckDB that never sees the warehouse; a CSV line without
quotes is split by polars, and only lines with quotes go through Python's csv module.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from ingest.contracts import CITY_TZ, DEMAND_KINDS, ENTITLEMENTS, READING_KINDS, Contract

# Timestamps carry an explicit UTC offset or a Z: a naive local time is ambiguous around DST.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%#z"
POLARS_TYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "timestamp": pl.Datetime("us")}
BAD_SCHEMA = {"line": pl.Int64, "field": pl.String, "reason": pl.String, "raw_text": pl.String}
# Bytes read at a time; a chunk always ends on a line end. Overridable for tests and benchmarks.
# Parsing a chunk takes many times its size at its peak (lines, decoded fields, typed
# columns; a chunk parsed ahead while one is written): at 16 MiB the loader's own memory
# peaked at ~780 MB in bench_ingest --big-file, the same for a 1 GB and a 2 GB file.
CHUNK_BYTES = int(os.environ.get("CIVICFLOW_INGEST_CHUNK_BYTES", str(16 << 20)))


class FileRefused(Exception):
    """The whole file is refused: it stays in the landing zone and nothing of it is loaded."""


@dataclass
class ParseResult:
    good: pl.DataFrame  # contract fields typed, plus _line (and event_ts/event_date for event files)
    bad: pl.DataFrame  # line, field, reason, raw_text — one row per rejected line
    lines: int  # data lines in the file (header excluded)
    header: dict = field(default_factory=dict)  # clearing batch header, when the format has one
    extra_keys: dict[str, int] = field(default_factory=dict)  # JSON keys outside the contract -> lines carrying them
    extra_lines: pl.DataFrame | None = None  # (line, __extra) of the lines with keys outside the contract

    @property
    def reject_ratio(self) -> float:
        return self.bad.height / self.lines if self.lines else 0.0


# --------------------------------------------------------------------------- framing


def read_chunks(path: Path, chunk_bytes: int | None = None) -> Iterator[tuple[bytes, bool]]:
    """The file's bytes as (chunk, is_last); every chunk but the last ends with a line end."""
    size = chunk_bytes or CHUNK_BYTES
    pending: bytes | None = None
    carry = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(size)
            if not block:
                break
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a chunk: keep reading until its end
                carry = data
                continue
            carry = data[cut + 1 :]
            if pending is not None:
                yield pending, False
            pending = data[: cut + 1]
    if carry:
        if pending is not None:
            yield pending, False
        yield carry, True
    else:
        yield (pending if pending is not None else b""), True


def frame_bytes(data: bytes, first_line: int = 1) -> tuple[pl.DataFrame, bool]:
    """Lines of a chunk as (line, raw), numbered from first_line; and whether it ends with a newline.

    The lines are cut where the newlines are (numpy) and handed to polars as one Arrow string
    array over the chunk's own bytes: no Python string of the chunk, no split-and-explode,
    one copy (dropping the newlines): about a third of the former split-and-explode's CPU.
    """
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:  # bad bytes become U+FFFD; the line is then quarantined as invalid UTF-8
            data = data.decode("utf-8", errors="replace").encode("utf-8")
    ends_with_newline = data.endswith(b"\n")
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1  # each line keeps its newline here
    if not ends_with_newline:
        ends = np.append(ends, len(data))  # the last line has none
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    raw = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    frame = pl.DataFrame(
        {
            "line": np.arange(first_line, first_line + len(ends), dtype=np.int64),
            "raw": pl.Series(raw, dtype=pl.String).str.strip_suffix("\n"),
        }
    )
    return frame, ends_with_newline


def frame_lines(path: Path) -> tuple[pl.DataFrame, bool]:
    """Every line of the file as (line, raw); and whether the file ends with a newline (small files)."""
    data = path.read_bytes()
    if not data.strip():
        raise FileRefused(f"{path.name}: empty file")
    return frame_bytes(data)


# --------------------------------------------------------------------------- fields as strings

_DUCK = threading.local()


def _duck() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB per thread, used only as a JSON decoder for Arrow frames."""
    con = getattr(_DUCK, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
        con.execute("SET produce_arrow_string_view = true")
        _DUCK.con = con
    return con


def _json_sql(names: tuple[str, ...]) -> str:
    """The decoder's SQL for one contract: a fast path for the usual line, a string map for the rest.

    The usual line is an object whose keys are exactly the contract's (`json_keys`, in the
    contract's order or, failing that, in any order); `json_transform` reads it into a struct
    of strings. Only the other lines (a key missing, repeated or extra, not an object, not
    JSON) are decoded into a string map, as before: a missing field is null, extra keys are
    listed. The map costs about twice the struct, so decoding every line into a map was the
    parser's largest cost (profile, issue 4 item 8). No path expects an error on a usual
    line: DuckDB's `try` redoes a failing vector row by row, some 20× slower.
    """
    struct = "{" + ", ".join(f'"{n}": "VARCHAR"' for n in names) + "}"
    known = "[" + ", ".join(f"'{n}'" for n in names) + "]"
    known_sorted = "[" + ", ".join(f"'{n}'" for n in sorted(names)) + "]"
    picks = ", ".join(f"CASE WHEN slow THEN m['{n}'] ELSE s.\"{n}\" END AS \"{n}\"" for n in names)
    present = " + ".join(f"map_contains(m, '{n}')::INT" for n in names)
    # CASE evaluates a branch only for the rows that take it: the keys are sorted only when
    # they are not in the contract's order, the struct read only for the usual lines, the
    # map built only for the rest.
    return f"""
        SELECT {picks}, CASE WHEN slow THEN m IS NOT NULL ELSE true END AS __object,
               CASE WHEN slow AND cardinality(m) > ({present})
                    THEN list_filter(map_keys(m), k -> NOT list_contains({known}, k)) END AS __extra
        FROM (
            SELECT s, slow, CASE WHEN slow THEN try(json_transform(raw, '"MAP(VARCHAR, VARCHAR)"')) END AS m
            FROM (
                SELECT raw, s, NOT usual AS slow
                FROM (
                    SELECT raw, usual, CASE WHEN usual THEN try(json_transform(raw, '{struct}')) END AS s
                    FROM (
                        SELECT raw, coalesce(CASE WHEN keys = {known} THEN true ELSE list_sort(keys) = {known_sorted} END, false) AS usual
                        FROM (SELECT raw, try(json_keys(raw)) AS keys FROM lines)
                    )
                )
            )
        )
    """


def _fields_from_json(frame: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    """Decode each line into its contract fields as strings; a field missing from the object is null.

    Adds `__object` (the line is a JSON object) and `__extra` (its keys outside the contract).
    Values keep their JSON text (`3.0` stays `3.0`, so it is not an integer).
    """
    con = _duck()
    # Handed over as Arrow string views (zero-copy; DuckDB scans a pyarrow table faster than a
    # polars frame), read by name in the SQL (replacement scan).
    lines = frame.select("raw").to_arrow(compat_level=pl.CompatLevel.newest())  # noqa: F841
    parsed = con.execute(_json_sql(names)).pl()
    assert parsed.height == frame.height
    return pl.concat([frame, parsed.cast({n: pl.String for n in names})], how="horizontal")


def _json_failure(raw: str) -> str:
    """Why a line is not a usable JSON object (only called for the few lines that are not)."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return "unparseable JSON line"
    if not isinstance(obj, dict):
        return "not a JSON object"
    return "JSON object not readable as key/value pairs"


def csv_header(frame: pl.DataFrame, contract: Contract, path: Path) -> None:
    """Refuse a CSV whose header is not the contract's columns, in order."""
    header_line = frame["raw"][0].lstrip("\ufeff").rstrip("\r")
    header = next(csv.reader([header_line]), [])
    expected = list(contract.field_names)
    if header != expected:
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        order = " (same columns, another order)" if not missing and not extra else ""
        raise FileRefused(
            f"{path.name}: columns changed{order} (missing {missing or 'none'}, unexpected {extra or 'none'}); "
            f"the contract {contract.name!r} expects {','.join(expected)}"
        )


def _fields_from_csv(body: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, list[dict]]:
    """Split CSV lines into string columns; a line with the wrong field count is returned as bad.

    Lines without a quote character are split by polars; the rare quoted line goes through
    Python's csv module so quoting rules hold.
    """
    expected = list(contract.field_names)
    width = len(expected)
    quoted = body["raw"].str.contains('"', literal=True)
    plain = body.filter(~quoted).with_columns(
        pl.when(pl.col("raw") == "")
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(pl.col("raw").str.strip_suffix("\r").str.split(","))
        .alias("__parts")
    )
    n = pl.col("__parts").list.len()
    bad = plain.filter(n != width).select(
        "line",
        pl.lit(None, dtype=pl.String).alias("field"),
        pl.format("expected {} fields, found {}", pl.lit(width), n).alias("reason"),
        pl.col("raw").alias("raw_text"),
    )
    ok = plain.filter(n == width)
    fields = ok.select(
        "line",
        "raw",
        *[
            pl.col("__parts").list.get(i).replace("", None).alias(name)  # empty cell = missing
            for i, name in enumerate(expected)
        ],
    )
    bad_rows: list[dict] = bad.to_dicts()
    if quoted.any():
        rows, keep = [], []
        for line_no, raw in body.filter(quoted).select("line", "raw").iter_rows():
            try:
                values = next(csv.reader([raw]))
            except (csv.Error, StopIteration):
                values = []
            if len(values) != width:
                bad_rows.append({"line": line_no, "field": None, "reason": f"expected {width} fields, found {len(values)}", "raw_text": raw})
                continue
            rows.append([line_no, raw, *[v if v != "" else None for v in values]])
            keep.append(line_no)
        if rows:
            extra = pl.DataFrame(rows, schema={"line": pl.Int64, "raw": pl.String, **{n: pl.String for n in expected}}, orient="row")
            fields = pl.concat([fields, extra]).sort("line")
    return fields, bad_rows


# --------------------------------------------------------------------------- rules

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


def validate_lines(
    contract: Contract,
    frame: pl.DataFrame,
    known_devices: set[str] | None = None,
) -> ParseResult:
    """Validate framed data lines (no header) of one chunk: good rows typed, bad rows with reasons."""
    names = contract.field_names
    bad_rows: list[dict] = []
    extra_keys: dict[str, int] = {}
    extras = pl.DataFrame()
    if contract.file_format == "csv":
        fields, bad_rows = _fields_from_csv(frame, contract)
    else:
        fields = _fields_from_json(frame, names)
        extras = fields.filter(pl.col("__extra").list.len() > 0).select("line", "__extra")
        extra_keys = _extra_key_counts(extras)

    # A line that is blank, not UTF-8, or not a JSON object fails before any field rule.
    framing = (
        pl.when(pl.col("raw").str.contains("\ufffd", literal=True))
        .then(pl.lit("invalid UTF-8"))
        .when(pl.col("raw").str.strip_chars() == "")
        .then(pl.lit("blank line"))
    )
    if contract.file_format == "jsonl":
        framing = framing.when(~pl.col("__object")).then(pl.lit("unparseable JSON line"))
    fields = fields.with_columns(framing.otherwise(None).alias("__framing"))
    fields = fields.with_columns(_typed(contract))

    checks = _checks(contract, known_devices)
    # Every rule once over all rows (null = passes); the first failing rule's reason only on
    # the few failing rows.
    failing = pl.any_horizontal([pl.col("__framing").is_not_null()] + [cond.fill_null(False) for _, cond, _ in checks])
    fields = fields.with_columns(failing.alias("__bad"))
    reason = pl.when(pl.col("__framing").is_not_null()).then(pl.col("__framing"))
    field_name = pl.when(pl.col("__framing").is_not_null()).then(pl.lit(None, dtype=pl.String))
    for fname, cond, why in checks:
        reason = reason.when(cond).then(pl.lit(why))
        field_name = field_name.when(cond).then(pl.lit(fname))
    bad = fields.filter(pl.col("__bad")).select(
        pl.col("line"), field_name.otherwise(None).alias("field"), reason.otherwise(None).alias("reason"), pl.col("raw").alias("raw_text")
    )
    if contract.file_format == "jsonl" and bad.height:
        # Say precisely why a line is not an object (rare lines only: Python's json is fine here).
        bad = bad.with_columns(
            pl.when(pl.col("reason") == "unparseable JSON line")
            .then(pl.col("raw_text").map_elements(_json_failure, return_dtype=pl.String))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    if bad_rows:
        bad = pl.concat([bad.cast(BAD_SCHEMA), pl.DataFrame(bad_rows, schema=BAD_SCHEMA)]).sort("line")

    # Lazy, so only the kept columns are filtered (not the raw text and the string fields).
    good = (
        fields.lazy()
        .filter(~pl.col("__bad"))
        .select([pl.col(f"__{n}").alias(n) for n in names] + [pl.col("line").alias("_line")])
        .collect()
    )
    time_cols = event_time_columns(contract)
    if time_cols:
        good = good.with_columns(time_cols).with_columns(local_date(pl.col("event_ts")).alias("event_date"))
    return ParseResult(
        good=good, bad=bad.cast(BAD_SCHEMA), lines=frame.height, extra_keys=extra_keys,
        extra_lines=extras if extra_keys else None,
    )


def _extra_key_counts(extras: pl.DataFrame) -> dict[str, int]:
    if not extras.height:
        return {}
    counts = extras.select(pl.col("__extra").explode()).to_series().value_counts()
    return {str(k): int(v) for k, v in counts.iter_rows()}


def validate_chunks(
    contract: Contract,
    path: Path,
    known_devices: set[str] | None = None,
    chunk_bytes: int | None = None,
) -> Iterator[ParseResult]:
    """Parse and validate a file chunk by chunk (bounded memory); one ParseResult per chunk.

    Raises FileRefused when the file as a whole is unusable: empty, header only, columns
    changed, not a clearing batch, or truncated (its last line cut off with no line end).
    The clearing header (when there is one) is in the first result's `header`.
    """
    next_line = 1
    data_lines = 0
    saw_content = False
    for data, is_last in read_chunks(path, chunk_bytes):
        if not saw_content and not data.strip():
            if is_last:
                raise FileRefused(f"{path.name}: empty file")
            next_line += data.count(b"\n")  # leading blank lines of a huge file: still numbered
            continue
        frame, ends_with_newline = frame_bytes(data, next_line)
        next_line += frame.height
        header: dict = {}
        if not saw_content:
            saw_content = True
            if contract.file_format == "csv":
                csv_header(frame, contract, path)
                frame = frame.slice(1)
            elif contract.name == "clearing":
                header, frame = _split_clearing_header(frame, path)
        if frame.height == 0:
            if is_last and data_lines == 0 and contract.file_format == "csv":
                raise FileRefused(f"{path.name}: header only, no rows")
            if header:
                yield ParseResult(good=pl.DataFrame(), bad=pl.DataFrame(schema=BAD_SCHEMA), lines=0, header=header)
            continue
        result = validate_lines(contract, frame, known_devices)
        result.header = header
        data_lines += result.lines
        # A last line cut off mid-record with no newline is a truncated delivery, not one bad row.
        if is_last and not ends_with_newline and result.bad.height:
            last_line = int(frame["line"][-1])
            if int(result.bad["line"][-1]) == last_line or last_line in set(result.bad["line"].to_list()):
                raise FileRefused(f"{path.name}: truncated (last line {last_line} is incomplete and has no line end)")
        yield result
    if contract.file_format == "csv" and data_lines == 0 and saw_content:
        raise FileRefused(f"{path.name}: header only, no rows")


def _frame_whole(contract: Contract, path: Path, data: bytes) -> tuple[pl.DataFrame, dict, bool]:
    """A whole small file framed: (data lines, clearing header, ends with a newline); or FileRefused.

    The same file-level checks as `validate_chunks` on a file of one chunk.
    """
    if not data.strip():
        raise FileRefused(f"{path.name}: empty file")
    frame, ends_with_newline = frame_bytes(data)
    header: dict = {}
    if contract.file_format == "csv":
        csv_header(frame, contract, path)
        frame = frame.slice(1)
        if frame.height == 0:
            raise FileRefused(f"{path.name}: header only, no rows")
    elif contract.name == "clearing":
        header, frame = _split_clearing_header(frame, path)
    return frame, header, ends_with_newline


# validate_files numbers the lines of its n-th file from n << FILE_SHIFT, so one validation
# pass over many files keeps every line's file and order (files of 2^40 lines are far off).
FILE_SHIFT = 40


def validate_files(
    contract: Contract, files: list[tuple[Path, bytes]], known_devices: set[str] | None = None
) -> list[ParseResult | FileRefused]:
    """Several small files (each one chunk, already read) validated in one pass; a result or refusal per file.

    Same results as `validate_chunks` file by file. Why together: a simulator file is ~2 MB
    (10,000 lines) and each validation pass has a fixed cost (a DuckDB query planned and run
    on its threads, some dozens of polars expressions): file by file, a line cost about
    twice a line of a 32 MB chunk (profile, issue 4 item 8).
    """
    out: list[ParseResult | FileRefused | None] = [None] * len(files)
    framed: dict[int, tuple[Path, dict, bool, int, int]] = {}  # path, header, ends with newline, lines, last line
    frames = []
    for n, (path, data) in enumerate(files):
        try:
            frame, header, ends_with_newline = _frame_whole(contract, path, data)
        except FileRefused as exc:
            out[n] = exc
            continue
        framed[n] = (path, header, ends_with_newline, frame.height, int(frame["line"][-1]) if frame.height else 0)
        if frame.height:
            frames.append(frame.with_columns(pl.col("line") + (n << FILE_SHIFT)))
    every = validate_lines(contract, pl.concat(frames), known_devices) if frames else None
    goods = _by_file(every.good, "_line") if every else {}
    bads = _by_file(every.bad, "line") if every else {}
    extras = _by_file(every.extra_lines, "line") if every and every.extra_lines is not None else {}
    for n, (path, header, ends_with_newline, lines, last_line) in framed.items():
        bad = bads.get(n, pl.DataFrame(schema=BAD_SCHEMA))
        # A last line cut off mid-record with no newline is a truncated delivery, not one bad row.
        if not ends_with_newline and lines and (bad["line"] == last_line).any():
            out[n] = FileRefused(f"{path.name}: truncated (last line {last_line} is incomplete and has no line end)")
            continue
        out[n] = ParseResult(
            good=goods.get(n, every.good.clear() if every else pl.DataFrame()), bad=bad, lines=lines, header=header,
            extra_keys=_extra_key_counts(extras[n]) if n in extras else {},
        )
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _by_file(frame: pl.DataFrame, line_col: str) -> dict[int, pl.DataFrame]:
    """Rows of several files (in file order) as one zero-copy slice per file, lines renumbered."""
    step = 1 << FILE_SHIFT
    files = (frame[line_col] // step).rle()  # runs of one file number: rows stay in file order
    out, start = {}, 0
    for length, n in files.struct.unnest().iter_rows():
        out[int(n)] = frame.slice(start, length).with_columns(pl.col(line_col) % step)
        start += length
    return out


def validate_file(contract: Contract, path: Path, known_devices: set[str] | None = None) -> ParseResult:
    """Parse and validate one whole file (all chunks together). Raises FileRefused when unusable."""
    parts = list(validate_chunks(contract, path, known_devices))
    goods = [p.good for p in parts if p.good.width]
    extra: dict[str, int] = {}
    for p in parts:
        for k, v in p.extra_keys.items():
            extra[k] = extra.get(k, 0) + v
    return ParseResult(
        good=pl.concat(goods) if goods else pl.DataFrame(),
        bad=pl.concat([p.bad for p in parts]) if parts else pl.DataFrame(schema=BAD_SCHEMA),
        lines=sum(p.lines for p in parts),
        header=parts[0].header if parts else {},
        extra_keys=extra,
    )


def _split_clearing_header(frame: pl.DataFrame, path: Path) -> tuple[dict, pl.DataFrame]:
    """The first line of a clearing batch is its header: count and sum the lines must add up to."""
    try:
        header = json.loads(frame["raw"][0])
    except (json.JSONDecodeError, IndexError) as exc:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header ({exc})") from None
    if not isinstance(header, dict):
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header (not a JSON object)")
    missing = [k for k in ("batch_id", "line_count", "total_cents", "cleared_at") if k not in header]
    if header.get("record") != "header" or missing:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header (missing {missing or 'record=header'})")
    return header, frame.slice(1)


def check_clearing_batch(header: dict, lines: int, valid_total: int, bad_lines: int, path: Path) -> None:
    """Refuse a batch whose lines do not add up to its header: truncated or tampered in transit."""
    if lines != int(header["line_count"]) or (bad_lines == 0 and valid_total != int(header["total_cents"])):
        raise FileRefused(
            f"{path.name}: batch {header['batch_id']} header says {header['line_count']} lines / {header['total_cents']} cents, "
            f"the file has {lines} lines / {valid_total} cents in its valid lines"
        )


def check_clearing_totals(result: ParseResult, path: Path) -> None:
    """`check_clearing_batch` on a whole-file ParseResult."""
    total = int(result.good["amount_cents"].sum() or 0) if result.good.height else 0
    check_clearing_batch(result.header, result.lines, total, result.bad.height, path)
