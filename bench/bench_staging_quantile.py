"""The staging decision, checked on the cost backtest: realised fulfilment cost per category
when the plan stages at level τ (every τ from 0.05 to 0.99) instead of at the critical
ratio under / (under + over) the planner picks — on simulated cities, with the city's own
per-category costs.

    .venv/bin/python bench/bench_staging_quantile.py [--cities sim_small,sim_medium] [--series 48]

Prints, per city and category, the planner's level, the level of lowest realised cost and
how much more the planner's level cost than the best (%), and the cost curve around them.
Capacity is not applied (uncapped hubs), so the curve shows the quantile decision alone.
"""

from __future__ import annotations

import argparse
import time

import polars as pl
from bench_forecast_accuracy import sim_city

from forecasts.backtest import CIVICFLOW, BacktestConfig, format_table, run_backtest
from forecasts.value import quantile_sweep, sweep_verdict
from ingest.simulator.city import build_city
from ingest.simulator.sizes import SIZES


def category_costs(size: str, seed: int = 7) -> dict[str, tuple[float, float]]:
    city = build_city(SIZES[size], seed)
    return {str(c): (float(u), float(o)) for c, u, o in zip(city.cat_ids, city.cat_under, city.cat_over)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cities", default="sim_small,sim_medium")
    ap.add_argument("--series", type=int, default=48)
    ap.add_argument("--origins", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    for name in a.cities.split(","):
        size = name.removeprefix("sim_")
        series, events, attendance = sim_city(size, a.series)
        t = time.perf_counter()
        bt = run_backtest(series, events, BacktestConfig(horizon=7, n_origins=a.origins, methods=(CIVICFLOW,)),
                          workers=a.workers, attendance=attendance or None)
        sweep = quantile_sweep(bt.points, category_costs(size))
        v = sweep_verdict(sweep)
        print(f"\n{name}: {bt.n_series} series, {bt.n_origins} origins × 7 days, {time.perf_counter() - t:.0f} s")
        print(format_table(v))
        curve = sweep.filter(pl.col("level").is_in([0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]))
        print(format_table(curve.pivot(on="level", index="category", values="cost").sort("category")))


if __name__ == "__main__":
    main()
