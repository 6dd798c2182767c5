"""Load the landing zone into `raw.*`: every file once, every bad row kept.

Effectively-once (DESIGN.md): a file is identified by its SHA-256; its rows, its quarantined
rows and its manifest row are written in one DuckDB transaction, so a crash leaves nothing
of it behind and the re-run loads the file whole. Small files of one source share a
transaction (a batch, `BATCH_BYTES`), each with its own manifest row and checksum; a file
bigger than a chunk, or a reference snapshot, has a transaction of its own. Rows are
de-duplicated on the contract's natural key across files and runs, and the duplicates are
counted.

Speed and memory (issue 4, item 8; `bench/bench_ingest.py`): files are read once (checksum
and rows from the same bytes), parsed ahead on worker threads, small files validated
several at a time; a batch is de-duplicated in polars and inserted in one statement after
one key probe of the table; frames reach DuckDB as Arrow without `register` (see below).

The caller owns the connection (the single writer); this module never opens the warehouse.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl

from ingest import validate
from ingest.contracts import EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract, landing_dir_for
from ingest.validate import FileRefused, ParseResult, check_clearing_batch, validate_chunks, validate_files

T = TypeVar("T")

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


class LoadError(RuntimeError):
    """Writing a file's rows failed in the warehouse (not the file's fault): names table and file."""


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


MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "file_path": pl.String(), "file_name": pl.String(), "file_sha256": pl.String(), "contract": pl.String(),
    "source": pl.String(), "version": pl.Int32(), "status": pl.String(), "reason": pl.String(),
    "size_bytes": pl.Int64(), "mtime_ns": pl.Int64(), "rows_in_file": pl.Int64(), "rows_loaded": pl.Int64(),
    "rows_duplicate": pl.Int64(), "rows_quarantined": pl.Int64(), "affected_dates": pl.List(pl.Date()),
    "started_at": pl.Datetime("us"), "finished_at": pl.Datetime("us"), "duration_ms": pl.Float64(),
    "extra_keys": pl.List(pl.String()),
}
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA)

# Files of one source committed together (input bytes). One manifest row and one checksum per
# file still; a crash loses the whole batch and the re-run loads each of its files whole. A
# transaction per 2 MB file cost a WAL write and fsync each, and kept every insert below
# DuckDB's row group (122,880 rows), so rows went through the WAL and again through the
# checkpoint; a batch of ~300,000 rows is written once, straight to the database file.
BATCH_BYTES = int(os.environ.get("CIVICFLOW_INGEST_BATCH_BYTES", str(64 << 20)))
# Threads parsing the next files while the main thread writes. With one, the writer waited
# for the parser a third of the run (a group's parse is partly Python holding the GIL).
PARSE_WORKERS = 2


@dataclass
class _Tally:
    """One file's counts over its chunks, and the checks that refuse it whole."""

    lines: int = 0
    good: int = 0
    bad: int = 0
    valid_total: int = 0  # clearing: cents in the valid lines
    first_bad: dict | None = None
    header: dict = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, part: ParseResult, contract: Contract) -> None:
        self.header = self.header or part.header
        self.lines += part.lines
        if part.bad.height:
            self.first_bad = self.first_bad or part.bad.row(0, named=True)
            self.bad += part.bad.height
        if part.good.height:
            self.good += part.good.height
            if contract.name == "clearing":
                self.valid_total += int(part.good["amount_cents"].sum() or 0)
        for k, v in part.extra_keys.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def check(self, contract: Contract, path: Path) -> None:
        """Raise FileRefused when the file as a whole fails its contract."""
        if contract.name == "clearing":
            check_clearing_batch(self.header, self.lines, self.valid_total, self.bad, path)
        ratio = self.bad / self.lines if self.lines else 0.0
        if ratio > contract.max_reject_ratio:
            first = self.first_bad or {}
            raise FileRefused(
                f"{path.name}: {self.bad} of {self.lines} rows rejected "
                f"({ratio:.1%} > the {contract.name} contract's {contract.max_reject_ratio:.0%}); "
                f"first: line {first.get('line')}, field {first.get('field')}: {first.get('reason')}"
            )

    def fill(self, outcome: FileOutcome, contract: Contract, inserted: int, dates: set[date]) -> None:
        outcome.rows_in_file = self.lines
        outcome.loaded, outcome.affected_dates = inserted, sorted(dates)
        outcome.duplicate = self.good - inserted if not contract.reference else 0
        outcome.quarantined = self.bad
        outcome.extra_keys = sorted(self.extra)


