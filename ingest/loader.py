"""Load the landing zone into `raw.*`: every file once, every bad row kept.

Effectively-once (DESIGN.md): a file is identified by its SHA-256; its rows, its quarantined
rows and its manifest row are written in one DuckDB transaction, so a crash leaves nothing
of it behind and the re-run loads the file whole. Small files of one source share a
transaction (a batch, `IngestConfig.batch_bytes`), each with its own manifest row and
checksum; a file bigger than a chunk, or a reference snapshot, has a transaction of its own.
Rows are de-duplicated on the contract's natural key across files and runs, and the
duplicates are counted.

Files are read once (checksum and rows from the same bytes) and parsed ahead on worker
threads (`read_ahead`); a batch is de-duplicated in polars and inserted in one statement
after one key probe of the table (`raw_tables`).

The caller owns the connection (the single writer); this module never opens the warehouse.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from ingest import raw_tables
from ingest.config import IngestConfig, stop_at
from ingest.contracts import CONTRACTS, EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract
from ingest.landing import NO_CONTRACT, DayWindow, Misplaced, scan, waiting
from ingest.manifest import FileOutcome, ManifestState, manifest_row, now_utc, read_manifest_state, write_manifest
from ingest.parsed import FileRefused, Known, ParseResult
from ingest.raw_tables import ensure_raw_schema
from ingest.read_ahead import Prepared, ReadAhead, chunks_ahead, still_being_written
from ingest.tally import Tally
from ingest.validate import validate_chunks


class LoadError(RuntimeError):
    """Writing a file's rows failed in the warehouse (not the file's fault): names table and file."""


@dataclass
class _Entry:
    """One file's place in a transaction: its outcome, its parsed rows, what its manifest row needs."""

    outcome: FileOutcome
    path: Path
    version: int
    started: datetime
    t0: float
    parts: list[ParseResult] = field(default_factory=list)  # loaded files only
    tally: Tally | None = None
    record: bool = True  # False: refused again for the same reason, already on record


def _write_manifest(con: duckdb.DuckDBPyConnection, contract: Contract, entries: list[_Entry]) -> None:
    finished = now_utc()
    write_manifest(con, [
        manifest_row(e.outcome, contract.source, e.path, e.version, e.started, finished, (time.perf_counter() - e.t0) * 1000)
        for e in entries if e.record
    ])


def _record_alone(con: duckdb.DuckDBPyConnection, contract: Contract, entry: _Entry) -> None:
    """A manifest row in a transaction of its own (a duplicate file, a refusal)."""
    con.execute("BEGIN TRANSACTION")
    _write_manifest(con, contract, [entry])
    con.execute("COMMIT")


