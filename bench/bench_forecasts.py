"""Series per second for fit + predict: civicflow's pool vs a plain sequential loop of
default Prophet fits on the same series, in the same run (ratios, not absolute targets);
and the nightly model (model.BLEND: Prophet, ETS and seasonal naive) against the model it
replaced (Prophet alone) on the same warm pool, interleaved in the same rounds — what the
better forecast costs.

    .venv/bin/python bench/bench_forecasts.py [--series 40] [--days 730] [--horizon 7] [--workers 2]

The pool figure is reported twice: cold (includes starting the fork server, which imports
pandas and civicflow's forecasting modules once, 2–4 s here — statsforecast too when a run
has intermittent series, not in this bench — while this process fits the last chunks
itself) and warm (later batches on the started server, as in a backtest's later origins).
civicflow in one process (no pool) shows the per-core cost. Rounds of the three are
interleaved and medians compared, so a noisy neighbour on a shared machine hits all of
them; the per-round ratios show how robust the ratio is.
Ends with a check that no cmdstan/pool temp files were left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np


def make_series(n_series: int, n_days: int, seed: int = 1):

    rng = np.random.default_rng(seed)
    start = date(2023, 1, 1)
    ds = np.array([start + timedelta(days=k) for k in range(n_days)], dtype="datetime64[D]")
    t = np.arange(n_days)
    out = []
    for i in range(n_series):
        base = rng.uniform(10, 60)
        ev = set(range(int(rng.integers(0, 10)), n_days + 14, 17))
        mu = base * (1 + 0.25 * np.sin(2 * np.pi * t / 7 + i) + 0.15 * np.sin(2 * np.pi * t / 365.25))
        mu = mu + np.array([base if k in ev else 0 for k in range(n_days)])
        y = rng.poisson(mu).astype(float)
        events = tuple(("event_fair", (start + timedelta(days=k)), (start + timedelta(days=k))) for k in sorted(ev))
        out.append((ds, y, events))
    return out


def tasks_for(series, horizon: int, method: str | None = None):
    """The nightly tasks of the series (`method`: force one, as the old nightly model)."""
    from forecasts.model import SeriesTask
    from forecasts.series import SMOOTH

    tasks = []
    for i, (ds, y, events) in enumerate(series):
        fut = np.arange(ds[-1] + 1, ds[-1] + 1 + horizon)
        tasks.append(SeriesTask(f"s{i:03d}", ds, y, fut, kind=SMOOTH, events=events, method=method))
    return tasks


def plain_loop(series, horizon: int) -> float:
    """What a first version would do: default Prophet, one after another."""
    import pandas as pd
    from prophet import Prophet

    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t = time.perf_counter()
    for ds, y, events in series:
        hol = pd.DataFrame({"holiday": [e[0] for e in events], "ds": pd.to_datetime([e[1] for e in events])})
        m = Prophet(holidays=hol)
        m.fit(pd.DataFrame({"ds": pd.to_datetime(ds), "y": y}))
        m.predict(m.make_future_dataframe(horizon))
    return time.perf_counter() - t


def temp_files() -> list[Path]:
    """What civicflow's fits could leave in the temp dir: pool roots and per-fit Stan dirs."""
    tmp = Path(tempfile.gettempdir())
    return sorted([*tmp.glob("civicflow-forecast-*"), *tmp.glob("cf-stan-*")])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--loop-series", type=int, default=12, help="series for the (slow) plain loop")
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--horizon", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5,
                    help="interleaved rounds; the median of each is compared (the machine may be shared)")
    a = ap.parse_args()
    from forecasts.model import PROPHET, forecast_series
    from forecasts.pool import run_tasks

    series = make_series(a.series, a.days)
    tasks = tasks_for(series, a.horizon)
    old_tasks = tasks_for(series, a.horizon, PROPHET)  # the nightly model before the blend
    load0 = os.getloadavg()[0]
    before = set(temp_files())

    t = time.perf_counter()
    res = run_tasks(tasks, workers=a.workers)
    cold = time.perf_counter() - t
    methods = sorted({r.method for r in res})
    warm_rates, old_rates, loop_rates, one_rates = [], [], [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        run_tasks(tasks, workers=a.workers)
        warm_rates.append(a.series / (time.perf_counter() - t))
        t = time.perf_counter()
        run_tasks(old_tasks, workers=a.workers)
        old_rates.append(a.series / (time.perf_counter() - t))
        loop_rates.append(a.loop_series / plain_loop(series[: a.loop_series], a.horizon))
        t = time.perf_counter()
        for task in tasks:
            forecast_series(task)
        one_rates.append(a.series / (time.perf_counter() - t))
    warm_rate, old_rate, loop_rate, one_rate = (float(np.median(r))
                                                for r in (warm_rates, old_rates, loop_rates, one_rates))
    cold_rate = a.series / cold
    left = sorted(set(temp_files()) - before)
    rounds = lambda rs: ", ".join(f"{r:.2f}" for r in rs)  # noqa: E731
    print(f"history {a.days} days, horizon {a.horizon}, workers {a.workers}, methods {methods}, repeats {a.repeats}")
    print(f"civicflow pool (cold, incl. worker start): {a.series} series in {cold:6.2f} s = {cold_rate:6.2f} series/s")
    print(f"civicflow pool (warm, median):             {a.series} series, {warm_rate:6.2f} series/s  (rounds: {rounds(warm_rates)})")
    print(f"old nightly model, Prophet alone (median): {a.series} series, {old_rate:6.2f} series/s  (rounds: {rounds(old_rates)})")
    print(f"ratio blend/Prophet alone on the warm pool: {warm_rate / old_rate:5.2f}x "
          f"(per round: {rounds([w / o for w, o in zip(warm_rates, old_rates)])})")
    print(f"civicflow one process, no pool (median):   {a.series} series, {one_rate:6.2f} series/s  (rounds: {rounds(one_rates)})")
    print(f"plain loop, default Prophet (median):      {a.loop_series} series, {loop_rate:6.2f} series/s  (rounds: {rounds(loop_rates)})")
    print(f"ratio pool/loop: cold {cold_rate / loop_rate:5.2f}x, warm {warm_rate / loop_rate:5.2f}x "
          f"(per round: {rounds([w / lp for w, lp in zip(warm_rates, loop_rates)])}); "
          f"one process/loop {one_rate / loop_rate:5.2f}x")
    print(f"1-min load average: {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end on {os.cpu_count()} CPUs "
          "(other processes squeeze the 2-worker pool more than the 1-process loop)")
    print(f"temp files left by civicflow's fits: {len(left)}" + (f" {[str(p) for p in left[:5]]}" if left else ""))


if __name__ == "__main__":
    main()
