"""`civicflow plan`: operations' sign-off of the nightly staging plan."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipelines.cli.options import HomeOpt, settings_for

plan_app = typer.Typer(help="The staging plan: apply operations' overrides and approve it.", no_args_is_help=True,
                       rich_markup_mode=None)
console = Console(width=max(shutil.get_terminal_size((130, 24)).columns, 130))


@plan_app.command("apply-overrides")
def apply_overrides(
    file: Annotated[Path, typer.Argument(help="The plan sent back: staging_plan.csv or .xlsx with changed units and a reason column.")],
    home: HomeOpt = None,
    by: Annotated[str | None, typer.Option("--by", help="Who changed the plan (default: your user name).")] = None,
) -> None:
    """Validate an override file, apply it all or nothing, approve the plan, write the dispatched plan."""
    from rich.text import Text

    from forecasts.overrides import OverridesRefused
    from pipelines.overrides_assets import apply_file
    from warehouse.backends import backend_for
    from warehouse.retry import WarehouseBusy

    settings = settings_for(home)
    who = by or getpass.getuser()
    try:
        with console.status(f"applying {file.name} …"):
            con = backend_for(settings.warehouse).connect()
            try:
                applied, csv = apply_file(con, file, who, settings.home.exports)
            finally:
                con.close()
    except OverridesRefused as exc:
        console.print(Text(f"refused: {exc}", style="red"))
        for p in exc.problems:
            console.print(Text(f"  {p}"))
        raise typer.Exit(1) from None
    except FileNotFoundError as exc:
        console.print(Text(f"error: {exc}", style="red"))
        raise typer.Exit(1) from None
    except WarehouseBusy as exc:
        console.print(Text(f"error: the warehouse is busy (a run is writing it), try again: {exc}", style="red"))
        raise typer.Exit(1) from None
    if applied.already_applied:
        console.print(Text(f"{file.name} was already applied to the plan of {applied.as_of}: nothing changed"))
        return
    delta = applied.units_after - applied.units_before
    console.print(Text(f"plan of {applied.as_of} {applied.status} by {who}: {applied.changed} change(s) "
                       f"({delta:+,} units); dispatched plan: {csv}"))


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")
