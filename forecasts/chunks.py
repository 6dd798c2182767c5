"""Chunks of series tasks: how a night's tasks are cut into chunks, and how any worker (a
local pool process or a Dask worker) runs one.

Shared by pool.py and dask_pool.py, so that neither imports the other: both engines cut the
tasks the same way and run every chunk through the same per-series code.
"""

from __future__ import annotations

from collections.abc import Sequence

from forecasts.model import SeriesForecast, SeriesTask, forecast_series

# Set to 1 in every worker: two workers on two cores, not two × N threads (and the Stan
# processes a worker starts inherit them).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run_chunk(tasks: list[SeriesTask]) -> list[SeriesForecast]:
    return [forecast_series(t) for t in tasks]


def chunked(seq: Sequence[SeriesTask], size: int) -> list[list[SeriesTask]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


def chunk_size_for(n_tasks: int, workers: int) -> int:
    """A few chunks per worker: enough to balance slow (Prophet) and fast (Croston) series,
    few enough that pickling and dispatch overhead stays small."""
    return max(1, min(16, n_tasks // (workers * 4) or 1))
