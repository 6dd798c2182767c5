"""Load the landing zone into `raw.*`: every file once, every bad row kept.

Effectively-once (DESIGN.md): a file is identified by its SHA-256; one file = one DuckDB
transaction holding its rows, its quarantined rows and its manifest row, so a crash leaves
nothing behind and the re-run loads the file whole. Rows are de-duplicated on the
contract's natural key across files and runs, and the duplicates are counted.

The caller owns the connection (the single writer); this module never opens the warehouse.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from ingest.contracts import EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract, landing_dir_for
from ingest.validate import FileRefused, ParseResult, check_clearing_totals, validate_file

SQL_TYPES = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMP", "date": "DATE"}

MANIFEST_DDL = """
CREATE TABLE IF NOT EXISTS raw._load_manifest (
    file_path VARCHAR NOT NULL,       -- relative to the landing zone
    file_name VARCHAR NOT NULL,
    file_sha256 VARCHAR NOT NULL,
    contract VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    version INTEGER NOT NULL,         -- n-th distinct content seen at this path
    status VARCHAR NOT NULL,          -- loaded | duplicate_file | refused
    reason VARCHAR,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    rows_in_file BIGINT,
    rows_loaded BIGINT,
    rows_duplicate BIGINT,
    rows_quarantined BIGINT,
    affected_dates DATE[],
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    duration_ms DOUBLE
)"""

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

CLEARING_BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS raw.clearing_batches (
    batch_id VARCHAR NOT NULL,
    line_count BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    cleared_at TIMESTAMP,
    _file_sha256 VARCHAR NOT NULL,
    _loaded_at TIMESTAMP NOT NULL
)"""


@dataclass
class FileOutcome:
    path: str
    contract: str
    sha256: str
    status: str  # loaded | duplicate_file | refused | skipped (already handled in an earlier run)
    rows_in_file: int = 0
    loaded: int = 0
    duplicate: int = 0
    quarantined: int = 0
    reason: str | None = None
    affected_dates: list[date] = field(default_factory=list)


def table_columns(contract: Contract) -> list[tuple[str, str]]:
    cols = [(f.name, SQL_TYPES[f.dtype]) for f in contract.fields]
    if contract.event_time is not None:
        if contract.name == "telemetry":
            cols += [("clock_skew_s", "DOUBLE"), ("is_clock_skewed", "BOOLEAN")]
        cols += [("event_ts", "TIMESTAMP"), ("event_date", "DATE"), ("_line", "BIGINT")]
    return cols + [("_file_sha256", "VARCHAR"), ("_loaded_at", "TIMESTAMP")]


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create `raw` and every table a contract needs; idempotent."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for contract in EVENT_CONTRACTS + REFERENCE_CONTRACTS:
        cols = ", ".join(f"{name} {sql}" for name, sql in table_columns(contract))
        con.execute(f"CREATE TABLE IF NOT EXISTS {contract.table} ({cols})")
    con.execute(CLEARING_BATCHES_DDL)
    con.execute(MANIFEST_DDL)
    con.execute(QUARANTINE_DDL)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def delivery_date(path: Path) -> date | None:
    """The delivery day of an event file: the name of its folder, `<contract>/<YYYY-MM-DD>/`."""
    try:
        return date.fromisoformat(path.parent.name)
    except ValueError:
        return None


def discover(landing: Path, contract: Contract, delivery_dates: set[date] | None = None) -> list[Path]:
    """Files waiting for a contract, oldest delivery first (folder names are delivery dates).

    `delivery_dates` restricts event files to those delivered on these days (one partition or
    a range); reference snapshots have no delivery day and are always looked at.
    """
    root = landing / landing_dir_for(contract)
    if not root.exists():
        return []
    files = sorted(p for p in root.rglob(contract.filename_glob) if p.is_file() and not p.name.startswith("."))
    if delivery_dates is None or contract.reference:
        return files
    return [p for p in files if delivery_date(p) in delivery_dates]


