"""`civicflow runs` and `civicflow logs RUN_ID` on a home with one real (failed) nightly run."""

from __future__ import annotations

import re

import duckdb
import pytest
from typer.testing import CliRunner

from ingest.simulator import simulate
from pipelines.nightly import run_nightly
from pipelines.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A tiny city whose telemetry step cannot insert (a foreign view squats raw.telemetry): the
    run fails at its first steps, so the test is quick and has a failure to show."""
    home_root = tmp_path_factory.mktemp("runs") / "home"
    settings = Settings.from_env(home=home_root)
    simulate(settings.home.landing, size="tiny", days=3, seed=3)
    con = duckdb.connect(str(settings.home.warehouse))
    con.execute("CREATE SCHEMA raw; CREATE VIEW raw.telemetry AS SELECT 1 AS squatter")
    con.close()
    report = run_nightly(settings)
    assert not report.success
    return home_root, report


def _cli(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, list(args))


def test_runs_lists_the_run_with_status_duration_and_partitions_on_one_line(failed_run):
    home, report = failed_run
    result = _cli("runs", "--home", str(home))
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if report.run_id[:8] in ln]  # piped: one row, one line
    assert len(lines) == 1, result.output
    (line,) = lines
    assert "nightly" in line and "FAILURE" in line
    assert "2026-01-01..2026-01-03" in line
    assert " s " in line or line.rstrip().endswith(" s")  # a duration


def test_logs_shows_the_failed_step_and_its_error(failed_run):
    home, report = failed_run
    result = _cli("logs", report.run_id[:8], "--home", str(home))
    assert result.exit_code == 0, result.output
    out = result.output
    assert report.run_id in out.splitlines()[0]
    assert "STEP_START" in out
    failure = [ln for ln in out.splitlines() if "STEP_FAILURE" in ln]
    assert failure and "ingest_telemetry" in failure[0], out
    assert "telemetry" in out[out.index("STEP_FAILURE"):]  # the error itself follows
    # One line per asset and partition, and Dagster's bookkeeping, only with --all; the step's line counts them.
    assert "ASSET_MATERIALIZATION_PLANNED" not in out and "STEP_OUTPUT" not in out
    (reference,) = [ln for ln in out.splitlines() if "ingest_reference" in ln and "STEP_SUCCESS" in ln]
    assert re.search(r"Finished execution of step \"ingest_reference\" in [\d.]+m?s\. \d+ asset partition\(s\) materialized \(--all lists them\)\.$", reference), reference
    every = _cli("logs", report.run_id[:8], "--all", "--home", str(home)).output
    assert "ASSET_MATERIALIZATION_PLANNED" in every and sum(" ingest_reference " in ln and " ASSET_MATERIALIZATION " in ln for ln in every.splitlines()) == int(re.search(r"(\d+) asset partition", reference).group(1))
    only_errors = _cli("logs", report.run_id, "--errors", "--home", str(home))
    assert only_errors.exit_code == 0 and "STEP_FAILURE" in only_errors.output
    assert "STEP_START" not in only_errors.output


def test_logs_of_an_unknown_run_is_one_line_and_exit_2(failed_run):
    home, _ = failed_run
    for wrong in ("ffffffff", "x'; DROP TABLE runs; --"):
        result = _cli("logs", wrong, "--home", str(home))
        assert result.exit_code == 2, result.output
        assert result.output.splitlines() == [f"no run {wrong!r} on this home (civicflow runs lists them)"], result.output
