"""The nightly run as a service: execute the nightly job through Dagster for a day or a range,
and report what it did. The CLI, the tests and the benchmarks all run nights through here."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pipelines.delivery_days import days_to_run
from pipelines.home import Home, prepare_home
from pipelines.instance_storage import EVENT_BATCHING
from pipelines.run_lock import home_run_lock
from pipelines.scoped_env import scoped_env
from pipelines.settings import Settings
from pipelines.stale_runs import clean_partial_copies, clean_spill, free_dead_runs, live_slot_holders, own_process_tags, stop_orphans
from pipelines.unchanged import REBUILD_TAG
from warehouse.backends import backend_for
from warehouse.tables import table_exists


@dataclass
class RunReport:
    run_id: str
    success: bool
    seconds: float
    ingest: list[dict] = field(default_factory=list)  # per contract: this run's loaded / duplicate / quarantined / refused
    marts: list[str] = field(default_factory=list)
    series: int = 0
    plan_rows: int = 0
    plan_path: str = ""
    snapshot: str = ""
    failure: str = ""
    log_path: str = ""
    recovered: list[str] = field(default_factory=list)  # one line per slot freed / copy cleaned before the run
    unchanged_since: dict[str, str] = field(default_factory=dict)  # "marts" / "forecasts" → the run whose result stands


def partition_tags(first: date, last: date) -> dict[str, str]:
    """Run tags that make one Dagster run cover the days first..last (one partition or a range)."""
    if first == last:
        return {"dagster/partition": first.isoformat()}
    return {"dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat()}


# A ranged run records, when it is created, one "materialization planned" event per asset per
# day: 5,160 for the demo's 120 days, 40 % of its night spent before the first step. With this
# Dagster switch it records one per asset for the whole range. What it costs: when a ranged run
# fails, its days show as missing in the UI rather than failed (the run itself shows failed).
ONE_PLANNED_EVENT_PER_RANGE = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}


def open_instance(settings: Settings):
    """The home's Dagster instance (its dagster.yaml written first), without DAGSTER_HOME."""
    import dagster as dg

    home = prepare_home(settings.home, settings.dagster_pg_url)
    return dg.DagsterInstance.from_config(str(home.dagster))


OnStep = Callable[[str, str, "float | None"], None]  # (step, "start" | "success" | "failure", seconds)