def _known_devices(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT device_id FROM raw.devices").fetchall()}


@dataclass
class ManifestState:
    """What the manifest already knows, read once per run and kept current as files are handled."""

    last: dict[str, tuple[int, int, str, str, str | None]]  # path -> (size, mtime, sha, status, reason)
    loaded_shas: set[str]
    versions: dict[str, set[str]]

    def note(self, outcome: FileOutcome, path: Path) -> None:
        stat = path.stat()
        self.last[outcome.path] = (stat.st_size, stat.st_mtime_ns, outcome.sha256, outcome.status, outcome.reason)
        self.versions.setdefault(outcome.path, set()).add(outcome.sha256)
        if outcome.status == "loaded":
            self.loaded_shas.add(outcome.sha256)


def manifest_state(con: duckdb.DuckDBPyConnection) -> ManifestState:
    rows = con.execute(
        "SELECT file_path, size_bytes, mtime_ns, file_sha256, status, reason FROM raw._load_manifest ORDER BY started_at"
    ).fetchall()
    state = ManifestState(last={}, loaded_shas=set(), versions={})
    for path, size, mtime, sha, status, reason in rows:
        state.last[path] = (size, mtime, sha, status, reason)
        state.versions.setdefault(path, set()).add(sha)
        if status == "loaded":
            state.loaded_shas.add(sha)
    return state


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _record(
    con: duckdb.DuckDBPyConnection,
    outcome: FileOutcome,
    contract: Contract,
    path: Path,
    version: int,
    started: datetime,
    t0: float,
) -> None:
    stat = path.stat()
    con.execute(
        "INSERT INTO raw._load_manifest VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            outcome.path,
            path.name,
            outcome.sha256,
            contract.name,
            contract.source,
            version,
            outcome.status,
            outcome.reason,
            stat.st_size,
            stat.st_mtime_ns,
            outcome.rows_in_file,
            outcome.loaded,
            outcome.duplicate,
            outcome.quarantined,
            outcome.affected_dates,
            started,
            _now(),
            (time.perf_counter() - t0) * 1000,
        ],
    )


