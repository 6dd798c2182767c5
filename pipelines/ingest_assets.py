"""Ingest assets: one per source, each loading its new landed files into `raw.*`.

Asset keys are `raw/<table>`, the same keys dbt's sources map to, so the lineage runs from
the landing zone through the marts without glue.
"""


import time
from datetime import date
from pathlib import Path

import dagster as dg

from ingest.config import IngestConfig
from ingest.contracts import CLEARING, CONTRACTS, PASS_SCANS, REFERENCE_CONTRACTS, TELEMETRY, TRANSACTIONS, Contract
from ingest.expectations import merge_outcomes, validate_frame
from ingest.loader import load_landing, summarise
from ingest.partition_profile import validate_partitions
from ingest.raw_tables import BATCH_HEADERS_TABLE
from ingest.read_ahead import pack_in_order
from pipelines.partitions import context_dates, single_run
from pipelines.resources import WRITER_POOL, WarehouseResource

OWNER = "team:data-platform"
SOURCES: dict[str, tuple[Contract, ...]] = {
    "reference": REFERENCE_CONTRACTS,
    "telemetry": (TELEMETRY,),
    "pass_scans": (PASS_SCANS,),
    "settlement": (TRANSACTIONS, CLEARING),
}


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


BATCH_HEADERS_KEY = raw_key(BATCH_HEADERS_TABLE.split(".")[-1])


class LandingConfig(dg.Config):
    landing_dir: str = ""  # empty: CIVICFLOW_HOME/landing


def _specs(source: str, contracts: tuple[Contract, ...]) -> list[dg.AssetSpec]:
    deps = [] if source == "reference" else [raw_key("devices")]
    specs = [
        dg.AssetSpec(
            raw_key(c.name),
            description=f"{c.description} Loaded effectively-once from landing/{c.name if not c.reference else 'reference/' + c.name}.",
            group_name="ingest",
            owners=[OWNER],
            deps=deps,
            skippable=True,
            metadata={"natural_key": ", ".join(c.natural_key), "max_reject_ratio": c.max_reject_ratio},
            kinds={"duckdb", "polars"},
        )
        for c in contracts
    ]
    for c in contracts:
        if not c.has_batch_header:
            continue
        specs.append(
            dg.AssetSpec(
                BATCH_HEADERS_KEY,
                description="Clearing batch headers (count and sum each batch promised).",
                group_name="ingest",
                owners=[OWNER],
                deps=deps,
                skippable=True,
                kinds={"duckdb"},
            )
        )
    return specs


GX_CHECK = "great_expectations"


def _check_specs(contracts: tuple[Contract, ...]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            GX_CHECK,
            asset=raw_key(c.name),
            blocking=True,
            description=(
                f"Great Expectations suites from the {c.name} contract on the partitions this run touched: each row "
                "(nulls, allowed values, ranges, key uniqueness) and each day as a whole (volume against the source's "
                "last 28 days, the contract's daily means, medians and shares, freshness against the run's day)."
            ),
        )
        for c in contracts
    ]


# A full rebuild touches every date of the year: the rows are validated in frames of about
# this many, one after the other (pandas under GX holds a frame several times over). One frame
# of all of them took the large city's run past 24 GB.
GX_ROWS_PER_FRAME = 500_000


def _date_groups(con, table: str, dates: list[str]) -> list[list[str]]:
    """The dates in order, grouped so each group holds at most GX_ROWS_PER_FRAME rows (a date
    with more is a group of its own)."""
    counts = con.execute(
        f"SELECT event_date::VARCHAR, count(*) FROM {table} WHERE event_date::VARCHAR IN (SELECT unnest(?)) GROUP BY 1 ORDER BY 1",
        [dates],
    ).fetchall()
    return pack_in_order(counts, GX_ROWS_PER_FRAME)


def unchanged(contract: Contract) -> dg.AssetCheckResult:
    """The check of a table this run loaded nothing into: its rows are the ones an earlier run
    validated before loading them, so validating them again (seconds of Great Expectations on
    every quiet night) would say nothing new."""
    return dg.AssetCheckResult(
        asset_key=raw_key(contract.name),
        check_name=GX_CHECK,
        passed=True,
        severity=dg.AssetCheckSeverity.ERROR,
        description="nothing loaded this run: the rows are those validated when they were loaded",
        metadata={"scope": dg.MetadataValue.text("nothing new"), "rows_checked": dg.MetadataValue.int(0)},
    )


def gx_check(con, contract: Contract, dates: list[str], run_day: date | None = None) -> dg.AssetCheckResult:
    """Validate the rows of the dates a run touched (reference tables: the whole snapshot), in
    frames of bounded size, then each of those dates as a whole (`ingest/partition_profile.py`;
    freshness against `run_day`, the run's last partition day, when given). Key uniqueness is
    checked within a frame: keys that repeat across dates are the loader's to refuse (it
    inserts a natural key once)."""
    if contract.reference:
        frames = [lambda: con.execute(f"SELECT * FROM {contract.table}").df()]
        scope = "whole snapshot"
    else:
        if not dates:  # nothing new: check the latest partition so the check still says something
            last = con.execute(f"SELECT max(event_date)::VARCHAR FROM {contract.table}").fetchone()[0]
            dates = [last] if last else []
        frames = [
            lambda g=group: con.execute(f"SELECT * FROM {contract.table} WHERE event_date::VARCHAR IN (SELECT unnest(?))", [g]).df()
            for group in _date_groups(con, contract.table, dates)
        ]
        scope = f"{len(dates)} partition(s): {', '.join(dates[:5])}{' …' if len(dates) > 5 else ''}"
    parts, rows = [], 0
    for read in frames:
        frame = read()
        rows += len(frame)
        if len(frame):
            parts.append(validate_frame(contract, frame))
        del frame
    outcomes = merge_outcomes(parts) + validate_partitions(con, contract, dates, run_day)
    failed = [o for o in outcomes if not o.success]
    return dg.AssetCheckResult(
        asset_key=raw_key(contract.name),
        check_name=GX_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(o.describe() for o in failed) or None,
        metadata={
            "scope": dg.MetadataValue.text(scope),
            "rows_checked": dg.MetadataValue.int(rows),
            "frames": dg.MetadataValue.int(len(parts)),
            "expectations": dg.MetadataValue.int(len(outcomes)),
            "failed": dg.MetadataValue.md("\n".join(f"- {o.describe()}" for o in failed) or "none"),
        },
    )