def _watch_steps(instance, after: float, on_step: OnStep, stop: threading.Event) -> None:
    """Report the steps of the nightly run started after `after` as they start and finish, read
    from the instance's event log (the job runs in this process; its events are committed as
    they happen). Once `stop` is set it reads once more, for the run's last steps."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START: "start", dg.DagsterEventType.STEP_SUCCESS: "success", dg.DagsterEventType.STEP_FAILURE: "failure"}
    run_id, seen, started = None, 0, {}
    while True:
        last_pass = stop.wait(1.0)
        try:
            if run_id is None:
                records = instance.get_run_records(dg.RunsFilter(job_name="nightly", created_after=datetime.fromtimestamp(after, UTC)), limit=1)
                run_id = records[0].dagster_run.run_id if records else None
            entries = instance.all_logs(run_id, of_type=set(kinds)) if run_id else []
        except Exception:  # a busy SQLite file: try again on the next tick
            entries = None
        for entry in (entries or [])[seen:]:
            kind, step = kinds[entry.dagster_event.event_type], entry.step_key or "?"
            if kind == "start":
                started[step] = entry.timestamp
            on_step(step, kind, entry.timestamp - started[step] if step in started and kind != "start" else None)
        if entries:
            seen = len(entries)
        if last_pass:
            return


def run_nightly(
    settings: Settings, days: tuple[date, date] | None = None, horizon_days: int = 1, log_level: str = "WARNING",
    on_step: OnStep | None = None, rebuild: bool = False,
) -> RunReport:
    """Execute the nightly job through Dagster (the same job the schedule launches) for a day or
    a range; without `days`, every delivery day in the landing zone, as one run. `on_step` hears
    each step start and finish. A step whose inputs are as its last success left them reports
    that result instead of redoing it (pipelines.unchanged), unless `rebuild`.

    One run per home at a time (`RunInProgress` for the second); before it starts, slots held
    by runs that died are freed and the copies a killed publish left are removed."""
    with home_run_lock(settings.home.root):
        return _run_locked(settings, days, horizon_days, log_level, on_step, rebuild)


def recover(instance, home: Home) -> list[str]:
    """Free what dead runs left behind; one line for each thing done: their warehouse slots,
    the dbt processes they left running, partial snapshot copies and DuckDB spill files."""
    freed = free_dead_runs(instance)
    lines = [f.line() for f in freed]
    lines += [f"stopped dbt process {pid}, left running by a dead run" for pid in stop_orphans({str(home.dbt_run(f.run_id)) for f in freed})]
    if not live_slot_holders(instance):
        lines += [f"removed a partial snapshot copy {p.name}" for p in clean_partial_copies(home.published)]
        spilled = clean_spill(home.spill)
        if spilled:
            lines.append(f"removed {len(spilled)} DuckDB spill file(s) left in {home.spill.name}")
    return lines


def _run_locked(
    settings: Settings, days: tuple[date, date] | None, horizon_days: int, log_level: str, on_step: OnStep | None,
    rebuild: bool = False,
) -> RunReport:
    import dagster as dg

    home = settings.home
    days, delivered = days_to_run(home, settings.schedule.start_date, days)
    started = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    run_config = {
        "ops": {"nightly_forecast": {"config": {"horizon_days": horizon_days}}},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    with open_instance(settings) as instance:
        recovered = recover(instance, home)
        home.logs.mkdir(parents=True, exist_ok=True)
        log_path = home.logs / f"nightly-{started:%Y%m%dT%H%M%S%f}-{os.getpid()}.log"
        # dbt's event stream goes to stdout: keep it in a log file, the terminal gets the summary.
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_steps, args=(instance, time.time() - 1, on_step, stop), daemon=True) if on_step else None
        if watcher:
            watcher.start()
        with log_path.open("w") as log, redirect_stdout(log), scoped_env(EVENT_BATCHING | (ONE_PLANNED_EVENT_PER_RANGE if days[0] != days[1] else {})):
            try:
                result = dg.execute_job(
                    dg.build_reconstructable_job(
                        "pipelines.definitions", "nightly_job_def",
                        reconstructable_kwargs={"home_root": str(home.root), "last_day": delivered[1].isoformat() if delivered else None},
                    ),
                    instance=instance,
                    run_config=run_config,
                    tags=partition_tags(*days) | own_process_tags() | ({REBUILD_TAG: "true"} if rebuild else {}),
                )
            finally:
                stop.set()
                if watcher:
                    watcher.join()
            report = _report(result, time.perf_counter() - t0, str(log_path))
            report.recovered = recovered
    report.ingest = ingest_report(settings, since=started)
    return report


def _report(result, seconds: float, log_path: str) -> RunReport:
    report = RunReport(run_id=result.run_id, success=result.success, seconds=seconds, log_path=log_path)
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        key = mat.asset_key.path
        if key[0] == "marts" and key[-1] not in report.marts:  # one event per partition
            report.marts.append(key[-1])
        md = {k: v.value for k, v in mat.metadata.items()}
        if "unchanged_since_run" in md:  # pipelines.unchanged: the step found its inputs as they were
            report.unchanged_since.setdefault(key[0], str(md["unchanged_since_run"]))
        if key == ["forecasts", "demand_forecast"]:
            report.series = int(md.get("series", 0))
        if key == ["forecasts", "staging_plan"]:
            report.plan_rows, report.plan_path = int(md.get("plan_rows", 0)), str(md.get("plan_path", ""))
        if key == ["published", "warehouse_snapshot"]:
            report.snapshot = str(md.get("snapshot", ""))
    if not result.success:
        failures = [f"{e.step_key}: {e.event_specific_data.error.message.strip()}" for e in result.get_step_failure_events()]
        report.failure = "\n".join(failures) or "run failed"
    return report


def ingest_report(settings: Settings, since: datetime) -> list[dict]:
    """This run's ingest per contract, read from the manifest (the warehouse is closed by now)."""
    backend = backend_for(settings.warehouse)
    if not backend.exists():
        return []
    con = backend.connect(read_only=True)
    try:
        if not table_exists(con, "raw", "_load_manifest"):
            return []  # ingest never got as far as its manifest (the failure is in the report)
        rows = con.execute(
            """
            SELECT contract,
                   count(*) FILTER (WHERE status = 'loaded') AS files_loaded,
                   coalesce(sum(rows_loaded), 0) AS rows_loaded,
                   coalesce(sum(rows_duplicate), 0) AS rows_duplicate,
                   coalesce(sum(rows_quarantined), 0) AS rows_quarantined,
                   count(*) FILTER (WHERE status = 'duplicate_file') AS files_redelivered,
                   count(*) FILTER (WHERE status = 'refused') AS files_refused,
                   string_agg(CASE WHEN status = 'refused' THEN file_path || ': ' || regexp_replace(reason, '^[^:]*: ', '') END, '\n') AS refusals
            FROM raw._load_manifest WHERE started_at >= ? GROUP BY contract ORDER BY contract
            """,
            [since],
        ).fetchall()
        cols = [d[0] for d in con.description]
        return [dict(zip(cols, r)) for r in rows]
    finally:
        con.close()


def rebuild_warehouse(settings: Settings, log_level: str = "WARNING") -> tuple[str | None, RunReport]:
    """Set the live warehouse aside and replay the landing archive into a fresh one.

    The landing zone keeps every delivered file (loaded or refused), so it is the raw archive:
    one run over all its delivery days loads the files in their delivery order, and dbt, the
    forecast and the publish step rebuild everything from them. What was set aside is kept
    (a file under `recovered/`, or the lake's earlier version) and described in the result."""
    with home_run_lock(settings.home.root):
        kept = backend_for(settings.warehouse).reset(settings.home.root / "recovered")
        return kept, _run_locked(settings, None, 1, log_level, None, rebuild=True)
