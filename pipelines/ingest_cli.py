"""`civicflow ingest …`: the data team's ingest commands (Data Docs, quarantine), off the nightly path.

Both read the last *published* snapshot (read-only), falling back to the live warehouse
opened read-only when nothing has been published yet — never while a run writes it (the
read-only open fails on the writer's lock, with a message that says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.home import Home
from pipelines.options import HomeOpt, resolve_home
from pipelines.publish import current_snapshot

console = Console()

_home = resolve_home


def readable_database(home: Home) -> Path:
    """The published snapshot, else the live warehouse (read-only); exit with a message when neither exists."""
    snap = current_snapshot(home.published)
    if snap is not None and snap.exists():
        return snap
    if home.warehouse.exists():
        return home.warehouse
    console.print(f"[red]nothing to read: no published snapshot in {home.published} and no warehouse at {home.warehouse}[/red]")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    ingest_app = typer.Typer(help="Ingest tools for the data team: Data Docs, quarantined rows.", no_args_is_help=True)

    @ingest_app.command("data-docs")
    def data_docs(
        days: Annotated[int, typer.Option(help="Latest event dates of each event table to validate.")] = 7,
        home: HomeOpt = None,
    ) -> None:
        """Build Great Expectations Data Docs (HTML) for the raw tables and print the index.html path."""
        from ingest.data_docs import build_data_docs

        h = _home(home)
        db = readable_database(h)
        with console.status(f"Validating the raw tables of {db.name} and building Data Docs…"):
            docs = build_data_docs(db, h.root / "gx", days=days)
        table = Table(title=f"Great Expectations on {db}", title_justify="left")
        for col in ("table", "suite", "rows checked", "result"):
            table.add_column(col, justify="right" if col == "rows checked" else "left")
        for t in docs.tables:
            result = "[green]passed[/green]" if t.success else "[red]failed[/red]: " + "; ".join(t.failed)
            table.add_row(t.contract, t.suite, f"{t.rows_checked:,}", result)
        console.print(table)
        print(docs.index_html)

    @ingest_app.command("quarantine")
    def quarantine(
        contract: Annotated[str | None, typer.Option(help="Only this contract (e.g. telemetry, pass_scans).")] = None,
        limit: Annotated[int, typer.Option(help="Rows to show, newest first.")] = 50,
        home: HomeOpt = None,
    ) -> None:
        """Show quarantined rows: file, line, field, reason and the raw text."""
        from ingest.data_docs import quarantine_rows

        h = _home(home)
        db = readable_database(h)
        try:
            rows = quarantine_rows(db, contract=contract, limit=limit)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        table = Table(title=f"Quarantined rows ({len(rows)} shown, newest first) — {db.name}", title_justify="left")
        for col in ("contract", "file", "line", "field", "reason", "raw text"):
            table.add_column(col, overflow="fold", justify="right" if col == "line" else "left")
        for r in rows:
            raw = r["raw_text"] or ""
            table.add_row(
                r["contract"], r["file_path"], str(r["line"]), r["field"] or "—", r["reason"],
                raw if len(raw) <= 160 else raw[:157] + "…",
            )
        console.print(table)

    app.add_typer(ingest_app, name="ingest")
