"""The `raw` schema: one table per contract, the quarantine, the batch headers; and how rows go in.

Frames reach DuckDB as pyarrow tables by replacement scan (a local variable named in the
SQL), never `con.register`: a registered view dropped inside an open transaction stays in
its undo buffer until COMMIT, and with it the whole frame, so memory grew with the file
(~30 MB per 32 MB chunk, 1.9 GB for a 1 GB file). And DuckDB inserts from a pyarrow table
in about half the CPU of the same polars frame.

The caller owns the connection (the single writer) and the transaction.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from ingest.contracts import CATEGORIES, DEVICES, EVENT_CONTRACTS, HUBS, REFERENCE_CONTRACTS, Contract
from ingest.manifest import create_manifest
from ingest.parsed import KnownKeys

SQL_TYPES = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMP", "date": "DATE"}

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS raw._quarantine (
    file_path VARCHAR NOT NULL,
    file_sha256 VARCHAR NOT NULL,
    contract VARCHAR NOT NULL,
    line BIGINT,
    field VARCHAR,
    reason VARCHAR NOT NULL,
    raw_text VARCHAR,
    quarantined_at TIMESTAMP NOT NULL
)"""

# The batch headers of the sources that have one (the clearing operator's).
BATCH_HEADERS_TABLE = "raw.clearing_batches"
BATCH_HEADERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {BATCH_HEADERS_TABLE} (
    batch_id VARCHAR NOT NULL,
    line_count BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    cleared_at TIMESTAMP,
    _file_sha256 VARCHAR NOT NULL,
    _loaded_at TIMESTAMP NOT NULL
)"""


def table_columns(contract: Contract) -> list[tuple[str, str]]:
    """(name, SQL type) of a contract's raw table, in order."""
    cols = [(f.name, SQL_TYPES[f.dtype]) for f in contract.fields]
    if contract.event_time is not None:
        if contract.clock_skew_threshold_s is not None:
            cols += [("clock_skew_s", "DOUBLE"), ("is_clock_skewed", "BOOLEAN")]
        cols += [("event_ts", "TIMESTAMP"), ("event_date", "DATE"), ("_line", "BIGINT")]
    return cols + [("_file_sha256", "VARCHAR"), ("_loaded_at", "TIMESTAMP")]


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create `raw` and every table a contract needs; idempotent."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    contracts = EVENT_CONTRACTS + REFERENCE_CONTRACTS
    for contract in contracts:
        cols = ", ".join(f"{name} {sql}" for name, sql in table_columns(contract))
        con.execute(f"CREATE TABLE IF NOT EXISTS {contract.table} ({cols})")
    # A field added to a contract (hubs got their address and coordinates) reaches a
    # warehouse made before it; its old rows read NULL there until the next snapshot.
    # (The columns are read off the table the name resolves to, as the inserts resolve it,
    # whichever catalog holds it: the file or DuckLake.)
    for contract in contracts:
        have = {d[0] for d in con.execute(f"SELECT * FROM {contract.table} LIMIT 0").description}
        for name, sql in table_columns(contract):
            if name not in have:
                try:
                    con.execute(f"ALTER TABLE {contract.table} ADD COLUMN {name} {sql}")
                except duckdb.CatalogException:
                    # Not a table (a view squatting the name): left alone here, so the one
                    # step that loads this source fails on its insert, by name, not every step.
                    break
    con.execute(BATCH_HEADERS_DDL)
    create_manifest(con)
    con.execute(QUARANTINE_DDL)


