"""Options every `civicflow` command shares (one definition, imported by each CLI module)."""

import os
from pathlib import Path
from typing import Annotated

import typer

from pipelines.home import Home, home_from_env, prepare_home

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Runtime home (default: $CIVICFLOW_HOME or ./.civicflow).", show_default=False),
]


def resolve_home(home: Path | None) -> Home:
    """The home a command works on: --home, else $CIVICFLOW_HOME, else ./.civicflow; prepared."""
    if home is not None:
        os.environ["CIVICFLOW_HOME"] = str(home)
    return prepare_home(home_from_env())
