"""The dbt project as Dagster assets: every model its own asset, every dbt test an asset check.

Policy (keys, groups, owners) lives in one translator, not in every model. The manifest is
built with `dbt parse` (never `dbt compile`, which would open the warehouse) when it is
missing or older than the project files.
"""


import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from ingest.config import stop_at
from pipelines.home import DBT_PROJECT_DIR, Home
from pipelines.partitions import context_dates, dbt_vars, single_run
from pipelines.resources import WRITER_POOL, WarehouseResource
from pipelines.scoped_env import scoped_env
from pipelines.unchanged import (
    StepState,
    check_outcomes,
    clear_state,
    digest,
    files_digest,
    output_metadata,
    raw_digest,
    read_state,
    report_unchanged,
    unchanged,
    whole_asset_selected,
    write_state,
)
from warehouse.tables import table_exists

OWNERS = {"staging": "team:data-platform", "intermediate": "team:analytics-engineering", "marts": "team:analytics-engineering"}


class CivicflowTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        # raw sources → raw/<table> (the ingest assets); models → <schema>/<model>.
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        return [OWNERS.get(dbt_resource_props.get("schema", ""), "team:analytics-engineering")]

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return dbt_resource_props.get("description") or f"dbt model {dbt_resource_props['name']}"


def dbt_project() -> DbtProject:
    # dbt is installed beside this interpreter; dagster-dbt looks for it on PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if _manifest_stale(project):
        project.preparer.prepare(project)
    return project


def project_files() -> list[Path]:
    """The files that make the dbt project (models, tests, seeds, macros, settings)."""
    return [p for ext in ("*.sql", "*.yml", "*.yaml", "*.csv") for p in DBT_PROJECT_DIR.rglob(ext) if "target" not in p.parts]


def _manifest_stale(project: DbtProject) -> bool:
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(p.stat().st_mtime > built for p in project_files())


DBT_STEP = "dbt"


def dbt_fingerprint(con) -> str:
    """Everything a full dbt build's result depends on (see pipelines.unchanged): what raw
    holds, the project, and the city's time zone. The dates to rebuild are not part of it: from
    the same raw tables, rebuilding any dates gives the rows the last full build left."""
    return digest([DBT_STEP, raw_digest(con), files_digest(project_files(), DBT_PROJECT_DIR), dbt_vars(None)])


def affected_dates(con, delivery_days: list) -> list:
    """Event dates touched by the files delivered on these days (late data), from the manifest."""
    if not table_exists(con, "raw", "_load_manifest"):
        return []
    rows = con.execute(
        """
        SELECT DISTINCT d FROM (
            SELECT unnest(affected_dates) AS d FROM raw._load_manifest
            WHERE status = 'loaded' AND try_cast(split_part(file_path, '/', 2) AS DATE) IN (SELECT unnest(?::DATE[]))
        ) WHERE d IS NOT NULL ORDER BY d
        """,
        [delivery_days],
    ).fetchall()
    return [r[0] for r in rows]


def reference_changed_since(con, since_epoch: float) -> bool:
    """Whether a new reference snapshot was loaded since `since_epoch` (it touches every date)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM raw._load_manifest WHERE source = 'reference' AND status = 'loaded' "
            "AND started_at >= make_timestamp((? * 1e6)::BIGINT)",
            [since_epoch],
        ).fetchone()[0]
    )


# dbt colours its console and its dbt.log by default: log files are read with less, grep and
# log shippers, where colour codes are noise.
PLAIN_DBT_LOGS = {"DBT_USE_COLORS": "false", "DBT_USE_COLORS_FILE": "false"}


# Per-run dbt folders kept under <home>/dbt for debugging (run_results.json, dbt.log, compiled SQL).
KEEP_DBT_RUNS = 3


def dbt_run_dir(home: str | Path, run_id: str) -> Path:
    """Where one run's dbt artifacts and log go: under the home, like everything a run writes.

    dagster-dbt's default is a new `target/<unique>` inside the project (with DBT_LOG_PATH set
    to the same folder), which grows the repository by a folder per run. Passing target_path
    moves both: dagster-dbt sets DBT_TARGET_PATH and DBT_LOG_PATH to it. A retried step of the
    same run reuses its folder."""
    return Home(Path(home)).dbt_run(run_id)


def prune_dbt_runs(parent: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` most recently written run folders; return the removed ones."""
    if not parent.is_dir():
        return []
    runs = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return runs[keep:]


