"""`civicflow forecast …`: judge the forecaster on any series file, back-test it on the
warehouse, and re-render a home's operations report.

Registered on the main app by pipelines/cli/__init__.py (`register(app)`).
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli.options import HomeOpt, print_table, refuse, settings_for

# the metrics table needs ~110 columns; narrower (a pipe, CI logs: 80) would truncate every number
console = Console(width=max(shutil.get_terminal_size((130, 24)).columns, 130))

forecast_app = typer.Typer(
    help="Forecast tools: backtest any series file, backtest the warehouse, re-render the report.",
    no_args_is_help=True, add_completion=False,
)


TABLE_COLUMNS = [  # the printed table; the CSVs have every metric
    ("method", "method", None), ("kind", "class", None), ("n_series", "series", 0), ("mase", "MASE", 3),
    ("mase_vs_naive", "MASE/naive", 2), ("pinball", "pinball", 2),
    ("cov_p10", "p10", 2), ("cov_p50", "p50", 2), ("cov_p80", "p80", 2), ("cov_p90", "p90", 2),
    ("cov_p95", "p95", 2), ("mase_event", "MASE event", 2),
]


def metrics_table(df, title: str) -> Table:
    t = Table(title=title, show_lines=False, caption="p10…p95: share of actuals at or below the quantile (coverage)")
    cols = [c for c in TABLE_COLUMNS if c[0] in df.columns]
    for _, head, nd in cols:
        t.add_column(head, justify="left" if nd is None else "right", no_wrap=nd is None)
    for r in df.iter_rows(named=True):
        t.add_row(*[("" if r[c] is None else str(r[c]) if nd is None else f"{r[c]:.{nd}f}") for c, _, nd in cols])
    return t


@forecast_app.command("backtest")
def backtest(
    series: Annotated[Path, typer.Option("--series", help="CSV with columns series_id,ds,y (or ds,y for one series).",
                                         exists=True, dir_okay=False, readable=True)],
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Periods to forecast from each origin.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the metrics CSVs.")],
    events: Annotated[Path | None, typer.Option("--events", help="CSV name,start,end[,series_id] (events without series_id apply to all).",
                                                exists=True, dir_okay=False, readable=True)] = None,
    freq: Annotated[str, typer.Option("--freq", help="D (daily) or H (hourly).")] = "D",
    origins: Annotated[int, typer.Option("--origins", min=1, help="Scored rolling origins (one more is used to learn the calibration).")] = 4,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    gaps: Annotated[str, typer.Option("--gaps", help="A period absent from the file: 'missing' (not observed: "
                                      "filled for fitting, never scored) or 'zero' (no demand).")] = "missing",
) -> None:
    """Backtest civicflow's forecaster on any series file, against seasonal naive and SES.

    Prints the overall metrics and writes metrics_overall.csv, metrics_per_series.csv, metrics_by_kind.csv, backtest_points.csv
    and calibration.csv to --out."""
    import polars as pl

    from forecasts.backtest import backtest_file

    if freq.upper() not in ("D", "H"):
        refuse("--freq must be D or H")
    if gaps not in ("missing", "zero"):
        refuse("--gaps must be missing or zero")
    engine = settings_for(None).forecast
    try:
        s = backtest_file(series, events, horizon, freq, out, n_origins=origins, workers=workers, config=engine,
                          gaps=gaps)
    except (ValueError, OSError, pl.exceptions.PolarsError) as exc:
        from rich.markup import escape

        # One line whatever the terminal's width (file names and reasons come from the user: no markup).
        console.print(f"[red]error:[/red] {escape(f'cannot use {series}: {exc}')}", soft_wrap=True)
        raise typer.Exit(2) from None
    if s.overall.is_empty():
        console.print("[yellow]no series long enough for a backtest origin[/yellow] "
                      f"(need 4 seasons + {horizon} periods per origin)")
        raise typer.Exit(1)
    print_table(console, metrics_table(s.overall, f"{s.n_series} series, {s.n_origins} origins, horizon {horizon} ({freq.upper()})"))
    if not s.by_kind.is_empty():
        print_table(console, metrics_table(s.by_kind, "by series class (coverage of low quantiles on intermittent "
                                                "series is high by construction: most days are 0)"))
    for name, p in s.paths.items():
        console.print(f"{name}: {p}")


@forecast_app.command("evaluate")
def evaluate(
    home: HomeOpt = None,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Days forecast from each origin.")] = 7,
    origins: Annotated[int, typer.Option("--origins", min=1, help="Scored rolling origins.")] = 4,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 2,
) -> None:
    """Backtest the forecaster on the home's warehouse and refresh its calibration.

    Reads the demand mart; writes forecasts.backtest_metrics, backtest_metrics_series,
    value_metrics and the calibration the nightly run applies. Opens the warehouse for writing: do not run it while a nightly run is writing."""
    from forecasts.evaluate import run_warehouse_backtest
    from warehouse.backends import backend_for

    settings = settings_for(home)
    backend = backend_for(settings.warehouse)
    if not backend.exists():
        console.print(f"[red]no warehouse at {backend.describe()}[/red]: run `civicflow run` first")
        raise typer.Exit(1)
    with backend.connect() as con:
        r = run_warehouse_backtest(con, horizon=horizon, n_origins=origins, workers=workers, config=settings.forecast)
    if r.as_of is None:
        console.print("[yellow]the demand mart is empty[/yellow]")
        raise typer.Exit(1)
    print_table(console, metrics_table(r.metrics.filter(r.metrics["kind"] == "*"), f"backtest as of {r.as_of}"))
    if r.value.height:
        for v in r.value.iter_rows(named=True):
            if v["civicflow_reduction"] is not None:
                console.print(f"civicflow vs {v['policy']}: cost {100 * v['civicflow_reduction']:.1f} % lower "
                              f"(95 % CI {100 * v['reduction_ci_low']:.1f} – {100 * v['reduction_ci_high']:.1f} %)")
    console.print(f"calibration rows: {r.calibration_rows}; {r.timings}")


@forecast_app.command("report")
def report(
    home: HomeOpt = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Forecast date (YYYY-MM-DD); default the latest.")] = None,
) -> None:
    """Re-render the HTML report, the workbook and the pick lists of a home's latest plan.

    Reads the live warehouse opened read-only, or the published snapshot when it is busy."""
    import duckdb

    from forecasts.run import report_from_warehouse
    from warehouse.backends import backend_for
    from warehouse.retry import WarehouseBusy
    from warehouse.snapshots import current_snapshot, open_snapshot

    settings = settings_for(home)
    h = settings.home
    backend = backend_for(settings.warehouse)
    try:
        con = backend.connect(read_only=True)
    except (WarehouseBusy, duckdb.Error):
        snap = current_snapshot(h.published)
        if snap is None:
            console.print(f"[red]cannot open {backend.describe()} and no published snapshot[/red]")
            raise typer.Exit(1) from None
        con = open_snapshot(snap, settings.warehouse.reader_credentials()).con
    with con:
        day = date.fromisoformat(as_of) if as_of else None
        path = report_from_warehouse(con, h.exports, day, chromium=settings.forecast.chromium)
        if path is None:
            console.print("[yellow]no staging plan in the warehouse yet[/yellow]: run `civicflow run` first")
            raise typer.Exit(1)
    pdf = path.parent / "pick_lists" / "pick_lists.pdf"
    console.print(f"report: {path}\nworkbook: {path.parent / 'staging_plan.xlsx'}\n"
                  f"pick lists: {pdf if pdf.exists() else path.parent / 'pick_lists' / 'all.html'}")


def register(app: typer.Typer) -> None:
    app.add_typer(forecast_app, name="forecast")
