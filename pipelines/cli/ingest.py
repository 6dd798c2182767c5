"""`civicflow ingest …`: the data team's ingest commands (Data Docs, quarantine, its replay), off the nightly path.

Data Docs and the quarantine listing read the last *published* snapshot (read-only),
falling back to the live warehouse opened read-only when nothing has been published yet —
never while a run writes it (the read-only open fails on the writer's lock, with a message
that says so). The replay writes the live warehouse, under the home's run lock.
"""

from __future__ import annotations

from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.options import HomeOpt, cli_console, print_table, refuse, settings_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb

    from pipelines.settings import Settings

console = cli_console()


@contextmanager
def readable_warehouse(settings: Settings) -> Iterator[tuple[str, duckdb.DuckDBPyConnection]]:
    """The published snapshot, else the live warehouse read-only (its name and a connection);
    exits with a message when neither exists."""
    from warehouse.backends import backend_for
    from warehouse.snapshots import current_snapshot, open_snapshot

    snap = current_snapshot(settings.home.published)
    if snap is not None and snap.exists():
        with open_snapshot(snap, settings.warehouse.reader_credentials()) as opened:
            yield snap.name, opened.con
        return
    backend = backend_for(settings.warehouse)
    if not backend.exists():
        console.print(f"[red]nothing to read: no published snapshot in {escape(str(settings.home.published))} and no warehouse at {escape(backend.describe())}[/red]")
        raise typer.Exit(1)
    con = backend.connect(read_only=True)
    try:
        yield backend.describe(), con
    finally:
        con.close()


def register(app: typer.Typer) -> None:
    ingest_app = typer.Typer(help="Ingest tools for the data team: Data Docs, quarantined rows and their replay.", no_args_is_help=True)

    @ingest_app.command("data-docs")
    def data_docs(
        days: Annotated[int, typer.Option(help="Latest event dates of each event table to validate.")] = 7,
        as_of: Annotated[str | None, typer.Option("--as-of", help="Judge freshness against this day (YYYY-MM-DD) instead of today.")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Validate the raw tables and write Great Expectations Data Docs that open offline.

        Self-contained HTML under <home>/gx/data_docs/ (nothing fetched, no script); prints the
        index.html path."""
        from datetime import date, datetime, time

        from ingest.data_docs import build_data_docs

        try:
            now = datetime.combine(date.fromisoformat(as_of), time(23, 59)) if as_of else None
        except ValueError:
            refuse(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)")
        settings = settings_for(home)
        with readable_warehouse(settings) as (name, con), console.status(f"Validating the raw tables of {escape(name)} and building Data Docs…"):
            docs = build_data_docs(con, settings.home.root / "gx", days=days, now=now, source=name)
        table = Table(title=f"Great Expectations on {escape(name)}", title_justify="left")
        for col in ("table", "suite", "rows checked", "result"):
            table.add_column(col, justify="right" if col == "rows checked" else "left")
        for t in docs.tables:
            result = "[green]passed[/green]" if t.success else "[red]failed[/red]: " + escape("; ".join(t.failed))
            table.add_row(t.contract, t.suite, f"{t.rows_checked:,}", result)
        print_table(console, table)
        print(docs.index_html)

    @ingest_app.command("quarantine")
    def quarantine(
        contract: Annotated[str | None, typer.Option(help="Only this contract (e.g. telemetry, pass_scans).")] = None,
        limit: Annotated[int, typer.Option(help="Rows to show, newest first.")] = 50,
        home: HomeOpt = None,
    ) -> None:
        """Show quarantined rows: file, line, field, reason and the raw text."""
        from ingest.data_docs import quarantine_rows

        settings = settings_for(home)
        with readable_warehouse(settings) as (name, con):
            try:
                rows = quarantine_rows(con, contract=contract, limit=limit)
            except ValueError as exc:
                console.print(f"[red]{escape(str(exc))}[/red]")
                raise typer.Exit(2) from None
        table = Table(title=f"Quarantined rows ({len(rows)} shown, newest first) — {escape(name)}", title_justify="left")
        for col in ("contract", "file", "line", "field", "reason", "raw text"):
            table.add_column(col, overflow="fold", justify="right" if col == "line" else "left")
        for r in rows:
            raw = r["raw_text"] or ""
            table.add_row(
                escape(r["contract"]), escape(r["file_path"]), str(r["line"]), escape(r["field"] or "—"), escape(r["reason"]),
                escape(raw if len(raw) <= 160 else raw[:157] + "…"),
            )
        print_table(console, table)

    @ingest_app.command("replay-quarantine")
    def replay_quarantine(
        source: Annotated[str | None, typer.Option(help="Only this source (telemetry, pass_scans, settlement).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what a replay would load, change nothing.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Re-validate quarantined rows against the current contracts and load those that now pass.

        For after a contract fix (a range widened, a device added to the registry). Each row is
        loaded once: a second replay loads nothing. Rows that still fail stay quarantined with
        the reason the current contract gives. It writes the live warehouse: refused while a
        `civicflow run` holds the home."""
        from ingest.replay import replay_quarantine as replay
        from pipelines.run_lock import RunInProgress, home_run_lock
        from warehouse.backends import backend_for

        settings = settings_for(home)
        backend = backend_for(settings.warehouse)
        if not backend.exists():
            console.print(f"[red]no warehouse at {escape(backend.describe())}[/red]: run `civicflow run` first")
            raise typer.Exit(1)
        try:
            with home_run_lock(settings.home.root), closing(backend.connect()) as con, console.status("Re-validating quarantined rows…"):
                summaries = replay(con, source=source, dry_run=dry_run)
        except RunInProgress as exc:
            print(exc, flush=True)
            raise typer.Exit(3) from None
        except ValueError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
        verb = "would load" if dry_run else "loaded"
        table = Table(title=f"Quarantine replay{' (dry run: nothing changed)' if dry_run else ''} — {escape(backend.describe())}", title_justify="left")
        for col in ("contract", "re-validated", verb, "already loaded", "still quarantined", "new reason"):
            table.add_column(col, justify="left" if col == "contract" else "right")
        for s in summaries:
            table.add_row(s.contract, f"{s.revalidated:,}", f"{s.loaded:,}", f"{s.already_loaded:,}", f"{s.still_quarantined:,}", f"{s.reasons_changed:,}")
        print_table(console, table)
        days = sorted(d for s in summaries for d in s.delivery_days)
        total = sum(s.loaded for s in summaries)
        if days and not dry_run:
            span = f"--date {days[0]}" if days[0] == days[-1] else f"--from {days[0]} --to {days[-1]}"
            console.print(f"{total:,} row(s) {verb} into raw; the marts take them in when those delivery days run again: civicflow run {span}")
        else:
            console.print(f"{total:,} row(s) {verb}.")

    app.add_typer(ingest_app, name="ingest")
