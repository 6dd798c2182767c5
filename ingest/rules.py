"""The contract's rules applied to framed lines: good rows typed, bad rows with field and reason.

Pure data in, data out: nothing here touches the warehouse or decides about a whole file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from ingest.contracts import CITY_TZ, Contract
from ingest.decode import fields_from_csv, fields_from_json, json_failure
from ingest.manifest import now_utc
from ingest.parsed import BAD_SCHEMA, Known, ParseResult, as_known

# Timestamps carry an explicit UTC offset or a Z: a naive local time is ambiguous around DST.
# Fractional seconds are optional (`%.f`), as in every ISO-8601 reader.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
POLARS_TYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "timestamp": pl.Datetime("us")}
# DuckDB's json_type of a value that is not a string, in words.
JSON_NOT_STRING = {"BIGINT": "number", "UBIGINT": "number", "HUGEINT": "number", "DOUBLE": "number", "BOOLEAN": "boolean", "ARRAY": "array", "OBJECT": "object"}


def string_fields(contract: Contract) -> tuple[str, ...]:
    """The fields whose JSON value must be a string (JSON files only: a CSV value is text)."""
    return tuple(f.name for f in contract.fields if f.dtype == "str") if contract.file_format == "jsonl" else ()


def _checks(contract: Contract, known_devices: Known | None) -> list[tuple[str, pl.Expr, str | pl.Expr]]:
    """(field, failing-condition, reason) in the order they are reported; first failure wins."""
    checks: list[tuple[str, pl.Expr, str | pl.Expr]] = []
    strings = string_fields(contract)
    latest = now_utc() + timedelta(days=contract.days_ahead) if contract.days_ahead is not None else None
    for f in contract.fields:
        col = pl.col(f.name)
        typed = pl.col(f"__{f.name}")
        if f.name in strings:
            jtype = pl.col("__jtypes").list.get(strings.index(f.name), null_on_oob=True)
            checks.append((
                f.name, jtype.is_in(list(JSON_NOT_STRING)),
                pl.concat_str(pl.lit("a JSON "), jtype.replace_strict(JSON_NOT_STRING, default="value"), pl.lit(", not a string")),
            ))
        if f.required:
            checks.append((f.name, col.is_null() | (col.str.strip_chars() == ""), "missing required field"))
        if f.dtype in ("int", "float"):
            checks.append((f.name, col.is_not_null() & typed.is_null(), f"not a valid {'integer' if f.dtype == 'int' else 'number'}"))
        if f.dtype == "float":
            checks.append((f.name, typed.is_nan() | typed.is_infinite(), "not a finite number"))
        if f.dtype == "timestamp":
            checks.append((f.name, col.is_not_null() & typed.is_null(), "not an ISO-8601 timestamp with a UTC offset"))
            if contract.earliest is not None:
                first = datetime.combine(contract.earliest, datetime.min.time())
                checks.append((f.name, typed < first, f"before {contract.earliest}, the earliest plausible time (the contract's window)"))
            if latest is not None:
                checks.append((f.name, typed > latest, f"more than {contract.days_ahead} day(s) in the future (the contract's window)"))
        if f.allowed is not None:
            checks.append((f.name, col.is_not_null() & ~col.is_in(list(f.allowed)), f"not one of {', '.join(f.allowed)}"))
        if f.min is not None:
            checks.append((f.name, typed < f.min, f"below the minimum {f.min:g}"))
        if f.max is not None:
            checks.append((f.name, typed > f.max, f"above the maximum {f.max:g}"))
    known = as_known(known_devices)
    if contract.checks_devices and known is not None:
        checks.append(("device_id", pl.col("device_id").is_not_null() & ~pl.col("device_id").is_in(list(known.devices)), "unknown device"))
        # Hubs and categories are checked once their reference is loaded (empty: not yet).
        for name, keys, what in (("hub_id", known.hubs, "hub"), ("category", known.categories, "category")):
            if name in contract.field_names and keys:
                checks.append((name, pl.col(name).is_not_null() & ~pl.col(name).is_in(list(keys)), f"unknown {what} (not in the reference data)"))
    if contract.reading_kinds is not None:
        kind, value = pl.col("kind"), pl.col("__value")
        for k, (unit, lo, hi) in contract.reading_kinds.items():
            is_k = kind == k
            checks.append(("unit", is_k & (pl.col("unit") != unit), f"unit must be {unit!r} for {k}"))
            checks.append(("value", is_k & ((value < lo) | (value > hi)), f"impossible value for {k} (range {lo:g}..{hi:g})"))
    if contract.category_required_for:
        needs = pl.col("kind").is_in(list(contract.category_required_for))
        checks.append(("category", needs & pl.col("category").is_null(), "category required for locker deposits and pickups"))
    for f in contract.fields:  # after the row-wide checks above: the first failure is the one reported
        if f.subset_of is not None:
            col = pl.col(f.name)
            bad_token = col.str.split(";").list.eval(~pl.element().is_in(list(f.subset_of))).list.any()
            checks.append((f.name, col.is_not_null() & bad_token, f"{f.name} must be a subset of {';'.join(f.subset_of)}"))
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

    With a clock-skew threshold (telemetry), the gateway's receive time is the trusted clock:
    when the device clock is off by more than the threshold the row is flagged and
    received_at is used; the flag and the skew stay in the row, so nothing is corrected
    silently.
    """
    if contract.event_time is None:
        return []
    threshold = contract.clock_skew_threshold_s
    if threshold is not None:
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
    known_devices: Known | None = None,
) -> ParseResult:
    """Validate framed data lines (no header) of one chunk: good rows typed, bad rows with reasons."""
    names = contract.field_names
    bad_rows: list[dict] = []
    extra_keys: dict[str, int] = {}
    extras = pl.DataFrame()
    if contract.file_format == "csv":
        fields, bad_rows = fields_from_csv(frame, contract)
    else:
        fields = fields_from_json(frame, names, string_fields(contract))
        extras = fields.filter(pl.col("__extra").list.len() > 0).select("line", "__extra")
        extra_keys = extra_key_counts(extras)

    # A line that is blank, not UTF-8, or not a JSON object fails before any field rule.
    framing = (
        pl.when(pl.col("raw").str.contains("\ufffd", literal=True))
        .then(pl.lit("invalid UTF-8"))
        .when(pl.col("raw").str.strip_chars() == "")
        .then(pl.lit("blank line"))
    )
    if contract.file_format == "jsonl":
        framing = framing.when(pl.col("__dupkey").is_not_null()).then(
            pl.concat_str(pl.lit("duplicate key '"), pl.col("__dupkey"), pl.lit("' in the JSON object (which value is meant is unknown)"))
        )
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
        reason = reason.when(cond).then(pl.lit(why) if isinstance(why, str) else why)
        field_name = field_name.when(cond).then(pl.lit(fname))
    bad = fields.filter(pl.col("__bad")).select(
        pl.col("line"), field_name.otherwise(None).alias("field"), reason.otherwise(None).alias("reason"), pl.col("raw").alias("raw_text")
    )
    if contract.file_format == "jsonl" and bad.height:
        # Say precisely why a line is not an object (rare lines only: Python's json is fine here).
        bad = bad.with_columns(
            pl.when(pl.col("reason") == "unparseable JSON line")
            .then(pl.col("raw_text").map_elements(json_failure, return_dtype=pl.String))
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


def extra_key_counts(extras: pl.DataFrame) -> dict[str, int]:
    if not extras.height:
        return {}
    counts = extras.select(pl.col("__extra").explode()).to_series().value_counts()
    return {str(k): int(v) for k, v in counts.iter_rows()}


