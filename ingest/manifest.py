"""`raw._load_manifest`: one row per file handled, the record that makes ingest effectively-once.

A file is identified by its SHA-256. Its manifest row is written in the same transaction as
its rows, so a row here means the file's rows are in `raw.*` (status `loaded`), or that it
was seen again under some name (`duplicate_file`) or refused whole (`refused`). The table's
columns are declared once here (`COLUMNS`); `ManifestRow` is one row of it, `FileOutcome`
what the loader reports for a file, moved from status to status by named methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

# What raw._load_manifest.status holds.
FileStatus = Literal["loaded", "duplicate_file", "refused"]
# What the loader reports: a stored status, or `skipped` (handled in an earlier run; no new row).
OutcomeStatus = Literal["loaded", "duplicate_file", "refused", "skipped"]

DUPLICATE_REASON = "same SHA-256 as a file already loaded"

# (name, SQL type, polars type, what it holds), in table order.
COLUMNS: tuple[tuple[str, str, pl.DataType, str], ...] = (
    ("file_path", "VARCHAR NOT NULL", pl.String(), "relative to the landing zone"),
    ("file_name", "VARCHAR NOT NULL", pl.String(), ""),
    ("file_sha256", "VARCHAR NOT NULL", pl.String(), "the file's identity"),
    ("contract", "VARCHAR NOT NULL", pl.String(), ""),
    ("source", "VARCHAR NOT NULL", pl.String(), ""),
    ("version", "INTEGER NOT NULL", pl.Int32(), "n-th distinct content seen at this path"),
    ("status", "VARCHAR NOT NULL", pl.String(), "loaded | duplicate_file | refused"),
    ("reason", "VARCHAR", pl.String(), "why refused, or a duplicate of what"),
    ("size_bytes", "BIGINT", pl.Int64(), ""),
    ("mtime_ns", "BIGINT", pl.Int64(), "with size_bytes: a file unchanged since is not hashed again"),
    ("rows_in_file", "BIGINT", pl.Int64(), ""),
    ("rows_loaded", "BIGINT", pl.Int64(), ""),
    ("rows_duplicate", "BIGINT", pl.Int64(), "rows whose natural key was already loaded"),
    ("rows_quarantined", "BIGINT", pl.Int64(), ""),
    ("affected_dates", "DATE[]", pl.List(pl.Date()), "event dates the file added rows to"),
    ("started_at", "TIMESTAMP", pl.Datetime("us"), "strictly increasing within a run: the order files were handled"),
    ("finished_at", "TIMESTAMP", pl.Datetime("us"), ""),
    ("duration_ms", "DOUBLE", pl.Float64(), ""),
    ("extra_keys", "VARCHAR[]", pl.List(pl.String()), "JSON keys outside the contract (ignored, not loaded)"),
)
MANIFEST_SCHEMA: dict[str, pl.DataType] = {name: dtype for name, _, dtype, _ in COLUMNS}
MANIFEST_DDL = "CREATE TABLE IF NOT EXISTS raw._load_manifest (\n    {}\n)".format(
    ",\n    ".join(f"{name} {sql}" for name, sql, _, _ in COLUMNS)
)


def now_utc() -> datetime:
    """Naive UTC, as every timestamp in the warehouse."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_manifest(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(MANIFEST_DDL)
    # A warehouse from before extra_keys was recorded gets the column.
    con.execute("ALTER TABLE raw._load_manifest ADD COLUMN IF NOT EXISTS extra_keys VARCHAR[]")


@dataclass
class FileOutcome:
    """What happened to one file in a run (the loader's report, and its manifest row's counts)."""

    path: str  # relative to the landing zone
    contract: str
    sha256: str
    status: OutcomeStatus = "loaded"
    rows_in_file: int = 0
    loaded: int = 0
    duplicate: int = 0
    quarantined: int = 0
    reason: str | None = None
    affected_dates: list[date] = field(default_factory=list)
    extra_keys: list[str] = field(default_factory=list)  # JSON keys outside the contract: ignored, recorded
    # The file's size and mtime when the bytes behind sha256 were read (None: not read).
    size_bytes: int | None = None
    mtime_ns: int | None = None

    def mark_duplicate(self) -> None:
        """Same content as a file already loaded (under another name, or the same name again): a recorded no-op."""
        self.status, self.reason = "duplicate_file", DUPLICATE_REASON

    def mark_refused(self, reason: str) -> None:
        """Refused whole: nothing of it is loaded; only its size (when it was read) stays on record."""
        self.status, self.reason = "refused", reason
        self.loaded = self.duplicate = self.quarantined = 0
        self.affected_dates, self.extra_keys = [], []


@dataclass
class ManifestRow:
    """One row of raw._load_manifest; its fields are `COLUMNS`, in order."""

    file_path: str
    file_name: str
    file_sha256: str
    contract: str
    source: str
    version: int
    status: FileStatus
    reason: str | None
    size_bytes: int
    mtime_ns: int
    rows_in_file: int
    rows_loaded: int
    rows_duplicate: int
    rows_quarantined: int
    affected_dates: list[date]
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    extra_keys: list[str] | None