def build_dbt_assets(project: DbtProject, partitions_def: dg.PartitionsDefinition, fault: str | None = None) -> dg.AssetsDefinition:
    """`fault` (crash tests only, `IngestConfig.fault`): `in_dbt` stops once dbt built its first model."""
    nodes = json.loads(Path(project.manifest_path).read_text())["nodes"]
    materialized = {uid: n.get("config", {}).get("materialized", "") for uid, n in nodes.items()}

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=CivicflowTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)),
        pool=WRITER_POOL,
        name="warehouse_dbt",
        partitions_def=partitions_def,
        backfill_policy=single_run,
    )
    def warehouse_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
        days = context_dates(context)
        run_started = context.instance.get_run_stats(context.run_id).start_time or 0
        whole = whole_asset_selected(context)
        with warehouse.connect(context) as con:  # closed again before dbt opens the file
            late = affected_dates(con, days)
            reference_changed = reference_changed_since(con, run_started)
            fingerprint = dbt_fingerprint(con)
            last = read_state(con, DBT_STEP)
            skip = unchanged(context, last, fingerprint)
            if not skip:
                clear_state(con, DBT_STEP)
        if skip:
            yield from report_unchanged(context, last, "no file loaded, no dbt project change")
            return
        if reference_changed:
            # New devices, hubs or events reshape every date: rebuild them all (no date vars;
            # city_tz is still passed).
            context.log.info("a reference snapshot changed in this run: rebuilding every date")
            build_vars = dbt_vars(None)
        else:
            build_vars = dbt_vars(days + late)
            context.log.info(f"dbt build for {len(days)} delivery day(s); rebuild_dates={','.join(build_vars['rebuild_dates'])}")
        args = ["build", "--vars", json.dumps(build_vars)]
        # Row counts are taken after dbt exits: dbt holds the warehouse file while it runs, so a
        # second connection (dagster-dbt's fetch_row_counts) would hit DuckDB's lock. Events are
        # buffered and a failing dbt test still lets the models that built report first.
        events, failure = [], None
        target = dbt_run_dir(warehouse.home, context.run_id)
        try:
            with scoped_env(warehouse.dbt_env() | PLAIN_DBT_LOGS):
                for event in dbt.cli(args, context=context, target_path=target).stream():
                    events.append(event)
                    stop_at(fault, "in_dbt")  # dbt is still running: its child holds the warehouse
        except Exception as exc:  # re-raised below, after the successful models are reported
            failure = exc
        finally:
            prune_dbt_runs(target.parent, keep=KEEP_DBT_RUNS)
        events = with_row_counts(context, warehouse, events, materialized)
        if failure is None and whole:
            with warehouse.connect(context) as con:
                write_state(con, DBT_STEP, StepState(fingerprint, context.run_id, check_outcomes(events), output_metadata(context, events)))
        yield from events
        if failure is not None:
            raise failure

    return warehouse_dbt


def with_row_counts(context: dg.AssetExecutionContext, warehouse: WarehouseResource, events: list, materialized: Mapping[str, str]) -> list:
    """Attach `dagster/row_count` to each built table or incremental model's Output.

    `materialized` maps a dbt unique_id to its materialization; views are not counted (a
    view's count re-runs its whole query)."""
    targets = {}
    for ev in events:
        if not isinstance(ev, dg.Output):
            continue
        unique_id = ev.metadata.get("unique_id")
        kind = materialized.get(getattr(unique_id, "value", unique_id) or "")
        if kind in ("table", "incremental"):
            key = context.asset_key_for_output(ev.output_name)
            targets[ev.output_name] = f'"{key.path[0]}"."{key.path[-1]}"'
    if not targets:
        return events
    counts = {}
    with warehouse.connect(context) as con:
        for name, relation in targets.items():
            try:
                counts[name] = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
            except Exception as exc:  # a model that failed to build has no table to count
                context.log.warning(f"row count of {relation} unavailable: {exc}")
    return [
        ev.with_metadata({**ev.metadata, "dagster/row_count": dg.MetadataValue.int(counts[ev.output_name])})
        if isinstance(ev, dg.Output) and ev.output_name in counts
        else ev
        for ev in events
    ]
