"""The `civicflow` command: simulate a city, run the nightly job through Dagster, open the UI."""

from __future__ import annotations

import importlib
import os
from contextlib import redirect_stdout
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.home import PROJECT_ROOT, Home, prepare_home
from pipelines.options import HomeOpt, resolve_home

app = typer.Typer(help="civicflow: smart-city data pipeline and analytics warehouse.", no_args_is_help=True, add_completion=False)
console = Console()

_home = resolve_home


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


def landing_days(home: Home) -> tuple[date, date] | None:
    """First and last delivery day found in the landing zone (the default range of `run`)."""
    from ingest.loader import delivery_date

    days = sorted({d for p in home.landing.glob("*/*/") if (d := delivery_date(p / "x")) is not None})
    return (days[0], days[-1]) if days else None


def partition_tags(first: date, last: date) -> dict[str, str]:
    """Run tags that make one Dagster run cover the days first..last (one partition or a range)."""
    if first == last:
        return {"dagster/partition": first.isoformat()}
    return {"dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat()}


def run_nightly(
    home: Home, days: tuple[date, date] | None = None, horizon_days: int = 1, log_level: str = "WARNING"
) -> RunReport:
    """Execute the nightly job through Dagster (the same job the schedule launches) for a day or a range.

    Without `days`, the range is every delivery day in the landing zone, as one run.
    """
    import dagster as dg

    prepare_home(home)
    module = sys.modules.get("pipelines.definitions")
    if module is not None and module.home != home:  # another home in this process: rebuild the defs
        importlib.reload(module)
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    t0 = time.perf_counter()
    run_config = {
        "ops": {"nightly_forecast": {"config": {"horizon_days": horizon_days}}},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    log_path = home.root / "logs" / f"nightly-{started:%Y%m%dT%H%M%S}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # dbt's event stream goes to stdout: keep it in a log file, the terminal gets the summary.
    days = days or landing_days(home)
    if days is None:
        raise typer.BadParameter(f"no delivered files in {home.landing}: run `civicflow simulate` or deliver files first")
    with dg.DagsterInstance.get() as instance, log_path.open("w") as log, redirect_stdout(log):
        result = dg.execute_job(
            dg.build_reconstructable_job("pipelines.definitions", "nightly_job_def", reconstructable_kwargs={"home_root": str(home.root)}),
            instance=instance,
            run_config=run_config,
            tags=partition_tags(*days),
        )
        report = RunReport(run_id=result.run_id, success=result.success, seconds=time.perf_counter() - t0, log_path=str(log_path))
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            key = mat.asset_key.path
            if key[0] == "marts" and key[-1] not in report.marts:  # one event per partition
                report.marts.append(key[-1])
            md = {k: v.value for k, v in mat.metadata.items()}
            if key == ["forecasts", "demand_forecast"]:
                report.series = int(md.get("series", 0))
            if key == ["forecasts", "staging_plan"]:
                report.plan_rows, report.plan_path = int(md.get("plan_rows", 0)), str(md.get("plan_path", ""))
            if key == ["published", "warehouse_snapshot"]:
                report.snapshot = str(md.get("snapshot", ""))
        if not result.success:
            failures = [f"{e.step_key}: {e.event_specific_data.error.message.strip()}" for e in result.get_step_failure_events()]
            report.failure = "\n".join(failures) or "run failed"
    report.ingest = ingest_report(home, since=started)
    return report


def ingest_report(home: Home, since: datetime) -> list[dict]:
    """This run's ingest per contract, read from the manifest (the warehouse is closed by now)."""
    from pipelines.warehouse import exists, open_warehouse, warehouse_at

    wh = warehouse_at(home.warehouse)
    if not exists(wh):
        return []
    con = open_warehouse(wh, read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = '_load_manifest'").fetchone()[0]:
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


def print_report(report: RunReport, home: Home) -> None:
    table = Table(title="Ingest (this run)", title_justify="left")
    for col in ("contract", "files", "rows", "duplicate", "quarantined", "re-sent", "refused"):
        table.add_column(col, justify="right" if col != "contract" else "left")
    for r in report.ingest:
        table.add_row(
            r["contract"], str(r["files_loaded"]), f"{r['rows_loaded']:,}", f"{r['rows_duplicate']:,}",
            f"{r['rows_quarantined']:,}", str(r["files_redelivered"]), str(r["files_refused"]),
        )
    if not report.ingest:
        table.add_row("(no new files)", "0", "0", "0", "0", "0", "0")
    console.print(table)
    for r in report.ingest:
        if r["refusals"]:
            console.print(f"[yellow]refused {r['contract']} files (kept in the landing zone):[/yellow]\n{r['refusals']}")
    status = "[green]succeeded[/green]" if report.success else "[red]FAILED[/red]"
    console.print(f"Nightly run {report.run_id} {status} in {report.seconds:.1f} s")
    if report.failure:
        console.print(f"[red]{report.failure}[/red]")
    console.print(f"Marts built: {len(report.marts)} ({', '.join(sorted(report.marts))})")
    console.print(f"Series forecast: {report.series}; staging plan rows: {report.plan_rows}")
    console.print(f"Staging plan: {report.plan_path}")
    console.print(f"Published snapshot: {report.snapshot}")
    console.print(f"Run log (dbt output): {report.log_path}")
    console.print(
        f"Dagster UI on this home: [bold]make ui[/bold] (or CIVICFLOW_HOME={home.root} civicflow ui), then open http://127.0.0.1:3000"
    )


@app.command()
def simulate(
    out: Annotated[Path | None, typer.Option(help="Landing zone to write into (default: <home>/landing).")] = None,
    size: Annotated[str, typer.Option(help="tiny | small | medium | large")] = "small",
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 120,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2026-01-01",
    seed: Annotated[int, typer.Option(help="Random seed: same arguments give byte-identical files.")] = 7,
    append: Annotated[bool, typer.Option("--append", help="Add the next DAYS days after the last simulated day.")] = False,
    home: HomeOpt = None,
) -> None:
    """Write a synthetic city's device files (and its ground truth) into a landing zone."""
    from ingest.simulator import simulate as run_simulation

    h = _home(home)
    target = out or h.landing
    summary = run_simulation(target, size=size, days=days, start=date.fromisoformat(start), seed=seed, append=append, progress=True)
    _print_simulation(summary)


def _print_simulation(summary) -> None:
    if hasattr(summary, "as_table"):
        console.print(summary.as_table())
    else:
        console.print(summary)


@app.command()
def run(
    day: Annotated[str | None, typer.Option("--date", help="Run one delivery day (YYYY-MM-DD).")] = None,
    first: Annotated[str | None, typer.Option("--from", help="First day of a range (YYYY-MM-DD), run as one run.")] = None,
    last: Annotated[str | None, typer.Option("--to", help="Last day of the range (YYYY-MM-DD).")] = None,
    horizon: Annotated[int, typer.Option(help="Days ahead to forecast and plan.")] = 1,
    log_level: Annotated[str, typer.Option(help="Dagster console log level.")] = "WARNING",
    home: HomeOpt = None,
) -> None:
    """Run the nightly job through Dagster and print what it did.

    Without options: every delivery day in the landing zone, as one run. Re-running a day is
    safe: files already loaded are skipped and the day's marts and plan are rebuilt.
    """
    h = _home(home)
    days = _days_option(day, first, last)
    with console.status("Running the nightly job through Dagster (ingest → dbt build → forecast → plan → publish)…"):
        report = run_nightly(h, days=days, horizon_days=horizon, log_level=log_level)
    print_report(report, h)
    if not report.success:
        raise typer.Exit(1)


def _days_option(day: str | None, first: str | None, last: str | None) -> tuple[date, date] | None:
    try:
        if day:
            if first or last:
                raise typer.BadParameter("use --date or --from/--to, not both")
            return date.fromisoformat(day), date.fromisoformat(day)
        if first or last:
            if not (first and last):
                raise typer.BadParameter("--from and --to go together")
            a, b = date.fromisoformat(first), date.fromisoformat(last)
            if b < a:
                raise typer.BadParameter(f"--to {b} is before --from {a}")
            return a, b
    except ValueError as exc:
        raise typer.BadParameter(f"dates are YYYY-MM-DD: {exc}") from None
    return None


@app.command()
def demo(
    size: Annotated[str, typer.Option(help="City size to simulate.")] = "small",
    days: Annotated[int, typer.Option(help="Days of history.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    home: HomeOpt = None,
) -> None:
    """The quick start: simulate a small city, run the nightly job through Dagster, summarise."""
    from ingest.simulator import simulate as run_simulation

    h = _home(home)
    t0 = time.perf_counter()
    console.rule("1/2 simulate the city")
    summary = run_simulation(h.landing, size=size, days=days, start=date(2026, 1, 1), seed=seed, progress=True)
    _print_simulation(summary)
    console.rule("2/2 nightly job (Dagster)")
    with console.status("Running the nightly job through Dagster (ingest → dbt build → forecast → plan → publish)…"):
        report = run_nightly(h)
    print_report(report, h)
    console.print(f"Demo finished in {time.perf_counter() - t0:.1f} s (home: {h.root})")
    if not report.success:
        raise typer.Exit(1)


def _print_budgets(h: Home) -> None:
    from governance.state import StateBusy
    from pipelines.governance_cli import RULES_DIR, budget_table

    try:
        console.print(budget_table(h, RULES_DIR))
    except StateBusy:
        console.print("Budgets: the gateway holds governance.duckdb; ask it: GET /v1/usage")
    except SystemExit:  # a rules problem was already printed
        pass


def rebuild_warehouse(home: Home, log_level: str = "WARNING") -> tuple[Path | str | None, RunReport]:
    """Move the live warehouse aside and replay the landing archive into a fresh one.

    The landing zone keeps every delivered file (loaded or refused), so it is the raw archive:
    one run over all its delivery days loads the files in their delivery order, and dbt, the
    forecast and the publish step rebuild everything from them. The old file is kept under
    `recovered/` for inspection, never deleted. On DuckLake the lake is emptied in one commit
    instead, and the state before stays reachable by time travel (returned as a description).
    """
    from pipelines.warehouse import warehouse_at

    wh = warehouse_at(home.warehouse)
    if wh.is_lake:
        return _reset_lake(wh), run_nightly(home, log_level=log_level)
    moved = None
    if home.warehouse.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = home.root / "recovered" / f"warehouse-{stamp}.duckdb"
        target.parent.mkdir(parents=True, exist_ok=True)
        home.warehouse.rename(target)
        wal = home.warehouse.with_name(home.warehouse.name + ".wal")
        if wal.exists():
            wal.rename(target.with_name(target.name + ".wal"))
        moved = target
    return moved, run_nightly(home, log_level=log_level)


def _reset_lake(wh) -> str:
    """Rebuild on DuckLake: drop every view, table and schema of the lake in one commit. Nothing
    is lost at once: the state before stays readable by time travel at its snapshot version
    (published versions are kept until rotated out)."""
    from pipelines.resources import open_with_retry
    from pipelines.warehouse import current_version

    con = open_with_retry(wh)
    try:
        before = current_version(con)
        con.execute("BEGIN TRANSACTION")
        for (schema, name) in con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = 'lake' AND NOT internal").fetchall():
            con.execute(f'DROP VIEW lake."{schema}"."{name}"')
        for (schema, name) in con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall():
            con.execute(f'DROP TABLE lake."{schema}"."{name}"')
        for (schema,) in con.execute("SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'lake' AND schema_name <> 'main'").fetchall():
            con.execute(f'DROP SCHEMA lake."{schema}"')
        con.execute("COMMIT")
    finally:
        con.close()
    return f"{wh.describe()} at snapshot version {before} (time travel: ATTACH … (SNAPSHOT_VERSION {before}))"


@app.command()
def rebuild(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    home: HomeOpt = None,
) -> None:
    """Rebuild the warehouse from the landing archive (after corruption or a logic change).

    The live file is moved to <home>/recovered/, then one nightly run over every delivery day
    replays all files into a fresh warehouse and publishes it.
    """
    h = _home(home)
    from pipelines.warehouse import warehouse_at

    what = warehouse_at(h.warehouse).describe()
    if not yes and not typer.confirm(f"Move {what} aside and rebuild it from {h.landing}?"):
        raise typer.Exit(1)
    with console.status("Rebuilding the warehouse from the landing archive…"):
        moved, report = rebuild_warehouse(h)
    if moved:
        console.print(f"Previous warehouse kept at {moved}")
    print_report(report, h)
    if not report.success:
        raise typer.Exit(1)


@app.command()
def status(home: HomeOpt = None) -> None:
    """Health of a home: last run, freshness per asset, failed checks, quarantine, settlement backlog.

    Reads the Dagster instance and the published snapshot only; safe while a run writes.
    """
    from pipelines.definitions import defs
    from pipelines.status import gather

    h = _home(home)
    health = gather(h, defs)
    run = health.last_run
    if run:
        colour = "green" if run["status"] == "SUCCESS" else "red"
        took = f"{(run['ended'] - run['started']).total_seconds():.0f} s" if run["ended"] and run["started"] else "running"
        console.print(f"Last nightly run: [{colour}]{run['status']}[/{colour}] for {run['days']} — started {run['started']:%Y-%m-%d %H:%M} UTC, {took} ({run['run_id']})")
    else:
        console.print("Last nightly run: [yellow]none yet[/yellow] (civicflow run)")
    groups: dict[str, list] = {}
    for a in health.assets:
        groups.setdefault(a.group, []).append(a)
    table = Table(title="Freshness (rebuilt before the nightly deadline?)", title_justify="left")
    for col in ("group", "assets", "fresh", "stale", "last day built", "last built (UTC)"):
        table.add_column(col)
    for group, assets in sorted(groups.items()):
        stale = [a for a in assets if not a.fresh]
        last = max((a.last_materialized for a in assets if a.last_materialized), default=None)
        day = max((a.last_partition for a in assets if a.last_partition), default="-")
        table.add_row(group, str(len(assets)), str(len(assets) - len(stale)), f"[red]{len(stale)}[/red]" if stale else "0", day, f"{last:%Y-%m-%d %H:%M}" if last else "never")
    console.print(table)
    if health.stale:
        console.print("[red]stale:[/red] " + ", ".join(a.key for a in health.stale[:12]) + (" …" if len(health.stale) > 12 else ""))
    if health.failed_checks:
        console.print(f"[red]failed checks ({len(health.failed_checks)}):[/red]")
        for c in health.failed_checks[:20]:
            console.print(f"  {c['asset']} · {c['check']}: {c['description']}")
    else:
        console.print("Failed checks: [green]none[/green]")
    _print_budgets(h)
    if health.snapshot is None:
        console.print("Published snapshot: [yellow]none yet[/yellow]")
        return
    console.print(f"Published snapshot: {health.snapshot.name}")
    q = ", ".join(f"{k} {v:,}" for k, v in health.quarantine.items()) or "none"
    console.print(f"Quarantined rows: {q}")
    console.print(f"Refused files still in the landing zone: {len(health.refused_files)}")
    for path, reason in health.refused_files[:10]:
        console.print(f"  {path}: {reason.removeprefix(Path(path).name + ': ')}")
    if health.last_delivery:
        console.print("Last delivery day per source: " + ", ".join(f"{k} {v}" for k, v in health.last_delivery.items()))
    b = health.settlement_backlog
    if b:
        console.print(
            f"Settlement backlog past 24 h: {b['transactions']} transactions, EUR {b['amount_cents'] / 100:,.2f}"
            + (f", oldest {b['oldest_hours']:.0f} h (as of {b['as_of']:%Y-%m-%d %H:%M})" if b["transactions"] else "")
        )


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port for the Dagster webserver.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    home: HomeOpt = None,
) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on this home."""
    h = _home(home)
    console.print(f"Dagster UI for {h.root} on http://{host}:{port}")
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-h", host, "-p", str(port)]
    raise typer.Exit(subprocess.call(cmd, cwd=PROJECT_ROOT, env=os.environ.copy()))


from pipelines.governance_cli import register as _register_governance
_register_governance(app)

from pipelines.forecast_cli import register as _register_forecast
_register_forecast(app)

from pipelines.ingest_cli import register as _register_ingest
_register_ingest(app)


if __name__ == "__main__":
    app()
