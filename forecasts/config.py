"""Where and how the forecast fits run: one typed value, built at the edge and passed down.

The CLI and the Dagster definitions build a `ForecastConfig` (from the environment, with
`forecast_config_from_env`) and hand it to the entry points (`run.run_nightly_forecast`,
`evaluate.run_warehouse_backtest`, `backtest.run_backtest`); nothing in `forecasts/` reads
the environment itself. The defaults are what a night runs with when nothing is set.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from warehouse.settings import env_value

SCHEDULER_ENV = "CIVICFLOW_DASK_SCHEDULER"
CONNECT_TIMEOUT_ENV = "CIVICFLOW_DASK_TIMEOUT_S"
RECYCLE_ENV = "CIVICFLOW_FORECAST_RECYCLE_CHUNKS"
CHUNK_SIZE_ENV = "CIVICFLOW_FORECAST_CHUNK_SIZE"
CHROMIUM_ENV = "CIVICFLOW_CHROMIUM"

VARIABLES = {
    SCHEDULER_ENV: "a Dask scheduler (tcp://host:8786) that fits the forecasts; unset: the local process pool",
    CONNECT_TIMEOUT_ENV: "seconds to wait for that scheduler before falling back to the local pool (default 30)",
    RECYCLE_ENV: "chunks of series each local forecast worker runs before it is replaced by a fresh one (default 50)",
    CHUNK_SIZE_ENV: "series sent to a worker at a time; unset: a few chunks per worker, at most 16 series each",
    CHROMIUM_ENV: "headless Chromium that prints the pick lists to PDF; unset: `chromium` on PATH if there; `off`: no PDF",
}


@dataclass(frozen=True)
class ForecastConfig:
    """The forecast engine's knobs. None of them changes a forecast: every seed lives in the
    task, so the same night gives the same numbers on any engine and any chunking."""

    # A Dask distributed scheduler address (`tcp://host:8786`). Set: the series are fitted
    # on that cluster, whose workers must run the same civicflow and libraries. None: the
    # local process pool. A scheduler that cannot be reached is logged and the local pool
    # takes over, so a network problem never costs the night's plan.
    dask_scheduler: str | None = None
    # How long to wait for the scheduler to answer before that fallback.
    dask_connect_timeout_s: float = 30.0
    # Chunks each local pool worker runs before the pool is replaced by fresh workers, so a
    # leak in Stan or Prophet cannot grow for a whole night. Lower it when workers' memory
    # climbs; each new wave costs milliseconds (the fork server outlives the pool).
    recycle_after_chunks: int = 50
    # Series per chunk, the unit a worker (local or Dask) receives. None: a few chunks per
    # worker (at most 16 series), enough to balance slow Prophet and fast Croston series
    # while pickling and dispatch stay small.
    chunk_size: int | None = None
    # A headless Chromium that prints the night's pick lists to one PDF (offline, one page a
    # hub). None: no PDF; the HTML pick lists are written either way.
    chromium: str | None = None

    def __post_init__(self) -> None:
        if self.dask_connect_timeout_s <= 0:
            raise ValueError(f"dask_connect_timeout_s must be positive, not {self.dask_connect_timeout_s}")
        if self.recycle_after_chunks < 1:
            raise ValueError(f"recycle_after_chunks must be at least 1, not {self.recycle_after_chunks}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 (or None), not {self.chunk_size}")


def forecast_config_from_env(env: Mapping[str, str]) -> ForecastConfig:
    """The config the given environment asks for (the caller passes `os.environ` or a test's
    dict); an empty value counts as unset."""
    defaults = ForecastConfig()

    def get(name: str) -> str | None:
        return env_value(env, name)

    timeout, recycle, chunk = get(CONNECT_TIMEOUT_ENV), get(RECYCLE_ENV), get(CHUNK_SIZE_ENV)
    chromium = get(CHROMIUM_ENV)
    if chromium is None:
        chromium = shutil.which("chromium", path=env.get("PATH", "")) or shutil.which("chromium-browser", path=env.get("PATH", ""))  # the given PATH only
    elif chromium.lower() == "off":
        chromium = None
    return ForecastConfig(
        dask_scheduler=get(SCHEDULER_ENV),
        dask_connect_timeout_s=float(timeout) if timeout else defaults.dask_connect_timeout_s,
        recycle_after_chunks=int(recycle) if recycle else defaults.recycle_after_chunks,
        chunk_size=int(chunk) if chunk else defaults.chunk_size,
        chromium=chromium,
    )
