"""A framed line's contract fields, as strings: JSON decoded by DuckDB, CSV split by polars.

A JSON line is decoded by DuckDB (`json_transform` to a struct of strings, a string map only
for the rare line whose keys are not exactly the contract's) on the Arrow frame, in an
in-memory DuckDB that never sees the warehouse; a CSV line without quotes is split by
polars, and only lines with quotes go through Python's csv module.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import duckdb
import polars as pl

from ingest.contracts import Contract
from ingest.parsed import FileRefused

_DUCK = threading.local()


def _duck() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB per thread, used only as a JSON decoder for Arrow frames."""
    con = getattr(_DUCK, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
        con.execute("SET produce_arrow_string_view = true")
        _DUCK.con = con
    return con


def _json_sql(names: tuple[str, ...], string_fields: tuple[str, ...] = ()) -> str:
    """The decoder's SQL for one contract: a fast path for the usual line, a string map for the rest.

    The usual line is an object whose keys are exactly the contract's (`json_keys`, in the
    contract's order or, failing that, in any order); `json_transform` reads it into a struct
    of strings. Only the other lines (a key missing, repeated or extra, not an object, not
    JSON) are decoded into a string map, as before: a missing field is null, extra keys are
    listed. The map costs about twice the struct, so decoding every line into a map was the
    parser's largest cost. No path expects an error on a usual
    line: DuckDB's `try` redoes a failing vector row by row, some 20× slower.
    """
    struct = "{" + ", ".join(f'"{n}": "VARCHAR"' for n in names) + "}"
    known = "[" + ", ".join(f"'{n}'" for n in names) + "]"
    known_sorted = "[" + ", ".join(f"'{n}'" for n in sorted(names)) + "]"
    picks = ", ".join(f"CASE WHEN slow THEN m['{n}'] ELSE s.\"{n}\" END AS \"{n}\"" for n in names)
    # The JSON type of every string field's value (a number, bool, array or object would
    # otherwise be read as its text): one more parse of the line, in one call.
    types = ", try(json_type(raw, [" + ", ".join(f"'$.\"{n}\"'" for n in string_fields) + "])) AS __jtypes" if string_fields else ""
    present = " + ".join(f"map_contains(m, '{n}')::INT" for n in names)
    # CASE evaluates a branch only for the rows that take it: the keys are sorted only when
    # they are not in the contract's order, the struct read only for the usual lines, the
    # map built only for the rest.
    return f"""
        SELECT {picks}{types}, CASE WHEN slow THEN m IS NOT NULL ELSE true END AS __object,
               CASE WHEN slow AND cardinality(m) > ({present})
                    THEN list_filter(map_keys(m), k -> NOT list_contains({known}, k)) END AS __extra,
               CASE WHEN slow AND len(keys) > len(list_distinct(keys))
                    THEN list_filter(keys, (k, i) -> list_position(keys, k) < i)[1] END AS __dupkey
        FROM (
            SELECT raw, keys, s, slow, CASE WHEN slow THEN try(json_transform(raw, '"MAP(VARCHAR, VARCHAR)"')) END AS m
            FROM (
                SELECT raw, keys, s, NOT usual AS slow
                FROM (
                    SELECT raw, keys, usual, CASE WHEN usual THEN try(json_transform(raw, '{struct}')) END AS s
                    FROM (
                        SELECT raw, keys, coalesce(CASE WHEN keys = {known} THEN true ELSE list_sort(keys) = {known_sorted} END, false) AS usual
                        FROM (SELECT raw, try(json_keys(raw)) AS keys FROM lines)
                    )
                )
            )
        )
    """


def fields_from_json(frame: pl.DataFrame, names: tuple[str, ...], string_fields: tuple[str, ...] = ()) -> pl.DataFrame:
    """Decode each line into its contract fields as strings; a field missing from the object is null.

    Adds `__object` (the line is a JSON object), `__extra` (its keys outside the contract) and
    `__dupkey` (a key the object repeats: which of its values is meant is unknown).
    Values keep their JSON text (`3.0` stays `3.0`, so it is not an integer). With
    `string_fields`, adds `__jtypes`: the JSON type of each of those fields' values, in order
    (DuckDB's names: VARCHAR, BIGINT, DOUBLE, BOOLEAN, ARRAY, OBJECT, NULL; null when absent).
    """
    con = _duck()
    # Handed over as Arrow string views (zero-copy; DuckDB scans a pyarrow table faster than a
    # polars frame), read by name in the SQL (replacement scan).
    lines = frame.select("raw").to_arrow(compat_level=pl.CompatLevel.newest())  # noqa: F841
    parsed = con.execute(_json_sql(names, string_fields)).pl()
    assert parsed.height == frame.height
    return pl.concat([frame, parsed.cast({n: pl.String for n in names})], how="horizontal")


def json_failure(raw: str) -> str:
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


def fields_from_csv(body: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, list[dict]]:
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
