"""The Dagster definitions as the UI shows them: owners, groups, descriptions, pools, automation."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    from pipelines.definitions import definitions_for

    return definitions_for(str(tmp_path_factory.mktemp("defs-home")))


def test_importing_the_definitions_writes_nothing_and_builds_nothing(tmp_path):
    """`dagster dev -m pipelines.definitions` imports the module; only loading `defs` builds."""
    import os
    import subprocess
    import sys

    env = os.environ | {"CIVICFLOW_HOME": str(tmp_path / "home")}
    code = "import sys, pipelines.definitions; print('dagster_dbt' in sys.modules, 'forecasts.run' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "False"]
    assert not (tmp_path / "home").exists()


def test_every_asset_has_an_owner_a_group_and_a_description(defs):
    graph = defs.resolve_asset_graph()
    missing = []
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        if not node.owners or not node.group_name or not (node.description or "").strip():
            missing.append((key.to_user_string(), node.owners, node.group_name))
    assert not missing, missing
    groups = {graph.get(k).group_name for k in graph.materializable_asset_keys}
    assert groups == {"ingest", "warehouse", "forecasts", "governance"}


def test_every_step_that_writes_the_warehouse_is_in_the_writer_pool(defs):
    job = defs.resolve_job_def("nightly")
    pools = {node.name: node.definition.pool for node in job.graph.nodes}
    assert pools and all(pool == "warehouse" for pool in pools.values()), pools


def test_nightly_job_is_scheduled_and_watched(defs):
    assert defs.resolve_schedule_def("nightly_schedule").job_name == "nightly"
    assert defs.resolve_sensor_def("landing_sensor").job_name == "nightly"
    graph = defs.resolve_asset_graph()
    assert all(graph.get(k).freshness_policy is not None for k in defs.resolve_job_def("nightly").asset_layer.executable_asset_keys)


def test_forecast_calibration_runs_weekly_in_the_writer_pool(defs):
    """The warehouse backtest that refreshes the forecast's interval calibration has its own
    weekly job (the nightly run does it only when no calibration exists yet)."""
    job = defs.resolve_job_def("forecast_calibration")
    assert {node.definition.pool for node in job.graph.nodes} == {"warehouse"}
    assert [k.to_user_string() for k in job.asset_layer.executable_asset_keys] == ["forecasts/calibration"]
    schedule = defs.resolve_schedule_def("forecast_calibration_schedule")
    assert schedule.job_name == "forecast_calibration"
    assert schedule.cron_schedule.split()[-1] != "*"  # weekly (a day of the week), not nightly


def test_the_dbt_resource_knows_its_version_without_starting_dbt(defs):
    """dagster-dbt would run `dbt --version` (a whole dbt start) before every build."""
    from importlib.metadata import version

    from pipelines.dbt_resource import DbtCli

    dbt = defs.resources["dbt"]
    assert isinstance(dbt, DbtCli)
    assert str(dbt._cli_version) == version("dbt-core")
