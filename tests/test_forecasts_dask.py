"""The forecast fan-out on Dask distributed: a real LocalCluster on 127.0.0.1 — worker
processes talking the same TCP protocol as a real cluster — reached through
`ForecastConfig.dask_scheduler` (CIVICFLOW_DASK_SCHEDULER at the edge), against the local
process pool on the same fixture city."""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from support.forecast_city import build_city

from forecasts.config import CONNECT_TIMEOUT_ENV, SCHEDULER_ENV, ForecastConfig, forecast_config_from_env
from forecasts.model import SeriesTask


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None, silence_logs=logging.WARNING)
    try:
        yield c
    finally:
        c.close()


def _files(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow  # ~30 s: starting two worker processes that import statsforecast dominates
def test_nightly_forecast_on_dask_equals_the_local_pool(tmp_path: Path, cluster) -> None:
    from forecasts.run import run_nightly_forecast

    con = build_city(tmp_path / "w.duckdb", n_days=150)
    try:
        def night(exports: Path, config: ForecastConfig):
            summary = run_nightly_forecast(con, None, 7, exports, workers=2, config=config)
            fc = con.execute("select * from forecasts.demand_forecast order by series_id, forecast_date").pl()
            plan = con.execute('select * from forecasts.staging_plan order by plan_date, hub_id, category, "window"').pl()
            return summary, fc, plan

        local, fc_local, plan_local = night(tmp_path / "local", ForecastConfig())
        remote, fc_remote, plan_remote = night(tmp_path / "dask", ForecastConfig(dask_scheduler=cluster.scheduler_address))
    finally:
        con.close()
    assert local.engine == "local pool (2 workers)"
    assert remote.engine == f"dask {cluster.scheduler_address}" and remote.engine.startswith("dask tcp://127.0.0.1:")
    assert remote.series_by_method == local.series_by_method and len(remote.series_by_method) >= 3  # blend, zero, mean …
    assert fc_remote.equals(fc_local) and fc_local.height == 6 * 7  # every value, bit for bit
    assert plan_remote.equals(plan_local) and plan_local.height > 0
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")  # csv, parquet, xlsx, html


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_falls_back_to_the_local_pool(caplog) -> None:
    from forecasts.engine import run_tasks_with_engine

    # built as the edge builds it, from the operator's variables
    config = forecast_config_from_env({SCHEDULER_ENV: f"tcp://127.0.0.1:{_closed_port()}", CONNECT_TIMEOUT_ENV: "2"})
    ds = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-02-01"))
    tasks = [SeriesTask(f"s{i}", ds, np.arange(len(ds), dtype=float) % 7 + i, ds[-7:] + 7, method="seasonal_naive")
             for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="forecasts.engine"):
        results, engine = run_tasks_with_engine(tasks, workers=1, config=config)
    assert engine == "one process" and [r.series_id for r in results] == ["s0", "s1"]
    assert "unreachable" in caplog.text
