"""The `civicflow` command. Each module of this package holds one group of commands and imports
only typer and rich at module level: what a command needs is imported when it runs, so
`civicflow --help` and `civicflow query` start without dagster, dbt or prophet."""

from __future__ import annotations

import typer

from pipelines.cli import forecast, governance, ingest, main

app = typer.Typer(help="civicflow: smart-city data pipeline and analytics warehouse.", no_args_is_help=True, add_completion=False)
main.register(app)
governance.register(app)
forecast.register(app)
ingest.register(app)
