"""What every `civicflow` command shares: the --home option and the settings it resolves.

The CLI is an edge: it reads the environment once (Settings.from_env) and passes the parts
down. Only typer is imported here, so `civicflow --help` starts at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipelines.settings import Settings

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Runtime home (default: $CIVICFLOW_HOME or ./.civicflow).", show_default=False),
]


def settings_for(home: Path | None) -> Settings:
    """The settings a command works with: --home over $CIVICFLOW_HOME over ./.civicflow."""
    from pipelines.settings import Settings

    try:
        return Settings.from_env(home=home)
    except ValueError as exc:  # a malformed variable (a date, a catalog URL): the user's to fix
        raise typer.BadParameter(str(exc)) from None
