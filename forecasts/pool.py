"""Fit many series on all cores of this machine (engine.py picks this or a Dask cluster).

A process pool rather than threads: Stan fits are separate processes driven by Python code
that holds the GIL between them. Details that matter (DESIGN.md traps):

- `forkserver` start method: the caller (Dagster, DuckDB) has threads, and forking a
  threaded process can deadlock.
- workers recycle after `max_tasks_per_child` chunks so a leak in Stan/Prophet cannot grow
  (a new pool per wave of chunks: `_run_wave` says why);
- `OMP_NUM_THREADS=1` (chunks.THREAD_VARS) in each worker: two workers on two cores, not
  two × N threads;
- each worker's temp dir (where a direct Stan fit writes its input and output files,
  deleted after each fit, and cmdstanpy's if the Prophet-object fallback runs) is inside
  a directory this pool owns and deletes at the end — cmdstanpy otherwise leaves files
  until interpreter exit, which for a killed worker means never.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from forecasts.chunks import THREAD_VARS, chunk_size_for, chunked, run_chunk
from forecasts.intermittent import AUTO_ARIMA, AUTO_ETS, CROSTON, ETS, SES
from forecasts.model import BLEND, ENSEMBLE, SeriesForecast, SeriesTask, primary_method

STATSFORECAST_METHODS = (CROSTON, SES, ETS, AUTO_ETS, AUTO_ARIMA, ENSEMBLE, BLEND)
log = logging.getLogger(__name__)


# Imported once in the fork server, inherited by every worker it forks: importing
# statsforecast costs 6–10 s per process here (it pulls scipy, statsmodels and dask), which
# would otherwise be paid again at every worker recycle — but only when some task needs it
# (the nightly blend's ETS, Croston, the baselines). Prophet itself (3 s) is not needed: Prophet fits run its Stan
# model directly (prophet_direct.py); the rare fallback through the Prophet object imports it.
_PRELOAD = ["forecasts.chunks"]  # and through it forecasts.model
_PRELOAD_STATSFORECAST = ["forecasts.statsforecast_preload"]


def _point_cmdstan_tmp_at(wdir: str) -> None:
    """cmdstanpy binds `_TMPDIR` (one mkdtemp at import) into several modules; when it was
    imported in the fork server, every worker would share that dir. Give each worker its own
    so its files die with the pool's directory."""
    for name, mod in list(sys.modules.items()):
        if (name == "cmdstanpy" or name.startswith("cmdstanpy.")) and hasattr(mod, "_TMPDIR"):
            mod._TMPDIR = wdir


def _init_worker(tmp_root: str) -> None:
    for v in THREAD_VARS:
        os.environ[v] = "1"
    wdir = tempfile.mkdtemp(prefix=f"w{os.getpid()}-", dir=tmp_root)
    os.environ["TMPDIR"] = wdir
    tempfile.tempdir = wdir
    from forecasts.prophet_model import quiet_stan_logs

    # a direct Stan fit writes under tempfile.gettempdir() (now wdir); cmdstanpy, if some
    # module imported it before the fork, is re-pointed here too
    _point_cmdstan_tmp_at(wdir)
    quiet_stan_logs()


def needs_statsforecast(tasks: Sequence[SeriesTask]) -> bool:
    return any((t.method or primary_method(t.kind, t.freq)) in STATSFORECAST_METHODS for t in tasks)


def work_while_pool_starts(chunks: list[list[SeriesTask]], futures: list[Future]) -> dict[int, list[SeriesForecast]]:
    """Run chunks in this process until the first worker result arrives.

    A cold pool needs seconds before its first fit (the fork server imports pandas and
    civicflow; statsforecast too for Croston nights), while this process has them imported
    already: it takes chunks from the back of the queue — ones no worker has picked up,
    whose futures can still be cancelled — and stops as soon as a worker has finished one,
    so it never competes with warm workers for long. Chunks needing statsforecast are left
    to the workers unless this process has it imported (an import here would block it for
    6–10 s). Same code, same results: only the wall clock changes.
    """
    mine: dict[int, list[SeriesForecast]] = {}
    for i in reversed(range(len(chunks))):
        if any(f.done() and not f.cancelled() for f in futures):  # a cancelled one is mine
            break
        if needs_statsforecast(chunks[i]) and "statsforecast.models" not in sys.modules:
            continue
        if not futures[i].cancel():  # a worker has it (and every chunk before it)
            break
        mine[i] = run_chunk(chunks[i])
    return mine


def run_tasks(
    tasks: Sequence[SeriesTask],
    workers: int = 2,
    chunk_size: int | None = None,
    max_tasks_per_child: int = 50,
) -> list[SeriesForecast]:
    """Forecast every task on this machine; results in the order of `tasks` (deterministic
    output does not depend on which worker finished first)."""
    return run_tasks_with_engine(tasks, workers, chunk_size, max_tasks_per_child)[0]


def run_tasks_with_engine(
    tasks: Sequence[SeriesTask],
    workers: int = 2,
    chunk_size: int | None = None,
    max_tasks_per_child: int = 50,
) -> tuple[list[SeriesForecast], str]:
    """run_tasks, plus how they ran: `local pool (N workers)`, `one process` (one worker or
    one task, or the pool broke) or `none` (no tasks)."""
    tasks = list(tasks)
    if not tasks:
        return [], "none"
    if workers <= 1 or len(tasks) == 1:
        return run_chunk(tasks), "one process"
    size = chunk_size or chunk_size_for(len(tasks), workers)
    tmp_root = tempfile.mkdtemp(prefix="civicflow-forecast-")
    try:
        ctx = mp.get_context("forkserver")
        # only the first pool of a process starts the fork server: what it preloads then stays
        ctx.set_forkserver_preload(_PRELOAD + (_PRELOAD_STATSFORECAST if needs_statsforecast(tasks) else []))
        chunks = chunked(tasks, size)
        out: list[SeriesForecast] = []
        for first in range(0, len(chunks), workers * max_tasks_per_child):
            wave = chunks[first : first + workers * max_tasks_per_child]
            out += _run_wave(wave, workers, ctx, tmp_root, warm_start=first == 0)
        return out, f"local pool ({workers} workers)"
    except BrokenProcessPool:
        # a worker died (OOM, a caller's main module that cannot be re-imported): finish the
        # night sequentially rather than not at all — results are identical, only slower
        log.warning("a forecast worker died; finishing in this process")
        return run_chunk(tasks), "one process (pool broke)"
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _run_wave(chunks: list[list[SeriesTask]], workers: int, ctx, tmp_root: str, warm_start: bool) -> list[SeriesForecast]:
    """One pool of fresh workers for at most `workers × max_tasks_per_child` chunks.

    This is how workers are recycled: not with ProcessPoolExecutor's `max_tasks_per_child`,
    which on Python 3.11 never replaces a retired worker once a backlog is queued, so the
    pool hangs for good when every worker has retired (CPython gh-115634; the fix went to
    3.13 and later, 3.11 only gets security fixes). The fork server outlives the pool, so a
    new wave's workers start in milliseconds."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(tmp_root,)) as ex:
        futures = [ex.submit(run_chunk, c) for c in chunks]
        done = work_while_pool_starts(chunks, futures) if warm_start else {}
        return [r for i, f in enumerate(futures) for r in (done[i] if i in done else f.result())]


def tmp_dirs_left() -> list[Path]:
    """Pool temp roots still on disk (for tests: should be none after run_tasks)."""
    return sorted(Path(tempfile.gettempdir()).glob("civicflow-forecast-*"))
