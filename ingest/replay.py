"""Replay the quarantine: re-validate quarantined rows against the contracts as they are now.

After a contract is fixed (a range that was too tight, a device registry that lagged),
the rows it refused sit in `raw._quarantine` with the text they arrived as. A replay runs
them through the loader's own line validation (`rules.validate_lines`) and key handling
(`raw_tables.insert_new_rows`), in one transaction per contract:

- a row that now passes is inserted into its raw table with its file's checksum and line,
  and leaves the quarantine; one whose natural key is already loaded with the same values
  leaves it too (it is loaded already) — so a second replay finds nothing to load;
- a row that still fails stays, with the reason the current contract gives;
- a row quarantined for repeating a loaded key with other values is not re-validated: no
  contract change makes it the row to keep.

The file's manifest row gets the moved rows (rows_loaded, rows_quarantined, affected_dates),
so the per-file counts stay true. Reference snapshots are not replayed: a snapshot is
replaced whole by its next delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import polars as pl

from ingest import raw_tables
from ingest.contracts import CONTRACTS, EVENT_CONTRACTS, Contract
from ingest.manifest import now_utc
from ingest.parsed import KnownKeys
from ingest.rules import validate_lines

KEY_CONFLICT = "changed value under an existing natural key"  # the start of raw_tables._changed's reasons


@dataclass
class ReplaySummary:
    contract: str
    revalidated: int = 0
    loaded: int = 0
    already_loaded: int = 0  # passed, and their key was in the table with the same values
    still_quarantined: int = 0
    reasons_changed: int = 0  # still bad, for another reason than before
    delivery_days: set[date] = field(default_factory=set)  # of the files they came in: the days whose run rebuilds them


def _quarantined(con: duckdb.DuckDBPyConnection, contract: Contract) -> pl.DataFrame:
    """The contract's quarantined rows a replay re-validates, with their rowid (their identity
    here), in the order the loader handled their files and lines: of two rows with one key,
    the one delivered first is loaded, as the loader would have."""
    return con.execute(
        """SELECT q.rowid AS qid, q.file_path, q.file_sha256, q.line, q.field, q.reason, q.raw_text
           FROM raw._quarantine q
           LEFT JOIN (SELECT file_sha256, min(started_at) AS handled_at FROM raw._load_manifest
                      WHERE status = 'loaded' GROUP BY file_sha256) m USING (file_sha256)
           WHERE q.contract = ? AND q.raw_text IS NOT NULL AND NOT starts_with(q.reason, ?)
           ORDER BY m.handled_at NULLS LAST, q.file_path, q.line""",
        [contract.name, KEY_CONFLICT],
    ).pl()


def _replay_one(con: duckdb.DuckDBPyConnection, contract: Contract, known: KnownKeys | None) -> ReplaySummary:
    summary = ReplaySummary(contract.name)
    rows = _quarantined(con, contract)
    summary.revalidated = rows.height
    if not rows.height:
        return summary
    # Validated as one chunk of lines numbered by their place here, mapped back afterwards.
    frame = rows.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("line"), pl.col("raw_text").alias("raw"))
    result = validate_lines(contract, frame, known)
    origin = rows.with_row_index("__i").with_columns(pl.col("__i").cast(pl.Int64))
    good = result.good.join(origin.select("__i", "file_sha256", pl.col("line").alias("__line"), "qid"), left_on="_line", right_on="__i")
    gone: list[int] = []  # rowids of the rows that leave the quarantine
    if good.height:
        # Back to its file's checksum and line; `__f` is each row's own place, so what
        # insert_new_rows reports maps back to one quarantine row.
        tagged = good.with_columns(
            pl.col("__line").alias("_line"), pl.col("file_sha256").alias("_file_sha256"),
            pl.int_range(pl.len(), dtype=pl.Int32).alias("__f"),
        ).drop("__line")
        new, changed = raw_tables.insert_new_rows(con, contract, tagged, now_utc())
        places = tagged.select("__f", "qid", "file_sha256", "event_date")
        inserted = pl.col("__f").is_in(new["__f"].implode())
        conflicted = pl.col("__f").is_in(changed["__f"].implode())
        moved, duplicates = places.filter(inserted), places.filter(~inserted & ~conflicted)
        gone = moved["qid"].to_list() + duplicates["qid"].to_list()
        summary.loaded, summary.already_loaded = moved.height, duplicates.height
        # A key loaded meanwhile with other values: stays, with the conflict as its reason.
        _set_reasons(con, changed.join(places, on="__f").select("qid", "field", "reason"))
        _count_in_manifest(con, moved, "rows_loaded")
        _count_in_manifest(con, duplicates, "rows_duplicate")
        files = rows.filter(pl.col("qid").is_in(moved["qid"].implode()))["file_path"]
        summary.delivery_days = {d for d in map(_delivery_day, files) if d is not None}
    bad = result.bad.join(origin.select("__i", "qid", pl.col("reason").alias("__was")), left_on="line", right_on="__i")
    summary.reasons_changed = bad.filter(pl.col("reason") != pl.col("__was")).height
    _set_reasons(con, bad.select("qid", "field", "reason"))
    if gone:
        qids = pl.DataFrame({"qid": gone}).to_arrow()  # noqa: F841 (read by name in the SQL)
        con.execute("DELETE FROM raw._quarantine WHERE rowid IN (SELECT qid FROM qids)")
    summary.still_quarantined = con.execute("SELECT count(*) FROM raw._quarantine WHERE contract = ?", [contract.name]).fetchone()[0]
    return summary


def _delivery_day(file_path: str) -> date | None:
    """`transactions/2026-01-05/x.jsonl` → 2026-01-05 (event files sit in a folder per delivery day)."""
    parts = file_path.split("/")
    try:
        return date.fromisoformat(parts[1]) if len(parts) > 2 else None
    except ValueError:
        return None


def _set_reasons(con: duckdb.DuckDBPyConnection, update: pl.DataFrame) -> None:
    """Give quarantined rows (by rowid) the field and reason the current contract reports."""
    if not update.height:
        return
    reasons = update.to_arrow()  # noqa: F841 (read by name in the SQL)
    con.execute(
        """UPDATE raw._quarantine q SET field = r.field, reason = r.reason
           FROM reasons r WHERE q.rowid = r.qid AND (q.reason IS DISTINCT FROM r.reason OR q.field IS DISTINCT FROM r.field)"""
    )


def _count_in_manifest(con: duckdb.DuckDBPyConnection, moved: pl.DataFrame, column: str) -> None:
    """Move rows that left the quarantine to `column` (rows_loaded, rows_duplicate) on their
    file's manifest row; loaded rows add their dates to its affected dates."""
    if not moved.height:
        return
    per_file = moved.group_by("file_sha256").agg(pl.len().alias("n"), pl.col("event_date").unique().alias("dates")).to_arrow()  # noqa: F841
    dates = "list_sort(list_distinct(list_concat(coalesce(m.affected_dates, []), p.dates)))" if column == "rows_loaded" else "m.affected_dates"
    con.execute(
        f"""UPDATE raw._load_manifest m SET {column} = coalesce(m.{column}, 0) + p.n,
               rows_quarantined = greatest(coalesce(m.rows_quarantined, 0) - p.n, 0), affected_dates = {dates}
           FROM per_file p WHERE m.file_sha256 = p.file_sha256 AND m.status = 'loaded'"""
    )


def replay_quarantine(
    con: duckdb.DuckDBPyConnection,
    source: str | None = None,
    dry_run: bool = False,
    contracts: dict[str, Contract] | None = None,
) -> list[ReplaySummary]:
    """Replay the quarantined rows of every event contract (or those of one source), one
    transaction per contract; `dry_run` computes the same summary and rolls it back.

    `contracts`: the contracts to judge by (default the current ones), by name."""
    current = contracts if contracts is not None else CONTRACTS
    chosen = [current[c.name] for c in EVENT_CONTRACTS if source is None or c.source == source]
    if source is not None and not chosen:
        sources = sorted({c.source for c in EVENT_CONTRACTS})
        raise ValueError(f"unknown source {source!r}; one of {', '.join(sources)}")
    raw_tables.ensure_raw_schema(con)
    known = raw_tables.known_keys(con)
    out = []
    for contract in chosen:
        con.execute("BEGIN TRANSACTION")
        try:
            out.append(_replay_one(con, contract, known if contract.checks_devices else None))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("ROLLBACK" if dry_run else "COMMIT")
    return out