def known_devices(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The device registry as loaded: what event rows' device ids are checked against."""
    return {r[0] for r in con.execute(f"SELECT device_id FROM {DEVICES.table}").fetchall()}


def known_keys(con: duckdb.DuckDBPyConnection) -> KnownKeys:
    """Every reference key event rows are checked against (DESIGN.md: a key unknown to the
    reference data is quarantined at ingest, not found by a dbt test every night after)."""

    def column(table: str, col: str) -> frozenset[str]:
        return frozenset(r[0] for r in con.execute(f"SELECT DISTINCT {col} FROM {table}").fetchall())

    return KnownKeys(devices=frozenset(known_devices(con)), hubs=column(HUBS.table, "hub_id"), categories=column(CATEGORIES.table, "category"))


def _existing(con: duckdb.DuckDBPyConnection, contract: Contract, keys: pl.DataFrame) -> pl.Series | None:
    """Which incoming keys the table already holds (a boolean per row), or None when none.

    Only the incoming keys are probed, against the table rows in the key range of the batch
    (`k BETWEEN min AND max` per key column): DuckDB's zone maps skip the row groups outside
    it, so the cost follows the batch, not the table (keys here grow with time: seq,
    S<date>-…, TX-<date>-…, a batch id per file). The table rows of the open transaction
    (earlier chunks of a big file) are seen too.
    """
    key = keys.columns
    bounds = keys.select([pl.col(k).min().alias(f"{k}_lo") for k in key] + [pl.col(k).max().alias(f"{k}_hi") for k in key]).row(0, named=True)
    where = " AND ".join(f"{k} BETWEEN ? AND ?" for k in key)
    params = [v for k in key for v in (bounds[f"{k}_lo"], bounds[f"{k}_hi"])]
    cols = ", ".join(key)
    incoming_keys = keys.with_row_index("__i").to_arrow()  # noqa: F841 (read by name in the SQL: DuckDB replacement scan)
    hits = con.execute(
        f"SELECT __i FROM incoming_keys SEMI JOIN (SELECT {cols} FROM {contract.table} WHERE {where}) t USING ({cols})",
        params,
    ).pl()
    if not hits.height:
        return None
    return pl.int_range(keys.height, dtype=pl.UInt32, eager=True).is_in(hits["__i"])


def insert_new_rows(
    con: duckdb.DuckDBPyConnection, contract: Contract, rows: pl.DataFrame, loaded_at: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Insert the rows whose natural key is new; returns (`__f`, event_date) of each inserted
    row, and the rows that repeat a known key with other values (`__f`, line, field, reason,
    raw_text; `CONFLICT_SCHEMA`): the caller quarantines those, the others are duplicates.

    `rows` come in file order then line order, with `__f` (the file's place in its
    transaction) and `_file_sha256`: the first line with a key wins, within a file and
    across the files of a transaction. The insert itself joins nothing.
    """
    key = list(contract.natural_key)
    first = rows.select(pl.struct(key).is_first_distinct()).to_series()
    incoming = rows if first.all() else rows.filter(first)
    seen = _existing(con, contract, incoming.select(key))
    new_rows = incoming if seen is None else incoming.filter(~seen)
    conflicts = []
    if not first.all():  # a key repeated within the batch: the first line wins
        conflicts.append(_changed(contract, rows.filter(~first), incoming))
    if seen is not None:  # a key already in the table: the row loaded first wins
        conflicts.append(_changed(contract, incoming.filter(seen), _loaded_rows(con, contract, incoming.filter(seen).select(key))))
    changed = pl.concat(conflicts) if conflicts else pl.DataFrame(schema=CONFLICT_SCHEMA)
    if new_rows.height:
        cols = [name for name, _ in table_columns(contract) if name != "_loaded_at"]
        arrow_rows = new_rows.select(cols).to_arrow()  # noqa: F841 — read by name below
        con.execute(
            f"INSERT INTO {contract.table} ({', '.join(cols)}, _loaded_at) SELECT *, ? FROM arrow_rows",
            [loaded_at],
        )
    return new_rows.select("__f", "event_date"), changed


CONFLICT_SCHEMA = {"__f": pl.Int32, "line": pl.Int64, "field": pl.String, "reason": pl.String, "raw_text": pl.String}


def _loaded_rows(con: duckdb.DuckDBPyConnection, contract: Contract, keys: pl.DataFrame) -> pl.DataFrame:
    cols = ", ".join(contract.field_names)
    probe = keys.unique().to_arrow()  # noqa: F841 (read by name in the SQL)
    return con.execute(f"SELECT {cols} FROM {contract.table} SEMI JOIN probe USING ({', '.join(contract.natural_key)})").pl()


def _changed(contract: Contract, repeats: pl.DataFrame, kept: pl.DataFrame) -> pl.DataFrame:
    """The repeats whose fields differ from the row kept under their key, with the first field that does."""
    key = list(contract.natural_key)
    fields = [f for f in contract.field_names if f not in key]
    joined = repeats.join(kept.select(key + fields).cast({f: repeats.schema[f] for f in fields}), on=key, how="inner", suffix="__kept")
    differs = [~pl.col(f).eq_missing(pl.col(f"{f}__kept")) for f in fields]
    joined = joined.filter(pl.any_horizontal(differs)) if fields else joined.clear()
    if not joined.height:
        return pl.DataFrame(schema=CONFLICT_SCHEMA)
    which = pl.when(differs[0]).then(pl.lit(fields[0]))
    for f, d in zip(fields[1:], differs[1:]):
        which = which.when(d).then(pl.lit(f))
    reason = pl.lit(None, dtype=pl.String)
    for f in reversed(fields):
        reason = pl.when(which == f).then(
            pl.concat_str(pl.lit(f"changed value under an existing natural key ({', '.join(key)}): {f} was "),
                          pl.col(f"{f}__kept").cast(pl.String).fill_null("empty"), pl.lit(", now "),
                          pl.col(f).cast(pl.String).fill_null("empty"), pl.lit("; the row loaded first is kept"))
        ).otherwise(reason)
    return joined.select(
        pl.col("__f").cast(pl.Int32), pl.col("_line").alias("line"), which.alias("field"), reason.alias("reason"),
        pl.struct([pl.col(f).cast(pl.String) for f in contract.field_names]).struct.json_encode().alias("raw_text"),
    )


def replace_reference(
    con: duckdb.DuckDBPyConnection, contract: Contract, good: pl.DataFrame, sha: str, loaded_at: datetime, first_chunk: bool
) -> int:
    """A reference file is a full snapshot: it replaces the table (its first chunk empties it)."""
    if first_chunk:
        con.execute(f"DELETE FROM {contract.table}")
    if not good.height:
        return 0
    cols = [name for name, _ in table_columns(contract)]
    snapshot = good.with_columns(pl.lit(sha).alias("_file_sha256"), pl.lit(loaded_at).alias("_loaded_at")).select(cols).to_arrow()  # noqa: F841
    con.execute(f"INSERT INTO {contract.table} BY NAME SELECT * FROM snapshot")
    return good.height


def tagged_good(good: pl.DataFrame, n: int, sha: str) -> pl.DataFrame:
    """Good rows with their file's place in the transaction (`__f`) and checksum."""
    return good.with_columns(pl.lit(n, dtype=pl.Int32).alias("__f"), pl.lit(sha).alias("_file_sha256"))


def tagged_bad(bad: pl.DataFrame, rel: str, sha: str) -> pl.DataFrame:
    """Bad rows with the file they came from."""
    return bad.with_columns(pl.lit(rel).alias("file_path"), pl.lit(sha).alias("file_sha256"))


def quarantine(con: duckdb.DuckDBPyConnection, contract: Contract, bad: pl.DataFrame, at: datetime) -> None:
    """Bad rows (line, field, reason, raw_text, file_path, file_sha256) into raw._quarantine."""
    if not bad.height:
        return
    bad_rows = bad.select("file_path", "file_sha256", "line", "field", "reason", "raw_text").to_arrow()  # noqa: F841
    con.execute(
        "INSERT INTO raw._quarantine (file_path, file_sha256, line, field, reason, raw_text, contract, quarantined_at) "
        "SELECT *, ?, ? FROM bad_rows",
        [contract.name, at],
    )


def record_batch_header(con: duckdb.DuckDBPyConnection, header: dict, sha: str, loaded_at: datetime) -> None:
    con.execute(
        f"INSERT INTO {BATCH_HEADERS_TABLE} VALUES (?, ?, ?, ?::TIMESTAMPTZ AT TIME ZONE 'UTC', ?, ?)",
        [header["batch_id"], int(header["line_count"]), int(header["total_cents"]), header["cleared_at"], sha, loaded_at],
    )
