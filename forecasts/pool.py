"""Fit many series on all cores.

A process pool rather than threads: Stan fits are separate processes driven by Python code
that holds the GIL between them. Details that matter (DESIGN.md traps):

- `forkserver` start method: the caller (Dagster, DuckDB) has threads, and forking a
  threaded process can deadlock; `max_tasks_per_child` also refuses plain `fork`.
- workers recycle after `max_tasks_per_child` chunks so a leak in Stan/Prophet cannot grow;
- `OMP_NUM_THREADS=1` in each worker: two workers on two cores, not two × N threads;
- each worker points cmdstanpy's temp dir into a directory this pool owns, and the pool
  deletes it at the end — cmdstanpy otherwise leaves files until interpreter exit, which
  for a killed worker means never.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

from forecasts.intermittent import CROSTON, SES
from forecasts.model import SeriesForecast, SeriesTask, forecast_series, primary_method

STATSFORECAST_METHODS = (CROSTON, SES)
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# Imported once in the fork server, inherited by every worker it forks: importing
# statsforecast costs 6–10 s per process here (it pulls scipy, statsmodels and dask), which
# would otherwise be paid again at every worker recycle — but only when some task needs it
# (Croston, the SES baseline). Prophet itself (3 s) is not needed: Prophet fits run its Stan
# model directly (prophet_direct.py); the rare fallback through the Prophet object imports it.
_PRELOAD = ["forecasts.model"]
_PRELOAD_STATSFORECAST = ["forecasts.statsforecast_preload"]


def _point_cmdstan_tmp_at(wdir: str) -> None:
    """cmdstanpy binds `_TMPDIR` (one mkdtemp at import) into several modules; when it was
    imported in the fork server, every worker would share that dir. Give each worker its own
    so its files die with the pool's directory."""
    for name, mod in list(sys.modules.items()):
        if (name == "cmdstanpy" or name.startswith("cmdstanpy.")) and hasattr(mod, "_TMPDIR"):
            setattr(mod, "_TMPDIR", wdir)


def _init_worker(tmp_root: str) -> None:
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    wdir = tempfile.mkdtemp(prefix=f"w{os.getpid()}-", dir=tmp_root)
    os.environ["TMPDIR"] = wdir
    tempfile.tempdir = wdir
    from forecasts.prophet_model import quiet_stan_logs

    # a direct Stan fit writes under tempfile.gettempdir() (now wdir); cmdstanpy, if some
    # module imported it before the fork, is re-pointed here too
    _point_cmdstan_tmp_at(wdir)
    quiet_stan_logs()


def _run_chunk(tasks: list[SeriesTask]) -> list[SeriesForecast]:
    return [forecast_series(t) for t in tasks]


def needs_statsforecast(tasks: Sequence[SeriesTask]) -> bool:
    return any((t.method or primary_method(t.kind)) in STATSFORECAST_METHODS for t in tasks)


def chunked(seq: Sequence[SeriesTask], size: int) -> list[list[SeriesTask]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


def run_tasks(
    tasks: Sequence[SeriesTask],
    workers: int = 2,
    chunk_size: int | None = None,
    max_tasks_per_child: int = 50,
) -> list[SeriesForecast]:
    """Forecast every task; results in the order of `tasks` (deterministic output does not
    depend on which worker finished first)."""
    tasks = list(tasks)
    if not tasks:
        return []
    if workers <= 1 or len(tasks) == 1:
        return _run_chunk(tasks)
    # a few chunks per worker: enough to balance slow (Prophet) and fast (Croston) series,
    # few enough that pickling overhead stays small
    size = chunk_size or max(1, min(16, len(tasks) // (workers * 4) or 1))
    tmp_root = tempfile.mkdtemp(prefix="civicflow-forecast-")
    try:
        ctx = mp.get_context("forkserver")
        # only the first pool of a process starts the fork server: what it preloads then stays
        ctx.set_forkserver_preload(_PRELOAD + (_PRELOAD_STATSFORECAST if needs_statsforecast(tasks) else []))
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(tmp_root,),
            max_tasks_per_child=max_tasks_per_child,
        ) as ex:
            out: list[SeriesForecast] = []
            for res in ex.map(_run_chunk, chunked(tasks, size)):
                out.extend(res)
        return out
    except BrokenProcessPool:
        # a worker died (OOM, a caller's main module that cannot be re-imported): finish the
        # night sequentially rather than not at all — results are identical, only slower
        return _run_chunk(tasks)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def tmp_dirs_left() -> list[Path]:
    """Pool temp roots still on disk (for tests: should be none after run_tasks)."""
    return sorted(Path(tempfile.gettempdir()).glob("civicflow-forecast-*"))