assert tuple(f.name for f in fields(ManifestRow)) == tuple(MANIFEST_SCHEMA), "ManifestRow and COLUMNS disagree"


def seen_stat(outcome: FileOutcome, path: Path) -> tuple[int, int]:
    """(size, mtime) to record for a file: those of the bytes that were read, else the path's
    own (a link's, not its target's), else zeros for a path that is gone."""
    if outcome.size_bytes is not None and outcome.mtime_ns is not None:
        return outcome.size_bytes, outcome.mtime_ns
    try:
        st = path.lstat()
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


def manifest_row(
    outcome: FileOutcome, source: str, path: Path, version: int, started: datetime, finished: datetime, duration_ms: float
) -> ManifestRow:
    """The manifest row of a file handled in this run (never a skipped one: it has its row already)."""
    assert outcome.status != "skipped", outcome.path
    size, mtime = seen_stat(outcome, path)
    return ManifestRow(
        file_path=outcome.path, file_name=path.name, file_sha256=outcome.sha256, contract=outcome.contract,
        source=source, version=version, status=outcome.status, reason=outcome.reason,
        size_bytes=size, mtime_ns=mtime, rows_in_file=outcome.rows_in_file,
        rows_loaded=outcome.loaded, rows_duplicate=outcome.duplicate, rows_quarantined=outcome.quarantined,
        affected_dates=outcome.affected_dates, started_at=started, finished_at=finished,
        duration_ms=duration_ms, extra_keys=outcome.extra_keys or None,
    )


def write_manifest(con: duckdb.DuckDBPyConnection, rows: list[ManifestRow]) -> None:
    """The manifest rows of one transaction, in one statement."""
    if not rows:
        return
    manifest_rows = pl.DataFrame([asdict(r) for r in rows], schema=MANIFEST_SCHEMA).to_arrow()  # noqa: F841 — read by name below
    con.execute(f"INSERT INTO raw._load_manifest ({', '.join(MANIFEST_SCHEMA)}) SELECT * FROM manifest_rows")


@dataclass(frozen=True)
class LastSeen:
    """How a path was last handled, as the manifest records it."""

    size_bytes: int
    mtime_ns: int
    sha256: str
    status: FileStatus
    reason: str | None


@dataclass
class ManifestState:
    """What the manifest already knows, read once per run and kept current as files are handled."""

    last: dict[str, LastSeen] = field(default_factory=dict)  # path -> its latest handling
    loaded_shas: set[str] = field(default_factory=set)
    versions: dict[str, set[str]] = field(default_factory=dict)  # path -> every content seen there

    def add(self, path: str, seen: LastSeen) -> None:
        self.last[path] = seen
        self.versions.setdefault(path, set()).add(seen.sha256)
        if seen.status == "loaded":
            self.loaded_shas.add(seen.sha256)

    def note(self, outcome: FileOutcome, path: Path) -> None:
        """A file handled in this run (not a skipped one)."""
        assert outcome.status != "skipped", outcome.path
        size, mtime = seen_stat(outcome, path)
        self.add(outcome.path, LastSeen(size, mtime, outcome.sha256, outcome.status, outcome.reason))

    def unchanged(self, rel: str, path: Path) -> bool:
        """Same size and mtime as when it was handled: no need to hash it again.

        Refused files are always looked at again: the reference data they failed on may have
        arrived since.
        """
        prev = self.last.get(rel)
        if prev is None or prev.status == "refused":
            return False
        try:
            stat = path.stat()
        except OSError:  # gone or unreadable since it was listed: looked at (and reported) when read
            return False
        return prev.size_bytes == stat.st_size and prev.mtime_ns == stat.st_mtime_ns

    def handled(self, rel: str, sha: str) -> bool:
        """This content at this path was loaded or recorded as a duplicate before (touched, not changed)."""
        prev = self.last.get(rel)
        return prev is not None and prev.status != "refused" and prev.sha256 == sha

    def version(self, rel: str, sha: str) -> int:
        """The n-th distinct content seen at this path, this one included."""
        return len(self.versions.get(rel, set()) | {sha})

    def previous_refusal(self, rel: str, sha: str) -> str | None:
        """Why this content at this path was refused last time (a refusal is recorded once per reason)."""
        prev = self.last.get(rel)
        return prev.reason if prev is not None and prev.status == "refused" and prev.sha256 == sha else None

    def is_loaded(self, sha: str) -> bool:
        return sha in self.loaded_shas


def read_manifest_state(con: duckdb.DuckDBPyConnection) -> ManifestState:
    rows = con.execute(
        "SELECT file_path, size_bytes, mtime_ns, file_sha256, status, reason FROM raw._load_manifest ORDER BY started_at"
    ).fetchall()
    state = ManifestState()
    for path, size, mtime, sha, status, reason in rows:
        state.add(path, LastSeen(size, mtime, sha, status, reason))
    return state