@dataclass
class _Entry:
    """One file's place in a transaction: its outcome, its parsed rows, what its manifest row needs."""

    outcome: FileOutcome
    path: Path
    version: int
    started: datetime
    t0: float
    parts: list[ParseResult] = field(default_factory=list)  # loaded files only
    tally: _Tally | None = None
    record: bool = True  # False: refused again for the same reason, already on record


def _manifest_row(contract: Contract, e: _Entry, finished: datetime) -> dict:
    o, stat = e.outcome, e.path.stat()
    return {
        "file_path": o.path, "file_name": e.path.name, "file_sha256": o.sha256, "contract": contract.name,
        "source": contract.source, "version": e.version, "status": o.status, "reason": o.reason,
        "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows_in_file": o.rows_in_file,
        "rows_loaded": o.loaded, "rows_duplicate": o.duplicate, "rows_quarantined": o.quarantined,
        "affected_dates": o.affected_dates, "started_at": e.started, "finished_at": finished,
        "duration_ms": (time.perf_counter() - e.t0) * 1000, "extra_keys": o.extra_keys or None,
    }


def _write_manifest(con: duckdb.DuckDBPyConnection, contract: Contract, entries: list[_Entry]) -> None:
    """One statement for the manifest rows of a transaction."""
    finished = _now()
    rows = [_manifest_row(contract, e, finished) for e in entries if e.record]
    if not rows:
        return
    manifest_rows = pl.DataFrame(rows, schema=MANIFEST_SCHEMA).to_arrow()  # noqa: F841 — read by name below
    con.execute(f"INSERT INTO raw._load_manifest ({', '.join(MANIFEST_COLUMNS)}) SELECT * FROM manifest_rows")


def _record(
    con: duckdb.DuckDBPyConnection,
    outcome: FileOutcome,
    contract: Contract,
    path: Path,
    version: int,
    started: datetime,
    t0: float,
) -> None:
    _write_manifest(con, contract, [_Entry(outcome, path, version, started, t0)])


# Frames reach DuckDB as pyarrow tables by replacement scan (a local variable named in the
# SQL), never `con.register`: a registered view dropped inside an open transaction stays in
# its undo buffer until COMMIT, and with it the whole frame. That was the memory that grew
# with the file (one transaction per file): ~30 MB per 32 MB chunk, 1.9 GB for a 1 GB file.
# And DuckDB inserts from a pyarrow table in about half the CPU of the same polars frame.


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


def _insert_new_rows(con: duckdb.DuckDBPyConnection, contract: Contract, rows: pl.DataFrame, loaded_at: datetime) -> pl.DataFrame:
    """Insert the rows whose natural key is new; returns (`__f`, event_date) of each inserted row.

    `rows` come in file order then line order, with `__f` (the file's place in its
    transaction) and `_file_sha256`: the first line with a key wins, within a file and
    across the files of a transaction. The insert itself joins nothing.
    """
    key = list(contract.natural_key)
    first = rows.select(pl.struct(key).is_first_distinct()).to_series()
    incoming = rows if first.all() else rows.filter(first)
    seen = _existing(con, contract, incoming.select(key))
    new_rows = incoming if seen is None else incoming.filter(~seen)
    if new_rows.height:
        cols = [name for name, _ in table_columns(contract) if name != "_loaded_at"]
        arrow_rows = new_rows.select(cols).to_arrow()  # noqa: F841 — read by name below
        con.execute(
            f"INSERT INTO {contract.table} ({', '.join(cols)}, _loaded_at) SELECT *, ? FROM arrow_rows",
            [loaded_at],
        )
    return new_rows.select("__f", "event_date")


