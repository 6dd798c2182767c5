"""What every `civicflow` command shares: the --home option and the settings it resolves.

The CLI is an edge: it reads the environment once (Settings.from_env) and passes the parts
down. Only typer is imported here, so `civicflow --help` starts at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from pipelines.settings import Settings

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Runtime home (default: $CIVICFLOW_HOME or ./.civicflow).", show_default=False),
]


def refuse(message: str) -> NoReturn:
    """A user's mistake (a malformed date, options that do not go together): one plain line and
    exit status 2 — not click's usage block around it, never a traceback."""
    print(message, flush=True)
    raise typer.Exit(2)


def settings_for(home: Path | None) -> Settings:
    """The settings a command works with: --home over $CIVICFLOW_HOME over ./.civicflow."""
    from pipelines.settings import Settings

    try:
        return Settings.from_env(home=home)
    except ValueError as exc:  # a malformed variable (a date, a catalog URL): the user's to fix
        refuse(str(exc))


def cli_console(**kwargs) -> Console:
    """A command's console: on a terminal, text wraps at its width; piped or redirected, a line
    stays whole (rich would fold it at 80 columns, and a path or a command to run, split over two
    lines, cannot be pasted back)."""
    from rich.console import Console

    console = Console(**kwargs)
    console.soft_wrap = not console.is_terminal
    return console


def print_table(console: Console, table: Table) -> None:
    """A table at its full width when the output is not a terminal (a pipe, a file): rich would
    otherwise fit it into 80 columns and fold or cut every cell. On a terminal, its width."""
    if console.is_terminal:
        console.print(table)
        return
    needed = console.measure(table, options=console.options.update_width(100_000)).maximum
    width = console.width
    console.width = max(needed, width)  # print(width=…) would be capped at the console's width
    try:
        console.print(table)
    finally:
        console.width = width