def _insert_rows(con: duckdb.DuckDBPyConnection, contract: Contract, parsed: ParseResult, sha: str, loaded_at: datetime) -> tuple[int, list[date]]:
    """Insert the rows whose natural key is new; returns (inserted, affected event dates)."""
    cols = [name for name, _ in table_columns(contract)]
    incoming = parsed.good.with_columns(pl.lit(sha).alias("_file_sha256"), pl.lit(loaded_at).alias("_loaded_at")).select(cols)
    con.register("incoming", incoming)
    try:
        if contract.reference:
            # A reference file is a full snapshot: it replaces the table.
            con.execute(f"DELETE FROM {contract.table}")
            con.execute(f"INSERT INTO {contract.table} BY NAME SELECT * FROM incoming")
            return incoming.height, []
        key = ", ".join(contract.natural_key)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE to_insert AS
            SELECT i.* FROM (
                SELECT * FROM incoming QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _line) = 1
            ) i ANTI JOIN {contract.table} t USING ({key})
            """
        )
        inserted = con.execute("SELECT count(*) FROM to_insert").fetchone()[0]
        con.execute(f"INSERT INTO {contract.table} BY NAME SELECT * FROM to_insert")
        dates = [r[0] for r in con.execute("SELECT DISTINCT event_date FROM to_insert ORDER BY 1").fetchall()]
        con.execute("DROP TABLE to_insert")
        return inserted, dates
    finally:
        con.unregister("incoming")


def load_file(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    path: Path,
    landing: Path,
    sha: str,
    version: int,
    already_loaded: bool,
    previous_refusal: str | None = None,
) -> FileOutcome:
    """Load one file in one transaction (rows + quarantine + manifest), or refuse it whole."""
    t0, started = time.perf_counter(), _now()
    rel = str(path.relative_to(landing))
    outcome = FileOutcome(path=rel, contract=contract.name, sha256=sha, status="loaded")
    if already_loaded:
        # Same content under another name (or the same name again): a recorded no-op.
        outcome.status, outcome.reason = "duplicate_file", "same SHA-256 as a file already loaded"
        con.execute("BEGIN TRANSACTION")
        _record(con, outcome, contract, path, version, started, t0)
        con.execute("COMMIT")
        return outcome
    try:
        needs_devices = "device_id" in contract.field_names and not contract.reference
        known = _known_devices(con) if needs_devices else None
        if needs_devices and not known:
            raise FileRefused(f"{path.name}: no device reference loaded yet, cannot check device ids")
        parsed = validate_file(contract, path, known)
        if contract.name == "clearing":
            check_clearing_totals(parsed, path)
        outcome.rows_in_file = parsed.lines
        if parsed.reject_ratio > contract.max_reject_ratio:
            first = parsed.bad.row(0, named=True)
            raise FileRefused(
                f"{path.name}: {parsed.bad.height} of {parsed.lines} rows rejected "
                f"({parsed.reject_ratio:.1%} > the {contract.name} contract's {contract.max_reject_ratio:.0%}); "
                f"first: line {first['line']}, field {first['field']}: {first['reason']}"
            )
    except FileRefused as exc:
        outcome.status, outcome.reason = "refused", str(exc)
        if outcome.reason == previous_refusal:
            return outcome  # refused again for the same reason: already on record
        con.execute("BEGIN TRANSACTION")
        _record(con, outcome, contract, path, version, started, t0)
        con.execute("COMMIT")
        return outcome

    loaded_at = _now()
    con.execute("BEGIN TRANSACTION")
    try:
        inserted, dates = _insert_rows(con, contract, parsed, sha, loaded_at)
        outcome.loaded, outcome.affected_dates = inserted, dates
        outcome.duplicate = parsed.good.height - inserted if not contract.reference else 0
        outcome.quarantined = parsed.bad.height
        if parsed.bad.height:
            bad = parsed.bad.with_columns(
                pl.lit(rel).alias("file_path"),
                pl.lit(sha).alias("file_sha256"),
                pl.lit(contract.name).alias("contract"),
                pl.lit(loaded_at).alias("quarantined_at"),
            )
            con.register("bad_rows", bad)
            con.execute("INSERT INTO raw._quarantine BY NAME SELECT * FROM bad_rows")
            con.unregister("bad_rows")
        if contract.name == "clearing":
            h = parsed.header
            con.execute(
                "INSERT INTO raw.clearing_batches VALUES (?, ?, ?, ?::TIMESTAMPTZ AT TIME ZONE 'UTC', ?, ?)",
                [h["batch_id"], int(h["line_count"]), int(h["total_cents"]), h["cleared_at"], sha, loaded_at],
            )
        _record(con, outcome, contract, path, version, started, t0)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return outcome


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    contracts: Iterable[Contract] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    delivery_dates: set[date] | None = None,
) -> list[FileOutcome]:
    """Load every new file of the given contracts (reference data first: devices are checked against it).

    With `delivery_dates`, only event files delivered on those days (see `discover`).
    """
    ensure_raw_schema(con)
    chosen = list(contracts) if contracts is not None else list(REFERENCE_CONTRACTS + EVENT_CONTRACTS)
    chosen.sort(key=lambda c: (not c.reference,))
    state = manifest_state(con)
    outcomes: list[FileOutcome] = []
    for contract in chosen:
        for path in discover(landing, contract, delivery_dates):
            rel = str(path.relative_to(landing))
            stat = path.stat()
            prev = state.last.get(rel)
            refused_before = prev is not None and prev[3] == "refused"
            # Unchanged since it was handled (same size and mtime): no need to hash it again.
            # Refused files are retried: the reference data they failed on may have arrived since.
            if prev and not refused_before and prev[0] == stat.st_size and prev[1] == stat.st_mtime_ns:
                outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=prev[2], status="skipped"))
                continue
            sha = sha256_of(path)
            if prev and not refused_before and prev[2] == sha:
                outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=sha, status="skipped"))
                continue
            version = len(state.versions.get(rel, set()) | {sha})
            outcome = load_file(
                con, contract, path, landing, sha, version,
                already_loaded=sha in state.loaded_shas,
                previous_refusal=prev[4] if refused_before and prev[2] == sha else None,
            )
            state.note(outcome, path)
            outcomes.append(outcome)
            if on_file:
                on_file(outcome)
    return outcomes


def summarise(outcomes: list[FileOutcome]) -> pl.DataFrame:
    """Per contract: files by status and rows loaded / duplicate / quarantined."""
    if not outcomes:
        return pl.DataFrame(schema={"contract": pl.String})
    df = pl.DataFrame([o.__dict__ for o in outcomes]).drop("affected_dates")
    return (
        df.group_by("contract")
        .agg(
            files_loaded=(pl.col("status") == "loaded").sum(),
            files_refused=(pl.col("status") == "refused").sum(),
            files_duplicate=(pl.col("status") == "duplicate_file").sum(),
            files_skipped=(pl.col("status") == "skipped").sum(),
            rows_loaded=pl.col("loaded").sum(),
            rows_duplicate=pl.col("duplicate").sum(),
            rows_quarantined=pl.col("quarantined").sum(),
        )
        .sort("contract")
    )