def _check_devices(contract: Contract, path: Path, known: Known | None) -> None:
    if contract.checks_devices and not known:
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
    known_devices: Known | None = None,
    parts: Iterator[ParseResult] | None = None,
    config: IngestConfig = IngestConfig(),
    seen: tuple[int, int] | None = None,
) -> FileOutcome:
    """Load one file in its own transaction (rows + quarantine + manifest), or refuse it whole.

    For reference snapshots and for files bigger than a chunk. The file is read in chunks
    (bounded memory) but stays one transaction: every chunk's rows and bad rows are written
    inside it, and a file refused at the end (reject ratio, truncated, a batch that does not
    add up to its header) is rolled back whole and recorded.

    `seen` is the (size, mtime) the file had when `sha` was computed: a file whose size or
    mtime differs once its rows are read changed under the loader and is refused as still
    being written (rolled back, looked at again next run).
    """
    rel = str(path.relative_to(landing))
    entry = _Entry(FileOutcome(path=rel, contract=contract.name, sha256=sha), path, version, now_utc(), time.perf_counter())
    outcome = entry.outcome
    if seen is not None:
        outcome.size_bytes, outcome.mtime_ns = seen
    if already_loaded:
        outcome.mark_duplicate()
        _record_alone(con, contract, entry)
        return outcome
    loaded_at = now_utc()
    try:
        known = (known_devices if known_devices is not None else raw_tables.known_keys(con)) if contract.checks_devices else None
        _check_devices(contract, path, known)
        con.execute("BEGIN TRANSACTION")
        try:
            tally, inserted, dates = Tally(), 0, set()
            for n, part in enumerate(parts if parts is not None else validate_chunks(contract, path, known, config)):
                tally.add(part, contract)
                raw_tables.quarantine(con, contract, raw_tables.tagged_bad(part.bad, rel, sha), loaded_at)
                if contract.reference:
                    inserted += raw_tables.replace_reference(con, contract, part.good, sha, loaded_at, first_chunk=n == 0)
                elif part.good.height:
                    new, changed = raw_tables.insert_new_rows(con, contract, raw_tables.tagged_good(part.good, 0, sha), loaded_at)
                    inserted += new.height
                    if changed.height:  # a known key with other values: quarantined, not a duplicate
                        raw_tables.quarantine(con, contract, raw_tables.tagged_bad(changed.drop("__f"), rel, sha), loaded_at)
                        tally.changed += changed.height
                    dates.update(new["event_date"].unique().to_list())
                del part  # only one chunk alive at a time
                stop_at(config.fault, "in_transaction")
            outcome.rows_in_file = tally.lines
            if seen is not None and _stat_of(path) != seen:
                raise still_being_written(path)
            tally.check(contract, path)
            tally.fill(outcome, contract, inserted, dates)
            if contract.has_batch_header:
                raw_tables.record_batch_header(con, tally.header, sha, loaded_at)
            _write_manifest(con, contract, [entry])
            con.execute("COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise LoadError(f"could not write into {contract.table} from {path}: {exc}") from exc
            raise
    except FileRefused as exc:
        # Nothing of the file was committed; the refusal is recorded once per reason.
        outcome.mark_refused(str(exc))
        if outcome.reason != previous_refusal:
            _record_alone(con, contract, entry)
    return outcome


def _stat_of(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _commit_batch(con: duckdb.DuckDBPyConnection, contract: Contract, entries: list[_Entry], config: IngestConfig) -> None:
    """Several files of one event source in one transaction: their rows, bad rows and manifest rows.

    Every file in it was parsed whole and judged before (refused, duplicate or loadable), so
    nothing here can refuse a file after its rows were written: the batch commits or, on a
    crash or an error, leaves nothing. Rows are de-duplicated and inserted in one statement.
    """
    loaded_at = now_utc()
    loading = [(n, e) for n, e in enumerate(entries) if e.outcome.status == "loaded"]
    con.execute("BEGIN TRANSACTION")
    try:
        goods = [raw_tables.tagged_good(p.good, n, e.outcome.sha256) for n, e in loading for p in e.parts if p.good.height]
        per_file: dict[int, tuple[int, set[date]]] = {}
        if goods:
            new, changed = raw_tables.insert_new_rows(con, contract, pl.concat(goods), loaded_at)
            del goods
            for n, count, dates in new.group_by("__f").agg(pl.len(), pl.col("event_date").unique()).iter_rows():
                per_file[n] = (count, set(dates))
        else:
            changed = pl.DataFrame(schema=raw_tables.CONFLICT_SCHEMA)
        bads = [raw_tables.tagged_bad(p.bad, e.outcome.path, e.outcome.sha256) for _, e in loading for p in e.parts if p.bad.height]
        # A known key with other values: quarantined with the file it came in, not a duplicate.
        for n, e in loading:
            mine = changed.filter(pl.col("__f") == n)
            if mine.height:
                bads.append(raw_tables.tagged_bad(mine.drop("__f"), e.outcome.path, e.outcome.sha256))
                assert e.tally is not None
                e.tally.changed += mine.height
        if bads:
            raw_tables.quarantine(con, contract, pl.concat(bads), loaded_at)
        for n, e in loading:
            assert e.tally is not None
            inserted, dates = per_file.get(n, (0, set()))
            e.tally.fill(e.outcome, contract, inserted, dates)
            if contract.has_batch_header:
                raw_tables.record_batch_header(con, e.tally.header, e.outcome.sha256, loaded_at)
            e.parts = []  # the rows are in DuckDB now
        _write_manifest(con, contract, entries)
        stop_at(config.fault, "in_batch")
        con.execute("COMMIT")
    except BaseException as exc:
        con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):  # DuckDB's text alone names neither table nor file
            names = [str(e.outcome.path) for _, e in loading]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise LoadError(f"could not write into {contract.table} from {shown}: {exc}") from exc
        raise


def _judge(contract: Contract, path: Path, prepared: Prepared, known: Known | None, outcome: FileOutcome) -> Tally:
    """Decide a parsed small file before anything is written: raises FileRefused to refuse it."""
    _check_devices(contract, path, known)
    if prepared.error is not None:
        raise prepared.error
    tally = Tally()
    for part in prepared.parts or []:
        tally.add(part, contract)
    outcome.rows_in_file = tally.lines
    tally.check(contract, path)
    return tally


def _batch_entry(
    contract: Contract, path: Path, rel: str, prepared: Prepared, known: Known | None,
    state: ManifestState, started: datetime,
) -> _Entry:
    """A small event file's place in the next batch: to load, a duplicate file, or refused."""
    outcome = FileOutcome(path=rel, contract=contract.name, sha256=prepared.sha)
    if prepared.sha:  # read: its size and mtime are those of the bytes hashed
        outcome.size_bytes, outcome.mtime_ns = prepared.size, prepared.mtime_ns
    entry = _Entry(outcome, path, state.version(rel, prepared.sha), started, time.perf_counter())
    if prepared.sha and state.is_loaded(prepared.sha):
        outcome.mark_duplicate()
        return entry
    try:
        entry.tally = _judge(contract, path, prepared, known, outcome)
        entry.parts = prepared.parts or []
    except FileRefused as exc:
        outcome.mark_refused(str(exc))
        entry.record = outcome.reason != state.previous_refusal(rel, prepared.sha)
    return entry


def _raising(exc: Exception) -> Iterator[ParseResult]:
    raise exc
    yield  # a generator: raises where the file's chunks are read, inside load_file


def _load_alone(
    con: duckdb.DuckDBPyConnection, contract: Contract, path: Path, rel: str, landing: Path, prepared: Prepared,
    known: Known | None, state: ManifestState, chunk_pool: ThreadPoolExecutor, config: IngestConfig,
) -> FileOutcome:
    """A reference snapshot or a file bigger than a chunk: its own transaction (`load_file`)."""
    if prepared.error is not None:
        parts = _raising(prepared.error)
    elif prepared.parts is not None:
        parts = iter(prepared.parts)
    else:  # a generator: nothing is read unless the file is loaded (not for a duplicate)
        parts = chunks_ahead(chunk_pool, validate_chunks(contract, path, known, config))
    return load_file(
        con, contract, path, landing, prepared.sha, state.version(rel, prepared.sha),
        already_loaded=bool(prepared.sha) and state.is_loaded(prepared.sha), previous_refusal=state.previous_refusal(rel, prepared.sha),
        known_devices=known, parts=parts, config=config, seen=(prepared.size, prepared.mtime_ns) if prepared.sha else None,
    )


def _record_misplaced(con: duckdb.DuckDBPyConnection, landing: Path, m: Misplaced, state: ManifestState) -> FileOutcome:
    """A misplaced path as a refusal in the manifest (once per reason, like every refusal)."""
    outcome = FileOutcome(path=m.path, contract=m.contract, sha256="")
    outcome.mark_refused(f"{Path(m.path).name}: {m.reason}")  # reasons start with the name, as every refusal's
    if state.previous_refusal(m.path, "") != outcome.reason:
        path = landing / m.path
        entry = _Entry(outcome, path, state.version(m.path, ""), now_utc(), time.perf_counter())
        source = CONTRACTS[m.contract].source if m.contract in CONTRACTS else NO_CONTRACT
        con.execute("BEGIN TRANSACTION")
        write_manifest(con, [manifest_row(outcome, source, path, entry.version, entry.started, now_utc(), 0.0)])
        con.execute("COMMIT")
        state.note(outcome, path)
    return outcome


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    contracts: Iterable[Contract] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    delivery_dates: set[date] | None = None,
    config: IngestConfig = IngestConfig(),
) -> list[FileOutcome]:
    """Load every new file of the given contracts (reference data first: devices are checked against it).

    With `delivery_dates`, only event files delivered on those days (see `discover`).

    Files are hashed and parsed ahead on worker threads while the main thread writes (see
    `ReadAhead`); every decision (skip, duplicate file, refuse, load) is still taken here,
    in file order, against the manifest. Event files that fit in one chunk are judged whole
    before anything is written and committed in batches (`config.batch_bytes`); a bigger
    file, and every reference snapshot, is loaded in its own transaction, chunk by chunk.
    """
    ensure_raw_schema(con)
    chosen = list(contracts) if contracts is not None else list(REFERENCE_CONTRACTS + EVENT_CONTRACTS)
    chosen.sort(key=lambda c: (not c.reference,))
    state = read_manifest_state(con)
    layout = scan(landing, DayWindow.ending_tomorrow(config.first_day))
    # What lies where no contract's file may: reported by the contract whose folder holds it;
    # what belongs to no contract, by the run that loads the reference data (every night's).
    names = {c.name for c in chosen}
    unowned = any(c.reference for c in chosen)
    outcomes: list[FileOutcome] = [
        _record_misplaced(con, landing, m, state)
        for m in layout.misplaced if m.contract in names or (unowned and m.contract == NO_CONTRACT)
    ]
    devices: Known | None = None  # read once per run, again after a reference snapshot loads
    last_started = datetime.min

    def start() -> datetime:
        # Manifest rows are read back in started_at order: strictly increasing within a run.
        nonlocal last_started
        last_started = max(now_utc(), last_started + timedelta(microseconds=1))
        return last_started

    def report(outcome: FileOutcome) -> None:
        if on_file:
            on_file(outcome)

    with ThreadPoolExecutor(max_workers=config.parse_workers, thread_name_prefix="ingest-parse") as pool, ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="ingest-chunks"
    ) as chunk_pool:
        for contract in chosen:
            files = waiting(layout, contract, delivery_dates)
            if devices is None and contract.checks_devices:
                devices = raw_tables.known_keys(con)
            known = devices if contract.checks_devices else None
            todo = [p for p in files if not state.unchanged(str(p.relative_to(landing)), p)]
            # Reference snapshots are few and change the device list: no read-ahead for them.
            ahead = ReadAhead(pool, contract, todo, known, budget=0 if contract.reference else config.batch_bytes, config=config)
            batch: list[_Entry] = []
            batch_bytes = 0  # of the files with rows to write

            def flush() -> None:
                nonlocal batch_bytes
                if batch:
                    _commit_batch(con, contract, batch, config)
                    for e in batch:
                        report(e.outcome)
                    batch.clear()
                batch_bytes = 0

            for path in files:
                rel = str(path.relative_to(landing))
                if state.unchanged(rel, path):
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=state.last[rel].sha256, status="skipped"))
                    continue
                prepared = ahead.take(path)
                if prepared.sha and state.handled(rel, prepared.sha):  # touched, not changed
                    outcomes.append(FileOutcome(path=rel, contract=contract.name, sha256=prepared.sha, status="skipped"))
                    continue
                if contract.reference or prepared.streamed:
                    flush()
                    outcome = _load_alone(con, contract, path, rel, landing, prepared, known, state, chunk_pool, config)
                    if contract.reference and outcome.status == "loaded":  # new devices, hubs or categories
                        devices = None
                    state.note(outcome, path)
                    outcomes.append(outcome)
                    report(outcome)
                    continue
                entry = _batch_entry(contract, path, rel, prepared, known, state, start())
                state.note(entry.outcome, path)
                outcomes.append(entry.outcome)  # its counts are filled in when its batch commits
                batch.append(entry)
                batch_bytes += prepared.size if entry.parts else 0
                if batch_bytes >= config.batch_bytes:
                    flush()
            flush()
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
