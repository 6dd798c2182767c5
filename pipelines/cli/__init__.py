"""The `civicflow` command. Each module of this package holds one group of commands and imports
only typer and rich at module level: what a command needs is imported when it runs, so
`civicflow --help` and `civicflow query` start without dagster, dbt or prophet."""

from __future__ import annotations

import typer

from pipelines.cli import alerts, forecast, governance, ingest, main, plan

# Plain (click) help: typer's rich help imports rich.markdown and markdown-it, which tripled the
# start of `civicflow --help`.
app = typer.Typer(
    help="civicflow: smart-city data pipeline and analytics warehouse.", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    # Wide enough that no command's one-line summary is cut, piped or not.
    context_settings={"terminal_width": 120, "max_content_width": 120},
)
main.register(app)
governance.register(app)
forecast.register(app)
ingest.register(app)
plan.register(app)
alerts.register(app)
