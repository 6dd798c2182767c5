"""Great Expectations Data Docs for the data team, built on demand, off the nightly path.

The nightly run validates each touched partition in memory (ephemeral GX context, blocking
Dagster checks: `ingest/expectations.py`). This module is the human-readable side: a
file-mode GX project under `<CIVICFLOW_HOME>/gx/` holding the same contract suites, one
validation per raw table, and the HTML site GX renders from them.

It reads a connection the caller opened read-only — the published snapshot, never the live
warehouse while a run writes it — and validates each raw table's recent
partitions (reference tables whole), one pandas frame at a time (GX 1.x has no DuckDB
engine: DESIGN.md traps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ingest.contracts import CONTRACTS, EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract
from ingest.expectations import _gx, suite_for
from warehouse.tables import table_exists

DATASOURCE = "civicflow_raw"


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


def _frame(con: duckdb.DuckDBPyConnection, contract: Contract, days: int):
    if not table_exists(con, "raw", contract.name):
        return None
    if contract.reference or contract.event_time is None:
        return con.execute(f"SELECT * FROM {contract.table}").df()
    return con.execute(
        f"""SELECT * FROM {contract.table}
            WHERE event_date IN (SELECT DISTINCT event_date FROM {contract.table} ORDER BY event_date DESC LIMIT ?)""",
        [days],
    ).df()


def build_data_docs(
    con: duckdb.DuckDBPyConnection,
    gx_root: Path,
    contracts: list[Contract] | None = None,
    days: int = 7,
    now: datetime | None = None,
) -> DataDocs:
    """Validate the raw tables on `con` (a published snapshot, read-only) and (re)build the HTML site.

    `days`: how many of the latest event dates of each event table to validate.
    Returns the path of the site's index.html and a summary per table.
    """
    gx = _gx()
    now = now or datetime.now(UTC).replace(tzinfo=None)
    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    chosen = contracts if contracts is not None else list(EVENT_CONTRACTS + REFERENCE_CONTRACTS)
    tables: list[TableDocs] = []
    for contract in chosen:
        frame = _frame(con, contract, days)
        if frame is None:
            continue
        try:
            asset = source.get_asset(contract.name)
        except LookupError:
            asset = source.add_dataframe_asset(contract.name)
        try:
            batch_def = asset.get_batch_definition("recent")
        except (KeyError, LookupError):
            batch_def = asset.add_batch_definition_whole_dataframe("recent")
        suite = context.suites.add_or_update(suite_for(contract, now=now))
        validation = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"raw_{contract.name}", data=batch_def, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"raw_{contract.name}",
                validation_definitions=[validation],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        failed = []
        for run_result in result.run_results.values():
            for r in run_result.results:
                if not r.success:
                    cfg = r.expectation_config
                    column = cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list", []))
                    stats = r.result or {}
                    failed.append(
                        f"{cfg.type}({column}): {int(stats.get('unexpected_count') or 0)} of "
                        f"{int(stats.get('element_count') or len(frame))} rows unexpected"
                    )
        tables.append(TableDocs(contract.name, suite.name, len(frame), bool(result.success), failed))
    context.build_data_docs()
    index = gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    if not index.exists():  # GX decides the layout; ask it when it is not the usual one
        url = context.get_docs_sites_urls()[0]["site_url"]
        index = Path(url.removeprefix("file://"))
    return DataDocs(index_html=index, tables=tables)


def quarantine_rows(con: duckdb.DuckDBPyConnection, contract: str | None = None, limit: int = 50) -> list[dict]:
    """The latest quarantined rows (file, line, field, reason, raw text), newest file first and
    each file's lines in order. "Newest" is the order the loader handled the files (the
    manifest's strictly increasing `started_at`), not `quarantined_at`: a rebuild replays every
    file in one run, so all its rows share one `quarantined_at`."""
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
           ORDER BY coalesce(m.handled_at, q.quarantined_at) DESC, q.file_path DESC, q.line LIMIT ?""",
        [contract, contract, limit],
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