def build_ingest_asset(
    source: str, contracts: tuple[Contract, ...], landing_default: Path, partitions_def: dg.PartitionsDefinition, ingest_config: IngestConfig
) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=f"ingest_{source}",
        specs=_specs(source, contracts),
        check_specs=_check_specs(contracts),
        pool=WRITER_POOL,
        partitions_def=partitions_def,
        backfill_policy=single_run,
        can_subset=True,
        description=f"Load the {source} files delivered on the partition's days (SHA-256 once-only, bad rows quarantined).",
    )
    def _ingest(context: dg.AssetExecutionContext, config: LandingConfig, warehouse: WarehouseResource):
        landing = Path(config.landing_dir) if config.landing_dir else landing_default
        chosen = [
            c for c in contracts
            if raw_key(c.name) in context.selected_asset_keys or (c.has_batch_header and BATCH_HEADERS_KEY in context.selected_asset_keys)
        ]
        with warehouse.connect(context) as con:
            progress = _Progress(context)
            outcomes = load_landing(con, landing, chosen, on_file=progress.file_done, delivery_dates=set(context_dates(context)), config=ingest_config)
            progress.log(skipped=sum(o.status == "skipped" for o in outcomes))
            totals = {
                c.name: con.execute(f"SELECT count(*) FROM {c.table}").fetchone()[0] for c in chosen
            }
            if any(c.has_batch_header for c in chosen):
                totals[BATCH_HEADERS_KEY.path[-1]] = con.execute(f"SELECT count(*) FROM {BATCH_HEADERS_TABLE}").fetchone()[0]
            loaded = {o.contract for o in outcomes if o.status == "loaded"}
            checks = [
                gx_check(con, CONTRACTS[key.path[-1]], sorted({d.isoformat() for o in outcomes if o.contract == key.path[-1] for d in o.affected_dates}),
                         run_day=max(context_dates(context)))
                if key.path[-1] in loaded else unchanged(CONTRACTS[key.path[-1]])
                for key in sorted(context.selected_asset_keys, key=str)
                if key.path[-1] in CONTRACTS
            ]
        summary = {r["contract"]: r for r in summarise(outcomes).to_dicts()}
        for key in sorted(context.selected_asset_keys, key=str):
            table = key.path[-1]
            s = summary.get(table, {})
            refused = [o for o in outcomes if o.contract == table and o.status == "refused"]
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "rows_total": dg.MetadataValue.int(int(totals.get(table, 0))),
                    "rows_loaded": dg.MetadataValue.int(int(s.get("rows_loaded", 0))),
                    "rows_duplicate": dg.MetadataValue.int(int(s.get("rows_duplicate", 0))),
                    "rows_quarantined": dg.MetadataValue.int(int(s.get("rows_quarantined", 0))),
                    "files_loaded": dg.MetadataValue.int(int(s.get("files_loaded", 0))),
                    "files_refused": dg.MetadataValue.int(len(refused)),
                    "refused": dg.MetadataValue.md("\n".join(f"- `{o.path}`: {o.reason}" for o in refused) or "none"),
                    "affected_dates": dg.MetadataValue.text(
                        ",".join(sorted({d.isoformat() for o in outcomes if o.contract == table for d in o.affected_dates}))
                    ),
                },
            )
        yield from checks

    return _ingest


class _Progress:
    """The ingest step's log: every refusal at once (a person must act on it), the rest as one
    line at most every LOG_EVERY_S seconds and one at the end. A line per file was one
    event-log commit per file (tens of ms each on SQLite, bench/bench_event_log.py), and a
    year of the medium city is 5,100 files (docs/scaling.md)."""

    LOG_EVERY_S = 10.0

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self.context, self.last = context, time.monotonic()
        self.files = self.loaded = self.duplicate = self.quarantined = self.refused = 0

    def file_done(self, outcome) -> None:
        self.files += 1
        if outcome.status == "refused":
            self.refused += 1
            self.context.log.warning(f"refused {outcome.path}: {outcome.reason}")
        self.loaded += outcome.loaded or 0
        self.duplicate += outcome.duplicate or 0
        self.quarantined += outcome.quarantined or 0
        if time.monotonic() - self.last >= self.LOG_EVERY_S:
            self.log()

    def log(self, skipped: int | None = None) -> None:
        """A progress line; the closing one (skipped given) also counts the files earlier runs loaded."""
        self.last = time.monotonic()
        self.context.log.info(
            f"{'so far' if skipped is None else 'done'}: {self.files:,} files read ({self.refused} refused), "
            f"{self.loaded:,} rows loaded, {self.duplicate:,} duplicate, {self.quarantined:,} quarantined"
            + ("" if skipped is None else f"; {skipped:,} files already loaded by earlier runs")
        )


def build_ingest_assets(landing_default: Path, partitions_def: dg.PartitionsDefinition, config: IngestConfig) -> list[dg.AssetsDefinition]:
    return [build_ingest_asset(source, contracts, landing_default, partitions_def, config) for source, contracts in SOURCES.items()]
