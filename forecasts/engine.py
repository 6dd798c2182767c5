"""Which engine fits a night's series: the local process pool (pool.py) or a Dask cluster
(dask_pool.py), decided here, once, from the `ForecastConfig` the caller passes down.

Both engines give the same forecasts (every seed lives in the task); only the wall clock
and the machines differ.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from forecasts import dask_pool, pool
from forecasts.config import ForecastConfig
from forecasts.model import SeriesForecast, SeriesTask

log = logging.getLogger(__name__)


def run_tasks(tasks: Sequence[SeriesTask], workers: int = 2,
              config: ForecastConfig = ForecastConfig()) -> list[SeriesForecast]:
    """Forecast every task; results in the order of `tasks`."""
    return run_tasks_with_engine(tasks, workers, config)[0]


def run_tasks_with_engine(tasks: Sequence[SeriesTask], workers: int = 2,
                          config: ForecastConfig = ForecastConfig()) -> tuple[list[SeriesForecast], str]:
    """run_tasks, plus which engine ran them: `dask <address>` when `config.dask_scheduler`
    is set (`workers` is then the cluster's business), else what the local pool says
    (`local pool (N workers)`, `one process`). A scheduler that cannot be reached is logged
    and the local pool takes over: same results, and the night's plan is not lost to a
    network problem."""
    tasks = list(tasks)
    address = config.dask_scheduler
    if address and tasks:
        try:
            return (dask_pool.run_on_dask(tasks, address, config.dask_connect_timeout_s, config.chunk_size),
                    f"dask {address}")
        except (OSError, TimeoutError) as exc:
            log.warning(f"Dask scheduler {address} unreachable ({type(exc).__name__}: {exc}); "
                        f"forecasting on the local pool instead")
    return pool.run_tasks_with_engine(tasks, workers, config.chunk_size, config.recycle_after_chunks)