def _replace_reference(
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


def _tagged_good(good: pl.DataFrame, n: int, sha: str) -> pl.DataFrame:
    return good.with_columns(pl.lit(n, dtype=pl.Int32).alias("__f"), pl.lit(sha).alias("_file_sha256"))


def _tagged_bad(bad: pl.DataFrame, rel: str, sha: str) -> pl.DataFrame:
    return bad.with_columns(pl.lit(rel).alias("file_path"), pl.lit(sha).alias("file_sha256"))


def _quarantine(con: duckdb.DuckDBPyConnection, contract: Contract, bad: pl.DataFrame, at: datetime) -> None:
    """Bad rows (line, field, reason, raw_text, file_path, file_sha256) into raw._quarantine."""
    if not bad.height:
        return
    bad_rows = bad.select("file_path", "file_sha256", "line", "field", "reason", "raw_text").to_arrow()  # noqa: F841
    con.execute(
        "INSERT INTO raw._quarantine (file_path, file_sha256, line, field, reason, raw_text, contract, quarantined_at) "
        "SELECT *, ?, ? FROM bad_rows",
        [contract.name, at],
    )


def _record_clearing_batch(con: duckdb.DuckDBPyConnection, header: dict, sha: str, loaded_at: datetime) -> None:
    con.execute(
        "INSERT INTO raw.clearing_batches VALUES (?, ?, ?, ?::TIMESTAMPTZ AT TIME ZONE 'UTC', ?, ?)",
        [header["batch_id"], int(header["line_count"]), int(header["total_cents"]), header["cleared_at"], sha, loaded_at],
    )


FAULT_ENV = "CIVICFLOW_INGEST_FAULT"


def _fault_point(name: str) -> None:
    """Fault injection for the crash tests: `CIVICFLOW_INGEST_FAULT=<point>:<marker file>`.

    Points: `in_transaction` (a file's own transaction, after each chunk is written) and
    `in_batch` (a batch of files, everything written, before COMMIT). There the process
    writes the marker file and waits to be killed. Unset in production; costs one
    environment lookup per chunk or batch.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec or not spec.startswith(name + ":"):
        return
    marker = Path(spec.split(":", 1)[1])
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def _needs_devices(contract: Contract) -> bool:
    return "device_id" in contract.field_names and not contract.reference


def _check_devices(contract: Contract, path: Path, known: set[str] | None) -> None:
    if _needs_devices(contract) and not known:
        raise FileRefused(f"{path.name}: no device reference loaded yet, cannot check device ids")


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
    """Load one file in its own transaction (rows + quarantine + manifest), or refuse it whole.

    For reference snapshots and for files bigger than a chunk. The file is read in chunks
    (bounded memory) but stays one transaction: every chunk's rows and bad rows are written
    inside it, and a file refused at the end (reject ratio, truncated, a clearing batch that
    does not add up) is rolled back whole and recorded.
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
        known = (known_devices if known_devices is not None else _known_devices(con)) if _needs_devices(contract) else None
        _check_devices(contract, path, known)
        con.execute("BEGIN TRANSACTION")
        try:
            tally, inserted, dates = _Tally(), 0, set()
            for n, part in enumerate(parts if parts is not None else validate_chunks(contract, path, known)):
                tally.add(part, contract)
                _quarantine(con, contract, _tagged_bad(part.bad, rel, sha), loaded_at)
                if contract.reference:
                    inserted += _replace_reference(con, contract, part.good, sha, loaded_at, first_chunk=n == 0)
                elif part.good.height:
                    new = _insert_new_rows(con, contract, _tagged_good(part.good, 0, sha), loaded_at)
                    inserted += new.height
                    dates.update(new["event_date"].unique().to_list())
                del part  # only one chunk alive at a time
                _fault_point("in_transaction")
            outcome.rows_in_file = tally.lines
            tally.check(contract, path)
            tally.fill(outcome, contract, inserted, dates)
            if contract.name == "clearing":
                _record_clearing_batch(con, tally.header, sha, loaded_at)
            _record(con, outcome, contract, path, version, started, t0)
            con.execute("COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise LoadError(f"could not write into {contract.table} from {path}: {exc}") from exc
            raise
    except FileRefused as exc:
        return _refused(con, contract, outcome, exc, previous_refusal, path, version, started, t0)
    return outcome


def _refused(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    outcome: FileOutcome,
    exc: FileRefused,
    previous_refusal: str | None,
    path: Path,
    version: int,
    started: datetime,
    t0: float,
) -> FileOutcome:
    """Record a refusal in its own transaction (nothing of the file was committed)."""
    _mark_refused(outcome, exc)
    if outcome.reason == previous_refusal:
        return outcome  # refused again for the same reason: already on record
    con.execute("BEGIN TRANSACTION")
    _record(con, outcome, contract, path, version, started, t0)
    con.execute("COMMIT")
    return outcome


def _mark_refused(outcome: FileOutcome, exc: FileRefused) -> None:
    # Only its size (when it was read) stays on record.
    outcome.status, outcome.reason = "refused", str(exc)
    outcome.loaded = outcome.duplicate = outcome.quarantined = 0
    outcome.affected_dates, outcome.extra_keys = [], []


def _commit_batch(con: duckdb.DuckDBPyConnection, contract: Contract, entries: list[_Entry]) -> None:
    """Several files of one event source in one transaction: their rows, bad rows and manifest rows.

    Every file in it was parsed whole and judged before (refused, duplicate or loadable), so
    nothing here can refuse a file after its rows were written: the batch commits or, on a
    crash or an error, leaves nothing. Rows are de-duplicated and inserted in one statement.
    """
    loaded_at = _now()
    loading = [(n, e) for n, e in enumerate(entries) if e.outcome.status == "loaded"]
    con.execute("BEGIN TRANSACTION")
    try:
        goods = [_tagged_good(p.good, n, e.outcome.sha256) for n, e in loading for p in e.parts if p.good.height]
        per_file: dict[int, tuple[int, set[date]]] = {}
        if goods:
            new = _insert_new_rows(con, contract, pl.concat(goods), loaded_at)
            del goods
            for n, count, dates in new.group_by("__f").agg(pl.len(), pl.col("event_date").unique()).iter_rows():
                per_file[n] = (count, set(dates))
        bads = [_tagged_bad(p.bad, e.outcome.path, e.outcome.sha256) for _, e in loading for p in e.parts if p.bad.height]
        if bads:
            _quarantine(con, contract, pl.concat(bads), loaded_at)
        for n, e in loading:
            assert e.tally is not None
            inserted, dates = per_file.get(n, (0, set()))
            e.tally.fill(e.outcome, contract, inserted, dates)
            if contract.name == "clearing":
                _record_clearing_batch(con, e.tally.header, e.outcome.sha256, loaded_at)
            e.parts = []  # the rows are in DuckDB now
        _write_manifest(con, contract, entries)
        _fault_point("in_batch")
        con.execute("COMMIT")
    except BaseException as exc:
        con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):  # DuckDB's text alone names neither table nor file
            names = [str(e.outcome.path) for _, e in loading]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise LoadError(f"could not write into {contract.table} from {shown}: {exc}") from exc
        raise


# --------------------------------------------------------------------------- reading ahead


@dataclass
class Prepared:
    """A file read on a worker thread: its checksum and, when it fits in one chunk, its rows parsed."""

    sha: str
    parts: list[ParseResult] | None = None  # None: bigger than a chunk, parsed while it is loaded
    error: Exception | None = None  # FileRefused (or a bug) while parsing: raised where the file is judged

    @property
    def streamed(self) -> bool:
        return self.parts is None and self.error is None


def prepare(contract: Contract, paths: list[Path], known: set[str] | None) -> list[Prepared]:
    """Hash files and parse them, reading each once; a file bigger than a chunk is only hashed.

    `paths` is one big file, or small files validated together (`validate_files`).
    """
    if len(paths) == 1 and paths[0].stat().st_size > validate.CHUNK_BYTES:
        return [Prepared(sha=sha256_of(paths[0]))]  # a big file: parsed in chunks at load time
    files = [(p, p.read_bytes()) for p in paths]
    shas = [hashlib.sha256(data).hexdigest() for _, data in files]
    try:
        results = validate_files(contract, files, known)
    except Exception as exc:  # a bug: raised where the first of these files is judged
        return [Prepared(sha=sha, error=exc) for sha in shas]
    return [
        Prepared(sha=sha, error=r) if isinstance(r, FileRefused) else Prepared(sha=sha, parts=[r])
        for sha, r in zip(shas, results)
    ]


def pack_in_order(items: Iterable[tuple[T, int]], budget: int, alone_over: int | None = None) -> list[list[T]]:
    """Consecutive (item, weight) pairs in groups of at most `budget` total weight, order kept;
    an item heavier than the budget, or than `alone_over`, is a group of its own."""
    groups: list[list[T]] = []
    size = 0
    for item, n in items:
        if alone_over is not None and n > alone_over:
            groups.append([item])
            size = budget  # nothing joins it
            continue
        if not groups or size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


def _groups(paths: list[Path], group_bytes: int) -> list[list[Path]]:
    """Consecutive small files up to `group_bytes` together (one validation pass); a big file alone."""
    return pack_in_order(((p, p.stat().st_size) for p in paths), group_bytes, alone_over=validate.CHUNK_BYTES)


class _ReadAhead:
    """The files of one contract, prepared in order on worker threads, up to `budget` bytes ahead.

    Parsing (polars, DuckDB's JSON decoder) and writing (the warehouse) release the GIL, so
    the workers parse the next files while the main thread writes a batch. Bounded memory:
    at most about `budget` bytes of small files are held parsed ahead (a big file costs only
    its hash). Small files are parsed in groups of up to a chunk (`CHUNK_BYTES`) of bytes.
    """

    def __init__(self, pool: ThreadPoolExecutor, contract: Contract, paths: list[Path], known: set[str] | None, budget: int):
        self._pool, self._contract, self._known, self._budget = pool, contract, known, budget
        self._queue = deque(_groups(paths, validate.CHUNK_BYTES if budget else 0))
        self._where: dict[Path, tuple[Future, int]] = {}
        self._cost: dict[Path, int] = {}
        self._bytes = 0

    def _refill(self) -> None:
        while self._queue and (not self._where or self._bytes < self._budget):
            group = self._queue.popleft()
            future = self._pool.submit(prepare, self._contract, group, self._known)
            for i, path in enumerate(group):
                self._where[path] = (future, i)
                self._cost[path] = min(path.stat().st_size, validate.CHUNK_BYTES)
                self._bytes += self._cost[path]

    def take(self, path: Path) -> Prepared:
        self._refill()
        future, i = self._where.pop(path)
        self._bytes -= self._cost.pop(path)
        prepared = future.result()[i]
        self._refill()
        return prepared


_END = object()


def _chunks_ahead(pool: ThreadPoolExecutor, parts: Iterator[ParseResult]) -> Iterator[ParseResult]:
    """A big file's chunks, the next one parsed on `pool` while the caller writes this one."""
    nxt = pool.submit(next, parts, _END)
    while True:
        part = nxt.result()
        if part is _END:
            return
        nxt = pool.submit(next, parts, _END)
        yield part
        del part


# --------------------------------------------------------------------------- the run


def _judge(contract: Contract, path: Path, prepared: Prepared, known: set[str] | None, outcome: FileOutcome) -> _Tally:
    """Decide a parsed small file before anything is written: raises FileRefused to refuse it."""
    _check_devices(contract, path, known)
    if prepared.error is not None:
        raise prepared.error
    tally = _Tally()
    for part in prepared.parts or []:
        tally.add(part, contract)
    outcome.rows_in_file = tally.lines
    tally.check(contract, path)
    return tally


def _batch_entry(
    contract: Contract, path: Path, rel: str, prepared: Prepared, known: set[str] | None,
    already_loaded: bool, version: int, previous_refusal: str | None, started: datetime,
) -> _Entry:
    """A small event file's place in the next batch: to load, a duplicate file, or refused."""
    entry = _Entry(FileOutcome(path=rel, contract=contract.name, sha256=prepared.sha, status="loaded"), path, version, started, time.perf_counter())
    if already_loaded:
        # Same content under another name (or the same name again): a recorded no-op.
        entry.outcome.status, entry.outcome.reason = "duplicate_file", "same SHA-256 as a file already loaded"
        return entry
    try:
        entry.tally = _judge(contract, path, prepared, known, entry.outcome)
        entry.parts = prepared.parts or []
    except FileRefused as exc:
        _mark_refused(entry.outcome, exc)
        entry.record = entry.outcome.reason != previous_refusal
    return entry


def _load_alone(
    con: duckdb.DuckDBPyConnection, contract: Contract, path: Path, landing: Path, prepared: Prepared,
    known: set[str] | None, already_loaded: bool, version: int, previous_refusal: str | None, chunk_pool: ThreadPoolExecutor,
) -> FileOutcome:
    """A reference snapshot or a file bigger than a chunk: its own transaction (`load_file`)."""
    if prepared.error is not None:
        parts = _raising(prepared.error)
    elif prepared.parts is not None:
        parts = iter(prepared.parts)
    else:  # a generator: nothing is read unless the file is loaded (not for a duplicate)
        parts = _chunks_ahead(chunk_pool, validate_chunks(contract, path, known))
    return load_file(
        con, contract, path, landing, prepared.sha, version, already_loaded=already_loaded,
        previous_refusal=previous_refusal, known_devices=known, parts=parts,
    )


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    contracts: Iterable[Contract] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    delivery_dates: set[date] | None = None,
) -> list[FileOutcome]:
    """Load every new file of the given contracts (reference data first: devices are checked against it).

    With `delivery_dates`, only event files delivered on those days (see `discover`).

    Files are hashed and parsed ahead on worker threads while the main thread writes (see
    `_ReadAhead`); every decision (skip, duplicate file, refuse, load) is still taken here,
    in file order, against the manifest. Event files that fit in one chunk are judged whole
    before anything is written and committed in batches (`BATCH_BYTES`); a bigger file, and
    every reference snapshot, is loaded in its own transaction, chunk by chunk.
    """
    ensure_raw_schema(con)
    chosen = list(contracts) if contracts is not None else list(REFERENCE_CONTRACTS + EVENT_CONTRACTS)
    chosen.sort(key=lambda c: (not c.reference,))
    state = manifest_state(con)
    outcomes: list[FileOutcome] = []
    devices: set[str] | None = None  # read once per run, again after a devices snapshot loads
    last_started = datetime.min

    def unchanged(rel: str, path: Path) -> bool:
        prev = state.last.get(rel)
        stat = path.stat()
        # Unchanged since it was handled (same size and mtime): no need to hash it again.
        # Refused files are retried: the reference data they failed on may have arrived since.
        return bool(prev and prev[3] != "refused" and prev[0] == stat.st_size and prev[1] == stat.st_mtime_ns)

    def start() -> datetime:
        # Manifest rows are read back in started_at order: strictly increasing within a run.
        nonlocal last_started
        last_started = max(_now(), last_started + timedelta(microseconds=1))
        return last_started

    with ThreadPoolExecutor(max_workers=PARSE_WORKERS, thread_name_prefix="ingest-parse") as pool, ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="ingest-chunks"
    ) as chunk_pool:
        for contract in chosen:
            files = discover(landing, contract, delivery_dates)
            if devices is None and _needs_devices(contract):
                devices = _known_devices(con)
            known = devices if _needs_devices(contract) else None
            todo = [p for p in files if not unchanged(str(p.relative_to(landing)), p)]
            # Reference snapshots are few and change the device list: no read-ahead for them.
            ahead = _ReadAhead(pool, contract, todo, known, budget=0 if contract.reference else BATCH_BYTES)
            batch: list[_Entry] = []
            batch_bytes = 0  # of the files with rows to write

            def flush() -> None:
                nonlocal batch_bytes
                if batch:
                    _commit_batch(con, contract, batch)
                    for e in batch:
                        if on_file:
                            on_file(e.outcome)
                    batch.clear()
                batch_bytes = 0

            for path in files:
                rel = str(path.relative_to(landing))
                prev = state.last.get(rel)
                refused_before = prev is not None and prev[3] == "refused"
                if unchanged(rel, path):
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=prev[2], status="skipped"))
                    continue
                prepared = ahead.take(path)
                if prev and not refused_before and prev[2] == prepared.sha:
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=prepared.sha, status="skipped"))
                    continue
                version = len(state.versions.get(rel, set()) | {prepared.sha})
                previous_refusal = prev[4] if refused_before and prev[2] == prepared.sha else None
                already_loaded = prepared.sha in state.loaded_shas
                if contract.reference or prepared.streamed:
                    flush()
                    outcome = _load_alone(con, contract, path, landing, prepared, known, already_loaded, version, previous_refusal, chunk_pool)
                    if contract.name == "devices" and outcome.status == "loaded":
                        devices = None
                    state.note(outcome, path)
                    outcomes.append(outcome)
                    if on_file:
                        on_file(outcome)
                    continue
                entry = _batch_entry(contract, path, rel, prepared, known, already_loaded, version, previous_refusal, start())
                state.note(entry.outcome, path)
                outcomes.append(entry.outcome)  # its counts are filled in when its batch commits
                batch.append(entry)
                batch_bytes += path.stat().st_size if entry.parts else 0
                if batch_bytes >= BATCH_BYTES:
                    flush()
            flush()
    return outcomes


def _raising(exc: Exception) -> Iterator[ParseResult]:
    raise exc
    yield  # a generator: raises where the file's chunks are read, inside load_file


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
