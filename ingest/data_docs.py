"""Great Expectations Data Docs for the data team, built on demand, off the nightly path.

The nightly run validates each touched partition in memory (ephemeral GX context, blocking
Dagster checks: `ingest/expectations.py`, `ingest/partition_profile.py`). This module is the
human-readable side: the same suites run over each raw table's recent partitions (reference
tables whole), and their results written as a self-contained HTML site under
`<CIVICFLOW_HOME>/gx/data_docs/` (`ingest/data_docs_html.py`: GX's own site needs five CDNs)
plus the results as JSON beside it.

It reads a connection the caller opened read-only — the published snapshot, never the live
warehouse while a run writes it — one pandas frame per table (GX 1.x has no DuckDB engine:
DESIGN.md traps).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ingest.contracts import CONTRACTS, EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract
from ingest.data_docs_html import SuitePage, render_index, render_suite
from ingest.expectations import validate_frame
from ingest.partition_profile import validate_partitions
from warehouse.tables import table_exists


@dataclass
class TableDocs:
    contract: str
    suite: str
    rows_checked: int
    success: bool
    failed: list[str]  # "expectation(column): n of m rows unexpected"


@dataclass
class DataDocs:
    index_html: Path
    tables: list[TableDocs]


def _recent_dates(con: duckdb.DuckDBPyConnection, contract: Contract, days: int) -> list[str]:
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT event_date::VARCHAR FROM {contract.table} ORDER BY 1 DESC LIMIT ?", [days]).fetchall()]


def _page(con: duckdb.DuckDBPyConnection, contract: Contract, days: int, now: datetime) -> SuitePage | None:
    """Validate one table's recent partitions (a reference table whole): rows, then days."""
    if not table_exists(con, "raw", contract.name):
        return None
    if contract.reference or contract.event_time is None:
        frame, dates, scope = con.execute(f"SELECT * FROM {contract.table}").df(), [], "whole snapshot"
    else:
        dates = sorted(_recent_dates(con, contract, days))
        frame = con.execute(f"SELECT * FROM {contract.table} WHERE event_date::VARCHAR IN (SELECT unnest(?))", [dates]).df()
        scope = f"{len(dates)} latest partition(s): {dates[0]} … {dates[-1]}" if dates else "no partitions"
    outcomes = validate_frame(contract, frame, now=now) + validate_partitions(con, contract, dates, run_day=now.date())
    return SuitePage(contract.name, f"raw_{contract.name}", len(frame), scope, outcomes)


def build_data_docs(
    con: duckdb.DuckDBPyConnection,
    gx_root: Path,
    contracts: list[Contract] | None = None,
    days: int = 7,
    now: datetime | None = None,
    source: str = "the warehouse",
) -> DataDocs:
    """Validate the raw tables on `con` (a published snapshot, read-only) and (re)write the site.

    `days`: how many of the latest event dates of each event table to validate; freshness is
    judged against `now` (default: the clock). Returns the path of the site's index.html and
    a summary per table.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    chosen = contracts if contracts is not None else list(EVENT_CONTRACTS + REFERENCE_CONTRACTS)
    pages = [p for p in (_page(con, c, days, now) for c in chosen) if p is not None]
    site = gx_root / "data_docs"
    site.mkdir(parents=True, exist_ok=True)
    clock = datetime.now(UTC).replace(tzinfo=None)
    generated = f"validated {clock:%Y-%m-%d %H:%M} UTC" + ("" if now.date() == clock.date() else f", freshness as of {now:%Y-%m-%d}")
    for page in pages:
        (site / page.file_name).write_text(render_suite(page, source, generated))
    index = site / "index.html"
    index.write_text(render_index(pages, source, generated))
    results = [{"suite": p.suite, "table": f"raw.{p.contract}", "scope": p.scope, "rows_checked": p.rows_checked,
                "success": p.success, "results": [asdict(o) for o in p.outcomes]} for p in pages]
    (site / "validations.json").write_text(json.dumps({"validated_at": now.isoformat(), "source": source, "suites": results}, indent=1))
    return DataDocs(index_html=index, tables=[
        TableDocs(p.contract, p.suite, p.rows_checked, p.success, [o.describe() for o in p.failed]) for p in pages])


def quarantine_rows(con: duckdb.DuckDBPyConnection, contract: str | None = None, limit: int = 50) -> list[dict]:
    """The latest quarantined rows (file, line, field, reason, raw text), newest file first and
    each file's lines in order, whatever the contract. "Newest" is the file's delivery day (its
    landing folder `<source>/<day>/`; a reference file's: the day it was handled), then the order
    the loader handled the files (the manifest's strictly increasing `started_at`) — not
    `quarantined_at`: a rebuild replays every file in one run, so all its rows share one
    `quarantined_at`, and it loads source after source, so handling order alone would list every
    telemetry file before the pass scans of a later day."""
    if contract is not None and contract not in CONTRACTS:
        raise ValueError(f"unknown contract {contract!r}; one of {', '.join(CONTRACTS)}")
    if not table_exists(con, "raw", "_quarantine"):
        return []
    cur = con.execute(
        """SELECT q.contract, q.file_path, q.line, q.field, q.reason, q.raw_text, q.quarantined_at
           FROM raw._quarantine q
           LEFT JOIN (SELECT file_sha256, max(started_at) AS handled_at FROM raw._load_manifest
                      WHERE status = 'loaded' GROUP BY file_sha256) m USING (file_sha256)
           WHERE ? IS NULL OR q.contract = ?
           ORDER BY coalesce(try_cast(split_part(q.file_path, '/', 2) AS DATE), CAST(coalesce(m.handled_at, q.quarantined_at) AS DATE)) DESC,
                    coalesce(m.handled_at, q.quarantined_at) DESC, q.file_path DESC, q.line LIMIT ?""",
        [contract, contract, limit],
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
