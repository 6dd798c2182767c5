"""Simulator throughput: telemetry rows per second for the large city, against a reference.

Runs `simulate(size="large")` for a slice of days (default 60: long enough for the 2 worker processes to pay for their start; the full year is 365) in a
temporary landing zone and reports telemetry rows written per second of wall time for the
*whole* run (every source, faults, reference data and ground truth included — telemetry is
the figure the issue sets, ≥ 500,000 rows/s on 2 cores). As the in-run reference it then
writes the same number of telemetry-shaped rows with one trivial polars `write_ndjson`
(columns from numpy, timestamps formatted by polars, no city, no faults, no truth) and
prints the ratio, so the figure can be read on any machine.

    .venv/bin/python bench/bench_simulator.py [--days 60] [--size large] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.simulator import SIZES, simulate  # noqa: E402
from ingest.simulator.clock import fmt_local, fmt_utc  # noqa: E402

TARGET = 500_000


def cpu_seconds() -> float:
    """CPU time of this process and its (finished) workers: the fair figure on a shared box."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def reference_write(n: int, path: Path, files: int) -> float:
    """Seconds to build and write n telemetry-shaped rows with plain numpy + polars."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    t = 1_767_571_200 + rng.integers(0, 86_400 * 14, n)
    df = pl.DataFrame(
        {
            "device_id": pl.Series(np.char.add("LK-H", (rng.integers(0, 460, 1000)).astype(str))).gather(rng.integers(0, 1000, n)),
            "hub_id": pl.Series(np.char.add("H", (rng.integers(0, 460, 1000)).astype(str))).gather(rng.integers(0, 1000, n)),
            "seq": np.arange(n, dtype=np.int64),
            "_t": t,
            "kind": pl.Series(["heartbeat", "door", "occupancy"]).gather(rng.integers(0, 3, n)),
            "category": pl.Series([None, "parcels"], dtype=pl.String).gather(rng.integers(0, 2, n)),
            "value": rng.random(n),
            "unit": pl.Series(["none", "state", "ratio"]).gather(rng.integers(0, 3, n)),
        }
    ).with_columns(device_time=fmt_local("_t"), received_at=fmt_utc(pl.col("_t") + 2))
    cols = ["device_id", "hub_id", "seq", "device_time", "received_at", "kind", "category", "value", "unit"]
    step = -(-n // files)
    for k in range(files):
        df.slice(k * step, step).select(cols).write_ndjson(path / f"ref_{k:04d}.jsonl")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="large", choices=list(SIZES))
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        c0 = cpu_seconds()
        s = simulate(tmp / "landing", size=args.size, days=args.days, seed=7, workers=args.workers)
        sim_cpu = cpu_seconds() - c0
        rows = s.rows["telemetry"]
        rate = rows / s.seconds
        files = sum(1 for p in (tmp / "landing" / "telemetry").rglob("*.jsonl"))
        ref_dir = tmp / "reference_write"
        ref_dir.mkdir()
        c0 = cpu_seconds()
        ref_s = reference_write(rows, ref_dir, files)
        ref_cpu = cpu_seconds() - c0
        ref_rate = rows / ref_s
        print(f"cpus available        : {os.cpu_count()}  (load average {os.getloadavg()[0]:.2f})")
        print(f"simulated             : size={args.size} days={args.days} files={s.files_written:,} bytes={s.bytes_written:,}")
        print("rows                  : " + ", ".join(f"{k}={v:,}" for k, v in sorted(s.rows.items())))
        print(f"simulate wall time    : {s.seconds:.2f} s")
        print(f"telemetry rows/s      : {rate:,.0f}  (target {TARGET:,}: {'met' if rate >= TARGET else 'NOT met'})")
        print(f"reference write rows/s: {ref_rate:,.0f}  (same rows, plain polars write_ndjson, {ref_s:.2f} s)")
        print(f"ratio simulate/ref    : {rate / ref_rate:.2f}  (wall time)")
        print(f"per CPU-second        : simulate {rows / sim_cpu:,.0f} rows, reference {rows / ref_cpu:,.0f} rows, "
              f"ratio {(rows / sim_cpu) / (rows / ref_cpu):.2f}")
        if args.size == "large":
            year = SIZES["large"].suggested_days * rows / args.days
            print(f"large year (estimate) : {year:,.0f} telemetry rows, ~{year / rate:,.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
