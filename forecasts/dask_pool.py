"""The forecast fan-out on a Dask distributed cluster instead of the local process pool.

Chosen when `ForecastConfig.dask_scheduler` names a scheduler (`tcp://host:8786`; engine.py
decides). The work is the same: chunks of `SeriesTask`s, each run by `chunks.run_chunk` →
`model.forecast_series` on a worker, results gathered in submission order. Every seed lives
in the task, so the forecasts are the ones the local pool gives, as long as the workers run
the same civicflow and libraries (docs/operations-forecasts.md).

Tasks go to the workers with `scatter` rather than inside the task graph: a large city's
history would otherwise travel through the scheduler (and trip Dask's large-graph warning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from forecasts.chunks import THREAD_VARS, chunk_size_for, chunked, run_chunk
from forecasts.model import SeriesForecast, SeriesTask


def run_chunk_on_worker(tasks: list[SeriesTask]) -> list[SeriesForecast]:
    """A worker's side: one Stan thread per fit, Stan/Prophet logs quiet (as the local
    pool's worker initializer does), then the same per-series code."""
    from forecasts.prophet_model import quiet_stan_logs

    for v in THREAD_VARS:  # the Dask worker's own environment, for the Stan processes it starts
        os.environ.setdefault(v, "1")
    quiet_stan_logs()
    return run_chunk(tasks)


def run_on_dask(
    tasks: Sequence[SeriesTask],
    address: str,
    connect_timeout_s: float = 30.0,
    chunk_size: int | None = None,
) -> list[SeriesForecast]:
    """Forecast every task on the cluster at `address`; results in the order of `tasks`.
    Raises OSError / TimeoutError when the scheduler cannot be reached within
    `connect_timeout_s`."""
    from distributed import Client

    tasks = list(tasks)
    if not tasks:
        return []
    with Client(address, timeout=connect_timeout_s, set_as_default=False) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        chunks = chunked(tasks, chunk_size or chunk_size_for(len(tasks), n_workers))
        data = client.scatter(chunks)
        # pure=False: a re-run of the same night is recomputed, never served from a cache
        futures = client.map(run_chunk_on_worker, data, pure=False)
        results = client.gather(futures)
    return [r for chunk in results for r in chunk]
