"""Load the landing zone into `raw.*`: every file once, every bad row kept.

Effectively-once (DESIGN.md): a file is identified by its SHA-256; one file = one DuckDB
transaction holding its rows, its quarantined rows and its manifest row, so a crash leaves
nothing behind and the re-run loads the file whole. Rows are de-duplicated on the
contract's natural key across files and runs, and the duplicates are counted.

The caller owns the connection (the single writer); this module never opens the warehouse.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from ingest.contracts import EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract, landing_dir_for
from ingest.validate import FileRefused, ParseResult, check_clearing_batch, validate_chunks

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
    duration_ms DOUBLE,
    extra_keys VARCHAR[]              -- JSON keys outside the contract (ignored, not loaded)
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
    extra_keys: list[str] = field(default_factory=list)  # JSON keys outside the contract: ignored, recorded


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
    con.execute("ALTER TABLE raw._load_manifest ADD COLUMN IF NOT EXISTS extra_keys VARCHAR[]")
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


MANIFEST_COLUMNS = (
    "file_path", "file_name", "file_sha256", "contract", "source", "version", "status", "reason",
    "size_bytes", "mtime_ns", "rows_in_file", "rows_loaded", "rows_duplicate", "rows_quarantined",
    "affected_dates", "started_at", "finished_at", "duration_ms", "extra_keys",
)


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
        f"INSERT INTO raw._load_manifest ({', '.join(MANIFEST_COLUMNS)}) VALUES ({', '.join('?' * len(MANIFEST_COLUMNS))})",
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
            outcome.extra_keys or None,
        ],
    )


def _insert_rows(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    good: pl.DataFrame,
    sha: str,
    loaded_at: datetime,
    first_chunk: bool = True,
) -> tuple[int, set[date]]:
    """Insert the rows of one chunk whose natural key is new; returns (inserted, affected event dates).

    Inside a file, the first line with a key wins. Against the table, the anti-join reads only
    the key range of the chunk (`k BETWEEN min AND max` per key column): always correct, and
    DuckDB's zone maps skip the row groups outside it, so the cost follows the chunk, not the
    table (keys here grow with time: seq, S<date>-…, TX-<date>-…, a batch id per file).
    """
    if good.height == 0:
        if contract.reference and first_chunk:
            con.execute(f"DELETE FROM {contract.table}")
        return 0, set()
    cols = [name for name, _ in table_columns(contract)]
    incoming = good.with_columns(pl.lit(sha).alias("_file_sha256"), pl.lit(loaded_at).alias("_loaded_at")).select(cols)
    if contract.reference:
        # A reference file is a full snapshot: it replaces the table.
        con.register("incoming", incoming)
        try:
            if first_chunk:
                con.execute(f"DELETE FROM {contract.table}")
            con.execute(f"INSERT INTO {contract.table} BY NAME SELECT * FROM incoming")
        finally:
            con.unregister("incoming")
        return incoming.height, set()
    key = list(contract.natural_key)
    incoming = incoming.unique(subset=key, keep="first", maintain_order=True)  # rows come in line order
    bounds = incoming.select([pl.col(k).min().alias(f"{k}_lo") for k in key] + [pl.col(k).max().alias(f"{k}_hi") for k in key]).row(0, named=True)
    where = " AND ".join(f"{k} BETWEEN ? AND ?" for k in key)
    params = [v for k in key for v in (bounds[f"{k}_lo"], bounds[f"{k}_hi"])]
    cols_sql = ", ".join(key)
    con.register("incoming", incoming)
    try:
        (inserted,) = con.execute(
            f"""
            INSERT INTO {contract.table} BY NAME
            SELECT i.* FROM incoming i
            ANTI JOIN (SELECT {cols_sql} FROM {contract.table} WHERE {where}) t USING ({cols_sql})
            """,
            params,
        ).fetchone()
    finally:
        con.unregister("incoming")
    if inserted == incoming.height:
        dates = set(incoming["event_date"].unique().to_list())
    elif inserted == 0:
        dates = set()
    else:  # some keys were already there: the dates of the rows this chunk actually added
        dates = {
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT event_date FROM {contract.table} WHERE {where} AND _file_sha256 = ? AND _loaded_at = ?",
                params + [sha, loaded_at],
            ).fetchall()
        }
    return int(inserted), dates


def _quarantine(con: duckdb.DuckDBPyConnection, bad: pl.DataFrame, rel: str, sha: str, contract: Contract, at: datetime) -> None:
    if not bad.height:
        return
    rows = bad.with_columns(
        pl.lit(rel).alias("file_path"),
        pl.lit(sha).alias("file_sha256"),
        pl.lit(contract.name).alias("contract"),
        pl.lit(at).alias("quarantined_at"),
    )
    con.register("bad_rows", rows)
    try:
        con.execute("INSERT INTO raw._quarantine BY NAME SELECT * FROM bad_rows")
    finally:
        con.unregister("bad_rows")


FAULT_ENV = "CIVICFLOW_INGEST_FAULT"


def _fault_point(name: str) -> None:
    """Fault injection for the crash tests: `CIVICFLOW_INGEST_FAULT=<point>:<marker file>`.

    At that point (inside the file's open transaction) the process writes the marker file
    and waits to be killed. Unset in production; costs one environment lookup per chunk.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec or not spec.startswith(name + ":"):
        return
    marker = Path(spec.split(":", 1)[1])
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def load_file(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    path: Path,
    landing: Path,
    sha: str,
    version: int,
    already_loaded: bool,
    previous_refusal: str | None = None,
    known_devices: set[str] | None = None,
    parts: Iterator[ParseResult] | None = None,
) -> FileOutcome:
    """Load one file in one transaction (rows + quarantine + manifest), or refuse it whole.

    The file is read in chunks (bounded memory) but stays one transaction: every chunk's
    rows and bad rows are written inside it, and a file refused at the end (reject ratio,
    truncated, a clearing batch that does not add up) is rolled back whole and recorded.
    """
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
    loaded_at = _now()
    try:
        needs_devices = "device_id" in contract.field_names and not contract.reference
        known = (known_devices if known_devices is not None else _known_devices(con)) if needs_devices else None
        if needs_devices and not known:
            raise FileRefused(f"{path.name}: no device reference loaded yet, cannot check device ids")
        con.execute("BEGIN TRANSACTION")
        try:
            lines = bad_count = good_count = inserted = 0
            valid_total = 0
            first_bad: dict | None = None
            header: dict = {}
            dates: set[date] = set()
            extra: dict[str, int] = {}
            for n, part in enumerate(parts if parts is not None else validate_chunks(contract, path, known)):
                header = header or part.header
                lines += part.lines
                if part.bad.height:
                    first_bad = first_bad or part.bad.row(0, named=True)
                    bad_count += part.bad.height
                    _quarantine(con, part.bad, rel, sha, contract, loaded_at)
                if part.good.height:
                    good_count += part.good.height
                    if contract.name == "clearing":
                        valid_total += int(part.good["amount_cents"].sum() or 0)
                for k, v in part.extra_keys.items():
                    extra[k] = extra.get(k, 0) + v
                added, chunk_dates = _insert_rows(con, contract, part.good, sha, loaded_at, first_chunk=n == 0)
                inserted += added
                dates |= chunk_dates
                _fault_point("in_transaction")
            outcome.rows_in_file = lines
            if contract.name == "clearing":
                check_clearing_batch(header, lines, valid_total, bad_count, path)
            ratio = bad_count / lines if lines else 0.0
            if ratio > contract.max_reject_ratio:
                raise FileRefused(
                    f"{path.name}: {bad_count} of {lines} rows rejected "
                    f"({ratio:.1%} > the {contract.name} contract's {contract.max_reject_ratio:.0%}); "
                    f"first: line {first_bad['line']}, field {first_bad['field']}: {first_bad['reason']}"
                )
            outcome.loaded, outcome.affected_dates = inserted, sorted(dates)
            outcome.duplicate = good_count - inserted if not contract.reference else 0
            outcome.quarantined = bad_count
            outcome.extra_keys = sorted(extra)
            if contract.name == "clearing":
                con.execute(
                    "INSERT INTO raw.clearing_batches VALUES (?, ?, ?, ?::TIMESTAMPTZ AT TIME ZONE 'UTC', ?, ?)",
                    [header["batch_id"], int(header["line_count"]), int(header["total_cents"]), header["cleared_at"], sha, loaded_at],
                )
            _record(con, outcome, contract, path, version, started, t0)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except FileRefused as exc:
        # Nothing of the file was committed: only its size (when it was read) stays on record.
        outcome.status, outcome.reason = "refused", str(exc)
        outcome.loaded = outcome.duplicate = outcome.quarantined = 0
        outcome.affected_dates, outcome.extra_keys = [], []
        if outcome.reason == previous_refusal:
            return outcome  # refused again for the same reason: already on record
        con.execute("BEGIN TRANSACTION")
        _record(con, outcome, contract, path, version, started, t0)
        con.execute("COMMIT")
        return outcome
    return outcome


class _Prepared:
    """A file hashed and its first chunk parsed ahead, on a worker thread (see `load_landing`)."""

    def __init__(self, contract: Contract, path: Path, known: set[str] | None):
        self.sha = sha256_of(path)
        self._rest = validate_chunks(contract, path, known)
        self._first: list[ParseResult] = []
        self._error: BaseException | None = None
        try:
            self._first = [next(self._rest)]
        except StopIteration:
            pass
        except Exception as exc:  # FileRefused (or a bug): raised again where the file is loaded
            self._error = exc

    def parts(self) -> Iterator[ParseResult]:
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._rest


PREFETCH = 2  # files parsed ahead while the previous one is written: bounded memory (a chunk each)


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    contracts: Iterable[Contract] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    delivery_dates: set[date] | None = None,
) -> list[FileOutcome]:
    """Load every new file of the given contracts (reference data first: devices are checked against it).

    With `delivery_dates`, only event files delivered on those days (see `discover`).

    Event files are hashed and parsed one or two files ahead on a worker thread while the
    main thread writes the previous file's transaction (polars and DuckDB release the GIL),
    so parsing and writing overlap. Parsing is pure; every decision (skip, duplicate file,
    refuse, load) is still taken here, in file order, against the manifest.
    """
    ensure_raw_schema(con)
    chosen = list(contracts) if contracts is not None else list(REFERENCE_CONTRACTS + EVENT_CONTRACTS)
    chosen.sort(key=lambda c: (not c.reference,))
    state = manifest_state(con)
    outcomes: list[FileOutcome] = []
    devices: set[str] | None = None  # read once per run, again after a devices snapshot loads

    def unchanged(rel: str, path: Path) -> bool:
        prev = state.last.get(rel)
        stat = path.stat()
        # Unchanged since it was handled (same size and mtime): no need to hash it again.
        # Refused files are retried: the reference data they failed on may have arrived since.
        return bool(prev and prev[3] != "refused" and prev[0] == stat.st_size and prev[1] == stat.st_mtime_ns)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parse") as pool:
        for contract in chosen:
            files = discover(landing, contract, delivery_dates)
            if devices is None and not contract.reference and "device_id" in contract.field_names:
                devices = _known_devices(con)
            known = devices if (not contract.reference and "device_id" in contract.field_names) else None
            # Reference snapshots are few and change the device list: no read-ahead for them.
            ahead = PREFETCH if not contract.reference else 0
            todo = [p for p in files if not unchanged(str(p.relative_to(landing)), p)]
            futures: dict[Path, Future] = {}
            queue = list(todo)

            def refill() -> None:
                while queue and len(futures) < ahead:
                    nxt = queue.pop(0)
                    futures[nxt] = pool.submit(_Prepared, contract, nxt, known)

            for path in files:
                rel = str(path.relative_to(landing))
                prev = state.last.get(rel)
                refused_before = prev is not None and prev[3] == "refused"
                if unchanged(rel, path):
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=prev[2], status="skipped"))
                    continue
                refill()
                prepared = futures.pop(path).result() if path in futures else None
                if prepared is None and path in queue:
                    queue.remove(path)
                refill()
                sha = prepared.sha if prepared is not None else sha256_of(path)
                if prev and not refused_before and prev[2] == sha:
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=sha, status="skipped"))
                    continue
                version = len(state.versions.get(rel, set()) | {sha})
                outcome = load_file(
                    con, contract, path, landing, sha, version,
                    already_loaded=sha in state.loaded_shas,
                    previous_refusal=prev[4] if refused_before and prev[2] == sha else None,
                    known_devices=known,
                    parts=prepared.parts() if prepared is not None else None,
                )
                if contract.name == "devices" and outcome.status == "loaded":
                    devices = None
                state.note(outcome, path)
                outcomes.append(outcome)
                if on_file:
                    on_file(outcome)
    return outcomes


def summarise(outcomes: list[FileOutcome]) -> pl.DataFrame:
    """Per contract: files by status and rows loaded / duplicate / quarantined."""
    if not outcomes:
        return pl.DataFrame(schema={"contract": pl.String})
    df = pl.DataFrame([o.__dict__ for o in outcomes]).drop("affected_dates", "extra_keys")
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
