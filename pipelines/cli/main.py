"""The nightly commands: simulate a city, run the nightly job, rebuild, status, the UI."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.cli.alerts import check_after_run
from pipelines.cli.options import HomeOpt, cli_console, print_table, refuse, settings_for

if TYPE_CHECKING:
    from pipelines.home import Home
    from pipelines.nightly import RunReport
    from pipelines.settings import Settings

console = cli_console()
STAGES = "ingest → dbt build → forecast → plan → publish"


LAYERS = ("staging", "intermediate", "marts", "forecasts")  # the order a night builds them


# Events `civicflow logs` leaves out unless --all: one per asset and partition, or Dagster's own
# bookkeeping (planned materializations, outputs of type Nothing, hooks that did not fire).
LOG_BOOKKEEPING = frozenset({
    "ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED", "STEP_OUTPUT", "HOOK_SKIPPED",
    "LOGS_CAPTURED", "RESOURCE_INIT_STARTED", "RESOURCE_INIT_SUCCESS",
})


def print_report(report: RunReport, home: Home) -> None:
    for line in report.recovered:  # what a crashed run left behind, freed before this one
        console.print(Text(line, style="yellow"))
    table = Table(title="Ingest (this run)", title_justify="left")
    for col in ("contract", "files", "rows", "duplicate", "quarantined", "re-sent", "refused"):
        table.add_column(col, justify="right" if col != "contract" else "left")
    for r in report.ingest:
        table.add_row(
            escape(r["contract"]), str(r["files_loaded"]), f"{r['rows_loaded']:,}", f"{r['rows_duplicate']:,}",
            f"{r['rows_quarantined']:,}", str(r["files_redelivered"]), str(r["files_refused"]),
        )
    if not report.ingest:
        table.add_row("(no new files)", "0", "0", "0", "0", "0", "0")
    print_table(console, table)
    for r in report.ingest:
        if r["refusals"]:
            console.print(Text(f"refused {r['contract']} files (kept in the landing zone):", style="yellow"))
            console.print(Text(r["refusals"]))  # file names and reasons come from the data: never markup
    status = "[green]succeeded[/green]" if report.success else "[red]FAILED[/red]"
    console.print(f"Nightly run {report.run_id} {status} in {report.seconds:.1f} s")
    if report.failure:
        console.print(Text(report.failure, style="red"))
    for run in sorted(set(report.unchanged_since.values())):
        layers = [layer for layer in LAYERS if report.unchanged_since.get(layer) == run]
        console.print(f"Unchanged since run {run}: {', '.join(layers)} (nothing they read is new: their results and checks stand, nothing was rebuilt)")
    console.print(f"Marts built: {len(report.marts)} ({', '.join(sorted(report.marts))})")
    console.print(f"Series forecast: {report.series}; staging plan rows: {report.plan_rows}")
    console.print(Text(f"Staging plan: {report.plan_path}"))
    console.print(Text(f"Published snapshot: {report.snapshot}"))
    console.print(Text(f"Run log (dbt output): {report.log_path}"))
    console.print(
        f"Dagster UI on this home: [bold]make ui[/bold] (or CIVICFLOW_HOME={escape(str(home.root))} civicflow ui), then open http://127.0.0.1:3000"
    )


def _print_simulation(summary) -> None:
    console.print(summary.as_table() if hasattr(summary, "as_table") else summary)


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        refuse(f"{option} {value!r} is not a date YYYY-MM-DD ({exc})")


def _days_option(day: str | None, first: str | None, last: str | None) -> tuple[date, date] | None:
    if day:
        if first or last:
            refuse("use --date or --from/--to, not both")
        return _day("--date", day), _day("--date", day)
    if first or last:
        if not (first and last):
            refuse("--from and --to go together")
        a, b = _day("--from", first), _day("--to", last)
        if b < a:
            refuse(f"--to {b} is before --from {a}")
        return a, b
    return None


def _run_with_progress(
    settings: Settings, days: tuple[date, date] | None = None, horizon: int = 1, log_level: str = "WARNING", rebuild: bool = False,
) -> RunReport:
    """Run a night, showing the step Dagster is on and how long each finished one took. Days
    outside the partitions are refused first, in one line, before Dagster is imported."""
    from pipelines.delivery_days import NoDeliveries, OutsidePartitions, days_to_run
    from pipelines.run_lock import RunInProgress

    try:
        days_to_run(settings.home, settings.schedule.start_date, days)  # checked again under the run lock
        from pipelines.nightly import run_nightly

        # Bound to the terminal now: the run redirects stdout to its log file while it runs.
        out = cli_console(file=sys.stdout)
        with out.status(f"Nightly job through Dagster ({STAGES}): starting…") as status:
            def on_step(step: str, event: str, seconds: float | None) -> None:
                if event == "start":
                    status.update(f"Nightly job through Dagster: [bold]{escape(step)}[/bold]…")
                else:
                    out.print(f"  {'✓' if event == 'success' else '✗'} {escape(step)}" + (f" ({seconds:.1f} s)" if seconds is not None else ""))

            return run_nightly(settings, days=days, horizon_days=horizon, log_level=log_level, on_step=on_step, rebuild=rebuild)
    except NoDeliveries as exc:
        refuse(str(exc))
    except OutsidePartitions as exc:  # before anything ran
        refuse(str(exc))
    except RunInProgress as exc:
        print(exc, flush=True)  # one plain line: no markup, no wrapping
        raise typer.Exit(3) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        out: Annotated[str | None, typer.Option(help="Landing zone to write into (default: <home>/landing).")] = None,
        size: Annotated[str, typer.Option(help="tiny | small | medium | large")] = "small",
        days: Annotated[int, typer.Option(help="Days to simulate.")] = 120,
        start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2026-01-01",
        seed: Annotated[int, typer.Option(help="Random seed: same arguments give byte-identical files.")] = 7,
        append: Annotated[bool, typer.Option("--append", help="Add the next DAYS days after the last simulated day.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Write a synthetic city's device files (and its ground truth) into a landing zone."""
        from pathlib import Path

        from ingest.simulator import simulate as run_simulation

        target = Path(out) if out else settings_for(home).home.landing
        summary = run_simulation(target, size=size, days=days, start=date.fromisoformat(start), seed=seed, append=append, progress=True)
        _print_simulation(summary)

    @app.command()
    def run(
        day: Annotated[str | None, typer.Option("--date", help="Run one delivery day (YYYY-MM-DD).")] = None,
        first: Annotated[str | None, typer.Option("--from", help="First day of a range (YYYY-MM-DD), run as one run.")] = None,
        last: Annotated[str | None, typer.Option("--to", help="Last day of the range (YYYY-MM-DD).")] = None,
        horizon: Annotated[int, typer.Option(help="Days ahead to forecast and plan.")] = 1,
        log_level: Annotated[str, typer.Option(help="Dagster console log level.")] = "WARNING",
        rebuild: Annotated[bool, typer.Option("--rebuild", help="Redo dbt and the forecast even where nothing they read has changed.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Run the nightly job through Dagster and print what it did.

        Without options: every delivery day in the landing zone, as one run. Re-running a day
        is safe: files already loaded are skipped. dbt and the forecast run again only when
        something they read changed (a new file, the dbt project, the forecasting code or
        settings); otherwise they say "unchanged" and their last results and checks stand.
        """
        settings = settings_for(home)
        report = _run_with_progress(settings, _days_option(day, first, last), horizon, log_level, rebuild)
        print_report(report, settings.home)
        check_after_run(settings)
        if not report.success:
            raise typer.Exit(1)

    @app.command()
    def demo(
        size: Annotated[str, typer.Option(help="City size to simulate.")] = "small",
        days: Annotated[int, typer.Option(help="Days of history.")] = 120,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
        home: HomeOpt = None,
    ) -> None:
        """The quick start: simulate a small city, run the nightly job through Dagster, summarise."""
        from ingest.simulator import simulate as run_simulation

        settings = settings_for(home)
        t0 = time.perf_counter()
        console.rule("1/2 simulate the city")
        summary = run_simulation(settings.home.landing, size=size, days=days, start=date(2026, 1, 1), seed=seed, progress=True)
        _print_simulation(summary)
        console.rule("2/2 nightly job (Dagster)")
        report = _run_with_progress(settings)
        print_report(report, settings.home)
        check_after_run(settings)
        console.print(f"Demo finished in {time.perf_counter() - t0:.1f} s (home: {escape(str(settings.home.root))})")
        if not report.success:
            raise typer.Exit(1)

    @app.command()
    def rebuild(
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Rebuild the warehouse from the landing archive (after corruption or a logic change).

        The live warehouse is set aside (a file moves to <home>/recovered/; a lake keeps its
        earlier version), then one nightly run over every delivery day replays all files into
        a fresh warehouse and publishes it.
        """
        from pipelines.nightly import rebuild_warehouse
        from warehouse.backends import backend_for

        settings = settings_for(home)
        what = backend_for(settings.warehouse).describe()
        if not yes and not typer.confirm(f"Set {what} aside and rebuild it from {settings.home.landing}?"):
            raise typer.Exit(1)
        with console.status("Rebuilding the warehouse from the landing archive…"):
            kept, report = rebuild_warehouse(settings)
        if kept:
            console.print(f"Previous warehouse kept at {escape(kept)}")
        print_report(report, settings.home)
        if not report.success:
            raise typer.Exit(1)

    @app.command()
    def status(home: HomeOpt = None) -> None:
        """Health of a home: last run, freshness per asset, failed checks, quarantine, settlement backlog.

        Reads the Dagster instance's records and the published snapshot only; safe while a run writes.
        """
        from pipelines.status import gather, print_health

        settings = settings_for(home)
        print_health(console, gather(settings), settings)

    @app.command()
    def runs(
        limit: Annotated[int, typer.Option(help="How many runs to list.")] = 20,
        home: HomeOpt = None,
    ) -> None:
        """Recent Dagster runs of this home, newest first: status, duration, partitions."""
        from datetime import UTC, datetime

        from pipelines.status import recent_runs

        found = recent_runs(settings_for(home), limit=limit)
        if not found:
            print("no runs yet on this home (civicflow run)")
            return
        table = Table(title="Runs (newest first); details: civicflow logs RUN_ID", title_justify="left")
        for col in ("run", "job", "status", "started (UTC)", "took", "partitions"):
            table.add_column(col, justify="right" if col == "took" else "left", no_wrap=True)
        colours = {"SUCCESS": "green", "FAILURE": "red", "CANCELED": "yellow"}
        for r in found:
            took = ((r["ended"] or datetime.now(UTC)) - r["started"]).total_seconds() if r["started"] else None
            status = Text(r["status"] + ("" if r["ended"] or not r["started"] else " (running)"), style=colours.get(r["status"], ""))
            table.add_row(
                r["run_id"][:8], r["job"], status, f"{r['started']:%Y-%m-%d %H:%M:%S}" if r["started"] else "-",
                f"{took:.0f} s" if took is not None else "-", r["partitions"],
            )
        print_table(console, table)

    @app.command()
    def logs(
        run_id: Annotated[str, typer.Argument(help="A run id, or its first characters as `civicflow runs` shows them.")],
        errors: Annotated[bool, typer.Option("--errors", help="Only warnings, errors and failed steps.")] = False,
        every: Annotated[bool, typer.Option("--all", help="Every event, each asset partition's materialization and Dagster's bookkeeping included.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """The event log of one run: each step's start, end, checks, messages and errors.

        A step's materializations (one per asset and partition: thousands for a ranged run) are
        counted on the line that ends the step; --all lists them, and Dagster's bookkeeping."""
        import logging
        from collections import Counter
        from datetime import UTC, datetime

        from pipelines.nightly import open_instance
        from pipelines.status import recent_runs

        settings = settings_for(home)
        matches = recent_runs(settings, limit=2, run_id_prefix=run_id)
        if len(matches) != 1:
            refuse(f"no run {run_id!r} on this home (civicflow runs lists them)" if not matches else f"{run_id!r} names more than one run: give more of its id")
        run = matches[0]
        print(f"run {run['run_id']} · {run['job']} · {run['status']} · partitions {run['partitions']}")
        with open_instance(settings) as instance:
            entries = instance.all_logs(run["run_id"])
        materialized: Counter[str] = Counter()
        for e in entries:
            event = e.dagster_event
            kind = event.event_type_value if event else "LOG"
            failed = kind in ("STEP_FAILURE", "RUN_FAILURE") or (kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed)
            if errors and e.level < logging.WARNING and not failed:
                continue
            if not every and kind in LOG_BOOKKEEPING:
                materialized[e.step_key or "-"] += kind == "ASSET_MATERIALIZATION"
                continue
            when = datetime.fromtimestamp(e.timestamp, UTC)
            text = e.user_message or (event.message if event else "") or ""
            if kind in ("STEP_SUCCESS", "STEP_FAILURE") and materialized[e.step_key]:
                text += f" {materialized[e.step_key]:,} asset partition(s) materialized (--all lists them)."
            print(f"{when:%H:%M:%S} {logging.getLevelName(e.level):7} {e.step_key or '-':28} {kind:24} {text}".rstrip())
            error = getattr(event.event_specific_data, "error", None) if event else None
            if error is not None:
                print("    " + error.to_string().strip().replace("\n", "\n    "))

    @app.command()
    def ui(
        port: Annotated[int, typer.Option(help="Port for the Dagster webserver.")] = 3000,
        host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
        home: HomeOpt = None,
    ) -> None:
        """Start the Dagster UI and daemon (`dagster dev`) on this home."""
        import os

        from pipelines.home import PROJECT_ROOT, prepare_home

        settings = settings_for(home)
        h = prepare_home(settings.home, settings.dagster_pg_url)
        console.print(f"Dagster UI for {escape(str(h.root))} on http://{host}:{port}")
        cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-h", host, "-p", str(port)]
        # A child process: the home and DAGSTER_HOME go in its environment only.
        env = os.environ | {"CIVICFLOW_HOME": str(h.root), "DAGSTER_HOME": str(h.dagster)}
        raise typer.Exit(subprocess.call(cmd, cwd=PROJECT_ROOT, env=env))

    @app.command("settings")
    def show_settings(home: HomeOpt = None) -> None:
        """Every setting civicflow reads from the environment, with what it is set to here."""
        import os

        from pipelines.settings import VARIABLES

        settings_for(home)  # a malformed value is reported before the table
        table = Table(title="Settings (environment variables)", title_justify="left")
        for col in ("variable", "set to", "meaning"):
            table.add_column(col, overflow="fold")
        for name, meaning in VARIABLES.items():
            value = os.environ.get(name, "")
            if value and any(w in name for w in ("CATALOG", "PG_URL", "KEY")):
                value = "(set, hidden)"
            table.add_row(name, escape(value) or "-", meaning)
        print_table(console, table)
