"""The settings are declared once and documented: the table in docs/operations.md lists every
variable the code reads, and `Settings.from_env` turns a malformed one into a clear error."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from pipelines.settings import VARIABLES, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_every_variable_is_documented_and_every_documented_one_exists():
    text = DOC.read_text()
    section = text[text.index("Configuration (environment)"): text.index("## Scheduling")]
    documented = set(re.findall(r"^\| `((?:CIVICFLOW|DAGSTER)_[A-Z_]+)` \|", section, flags=re.M))
    assert documented == set(VARIABLES)


def test_settings_come_from_the_mapping_given_and_nothing_else(tmp_path):
    env = {
        "CIVICFLOW_HOME": str(tmp_path / "h"), "CIVICFLOW_START_DATE": "2026-02-01", "CIVICFLOW_INGEST_BATCH_BYTES": "1024",
        "CIVICFLOW_DASK_SCHEDULER": "tcp://sched:8786", "CIVICFLOW_WAREHOUSE_THREADS": "3",
    }
    s = Settings.from_env(env)
    assert s.home.root == (tmp_path / "h").resolve()
    assert s.warehouse.file == s.home.warehouse and s.warehouse.catalog is None and s.warehouse.threads == 3
    assert s.schedule.start_date == date(2026, 2, 1) and s.ingest.batch_bytes == 1024
    assert s.forecast.dask_scheduler == "tcp://sched:8786"
    # --home wins over the variable
    assert Settings.from_env(env, home=tmp_path / "other").home.root == (tmp_path / "other").resolve()


def test_dagster_home_alone_names_the_home_whose_instance_civicflow_wrote(tmp_path, monkeypatch):
    from pipelines.home import Home, prepare_home

    home = prepare_home(Home(tmp_path / "h"))
    assert Settings.from_env({"DAGSTER_HOME": str(home.dagster)}).home.root == home.root.resolve()
    # CIVICFLOW_HOME still wins; a DAGSTER_HOME civicflow did not write names no home.
    assert Settings.from_env({"DAGSTER_HOME": str(home.dagster), "CIVICFLOW_HOME": str(tmp_path / "x")}).home.root == (tmp_path / "x").resolve()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"DAGSTER_HOME": str(foreign)}).home.root == (tmp_path / ".civicflow").resolve()


def test_a_lake_catalog_is_parsed_once_and_its_password_never_printed(tmp_path):
    s = Settings.from_env({"CIVICFLOW_WAREHOUSE_CATALOG": "postgresql://u:s3cr%40t@db:5433/lake"}, home=tmp_path)
    assert s.warehouse.catalog.password == "s3cr@t" and s.warehouse.catalog.port == 5433
    assert s.warehouse.data_path == tmp_path.resolve() / "lake"
    assert "s3cr" not in repr(s) and "s3cr" not in repr(s.warehouse.catalog)


@pytest.mark.parametrize(
    "name,value",
    [("CIVICFLOW_START_DATE", "01/02/2026"), ("CIVICFLOW_WAREHOUSE_CATALOG", "mysql://x@y/z"), ("CIVICFLOW_INGEST_BATCH_BYTES", "lots")],
)
def test_a_malformed_variable_is_refused_by_name(tmp_path, name, value):
    with pytest.raises(ValueError):
        Settings.from_env({name: value}, home=tmp_path)


def test_the_cli_reports_a_malformed_variable_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = CliRunner().invoke(app, ["settings", "--home", str(tmp_path)], env={"CIVICFLOW_START_DATE": "yesterday"})
    assert out.exit_code == 2 and "Traceback" not in out.output and "yesterday" in out.output


def test_every_command_has_help_whose_summary_is_one_sentence():
    """The command list shows each docstring's first paragraph: one line, never cut mid-sentence."""
    import click
    import typer.main

    from pipelines.cli import app

    def walk(cmd: click.Command, path: str):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for path, cmd in walk(typer.main.get_command(app), "civicflow"):
        summary = (cmd.help or "").strip().split("\n\n")[0]
        assert summary, f"{path} has no help"
        assert "\n" not in summary, f"{path}: {summary!r}"


def test_no_command_list_cuts_a_summary():
    """What `--help` of each group prints, piped: every summary whole, none ended with "..."."""
    import typer.main
    from typer.testing import CliRunner

    from pipelines.cli import app

    def groups(cmd, args: list[str]):
        if hasattr(cmd, "commands"):  # a group (typer's own click: not click.Group)
            yield args, cmd
            for name, sub in cmd.commands.items():
                yield from groups(sub, [*args, name])

    for args, group in groups(typer.main.get_command(app), []):
        out = CliRunner().invoke(app, [*args, "--help"]).output
        listed = out.split("Commands:", 1)[1].splitlines()[1:]
        for name, sub in group.commands.items():
            (line,) = [ln for ln in listed if ln.strip().startswith(name + " ")]
            summary = (sub.help or "").strip().split("\n\n")[0]
            assert line.strip()[len(name):].strip() == summary, f"civicflow {' '.join(args)} --help cuts {name}: {line.strip()!r}"


def test_a_message_piped_stays_on_one_line(tmp_path):
    """Piped (not a terminal), a line longer than 80 columns is printed whole: a path or a
    command to run, folded over two lines, cannot be pasted back."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    home = tmp_path / ("a-home-with-a-long-name-" * 3)
    out = CliRunner().invoke(app, ["ingest", "quarantine", "--home", str(home)], env={"COLUMNS": "80"})
    assert out.exit_code == 1, out.output
    (line,) = out.output.strip().splitlines()
    assert line.startswith("nothing to read: no published snapshot in ") and line.endswith(f"no warehouse at {home.resolve() / 'warehouse.duckdb'}"), line


@pytest.mark.parametrize(
    "args,line",
    [
        (["run", "--date", "2026-13-01"], "--date '2026-13-01' is not a date YYYY-MM-DD (month must be in 1..12)"),
        (["run", "--from", "2026-01-05"], "--from and --to go together"),
        (["run", "--from", "2026-01-05", "--to", "2026-01-01"], "--to 2026-01-01 is before --from 2026-01-05"),
        (["alerts", "check", "--now", "soon"], "--now 'soon' is not an ISO date-time (e.g. 2026-02-06T07:00)"),
    ],
)
def test_a_mistyped_option_is_one_line_and_exit_2(tmp_path, args, line):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = CliRunner().invoke(app, [*args, "--home", str(tmp_path)])
    assert out.exit_code == 2 and out.output.splitlines() == [line], out.output
