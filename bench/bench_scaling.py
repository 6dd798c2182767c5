"""How the nightly run's cost grows with the city: tiny → small → medium → large.

For each size the simulator writes DAYS + 1 days into a home of its own (kept under --work
and reused when it already holds the same simulation). Then, each in a child process so
their memory peaks do not mix:

  full         the real `nightly` Dagster job (`run_nightly`) over the first DAYS days on a
               fresh warehouse: ingest → dbt build → forecasts and plan → publish;
  incremental  the nightly run for the one day after them, on top of that warehouse: what
               the schedule does every night.

Stage times come from the run's own Dagster event log (step start → success), the peak
memory from sampling the RSS of the whole process tree (dbt and the forecast workers are
children) every 0.2 s, attributed to the stage running at that moment. Printed as a table,
saved as CSV and as an HTML chart (plotly, inlined: opens with no network):

    .venv/bin/python bench/bench_scaling.py [--sizes tiny,small,medium,large]
        [--days tiny=28,small=120,medium=365,large=365] [--work DIR] [--out bench/results]

The reference of every ratio is measured in the same run: the incremental run against the
full run of the same city, and each size against the next smaller one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DAYS = {"tiny": 28, "small": 120, "medium": 365, "large": 365}
START = date(2026, 1, 1)
STAGES = ("ingest", "dbt", "forecast", "publish")


def stage_of(step_key: str) -> str:
    if step_key.startswith("ingest_"):
        return "ingest"
    if step_key.startswith("warehouse_dbt"):
        return "dbt"
    if "forecast" in step_key or "calibration" in step_key or "backtest" in step_key:
        return "forecast"
    return "publish"


class TreeSampler(threading.Thread):
    """Samples the RSS of this process and all its children (dbt, forecast workers)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.interval_s, self.samples, self.stop = psutil.Process(), interval_s, [], threading.Event()

    def tree_rss(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a child that just exited
                pass
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), self.tree_rss()))
            self.stop.wait(self.interval_s)


def step_spans(settings, run_id: str) -> list[tuple[str, float, float]]:
    """(stage, start, end) per step of a run, from the Dagster event log."""
    import dagster as dg

    from pipelines.nightly import open_instance

    starts, spans = {}, []
    with open_instance(settings) as instance:
        for e in instance.all_logs(run_id):
            if not e.is_dagster_event:
                continue
            kind = e.dagster_event.event_type
            if kind == dg.DagsterEventType.STEP_START:
                starts[e.dagster_event.step_key] = e.timestamp
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                key = e.dagster_event.step_key
                spans.append((stage_of(key), starts.get(key, e.timestamp), e.timestamp))
    return spans


def child(size: str, days: int, work: Path, mode: str) -> dict:
    """One nightly run (full or incremental) of one city size, in this (child) process."""
    from pipelines.nightly import run_nightly
    from pipelines.settings import Settings

    settings = Settings.from_env(home=work / size)
    last_full = START + timedelta(days=days - 1)
    first, last = (START, last_full) if mode == "full" else (last_full + timedelta(days=1),) * 2
    sampler = TreeSampler()
    sampler.start()
    t0 = time.time()
    report = run_nightly(settings, (first, last))
    wall = time.time() - t0
    sampler.stop.set()
    sampler.join()
    if not report.success:
        raise SystemExit(f"{size} {mode} run failed: {report.failure}\nlog: {report.log_path}")
    spans = step_spans(settings, report.run_id)
    out = {"size": size, "mode": mode, "days": (last - first).days + 1, "wall_s": round(wall, 1),
           "peak_rss_mb": round(max(r for _, r in sampler.samples) / 2**20), "series": report.series,
           "plan_rows": report.plan_rows,
           "rows_loaded": sum(int(r.get("rows_loaded", 0)) for r in report.ingest)}
    for stage in STAGES:
        mine = [(s, e) for st, s, e in spans if st == stage]
        out[f"{stage}_s"] = round(sum(e - s for s, e in mine), 1)
        in_stage = [r for t, r in sampler.samples if any(s <= t <= e for s, e in mine)]
        out[f"{stage}_peak_mb"] = round(max(in_stage) / 2**20) if in_stage else 0
    return out


def simulate_city(size: str, days: int, work: Path, seed: int) -> dict:
    """Simulate DAYS + 1 days (the last one is the incremental night) unless already there."""
    from ingest.simulator import SIZES, simulate

    home = work / size
    stamp = home / "simulated.json"
    want = {"size": size, "days": days + 1, "seed": seed, "start": START.isoformat()}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return want
    shutil.rmtree(home, ignore_errors=True)
    (home / "landing").mkdir(parents=True)
    t0 = time.time()
    simulate(home / "landing", size=size, days=days + 1, start=START, seed=seed, workers=2)
    stamp.write_text(json.dumps(want))
    spec = SIZES[size]
    print(f"  simulated {size}: {spec.neighbourhoods} neighbourhoods, {days + 1} days in {time.time() - t0:.0f} s", flush=True)
    return want


def fresh_warehouse(home: Path) -> None:
    """Forget everything a previous bench run built; keep the landing zone."""
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "dagster", "published", "exports", "logs", "lake"):
        p = home / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_child(size: str, days: int, work: Path, mode: str) -> dict:
    """One run in a child process; a failed run (an OOM kill included) comes back as a row
    that says so, with the end of its output, and the bench goes on."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", size, "--child-days", str(days), "--child-mode", mode, "--work", str(work)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if out.returncode != 0:
        tail = (out.stdout[-1000:] + out.stderr[-3000:]).strip()
        return {"size": size, "mode": mode, "failed": f"exit {out.returncode}: {tail[-300:]}", "log_tail": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def telemetry_rows(home: Path) -> int:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM raw.telemetry").fetchone()[0]
    finally:
        con.close()


def write_chart(rows: list[dict], path: Path) -> None:
    from plotly.subplots import make_subplots

    full = [r for r in rows if r["mode"] == "full"]
    inc = [r for r in rows if r["mode"] == "incremental"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("seconds per stage (full run)", "full vs incremental nightly run"))
    for stage in STAGES:
        fig.add_bar(x=[r["size"] for r in full], y=[r[f"{stage}_s"] for r in full], name=stage, row=1, col=1)
    fig.add_scatter(x=[r["telemetry_rows"] for r in full], y=[r["wall_s"] for r in full], name="full", mode="lines+markers", row=1, col=2)
    fig.add_scatter(x=[r["telemetry_rows"] for r in inc], y=[r["wall_s"] for r in inc], name="incremental", mode="lines+markers", row=1, col=2)
    fig.update_layout(barmode="stack", title="civicflow nightly run by city size")
    fig.update_xaxes(title_text="telemetry rows in the warehouse", type="log", row=1, col=2)
    fig.update_yaxes(title_text="seconds", row=1, col=1)
    fig.update_yaxes(title_text="seconds", type="log", row=1, col=2)
    fig.write_html(str(path), include_plotlyjs="inline")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,small,medium,large", help="comma-separated city sizes")
    ap.add_argument("--days", default="", help=f"days of history per size, e.g. large=365 (default {DEFAULT_DAYS})")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("CIVICFLOW_BENCH_WORK", "/tmp/civicflow-scaling")),
                    help="where the cities' homes are kept (large needs ~15 GB)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="CSV and chart go here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-days", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.child_days, args.work, args.child_mode)))
        return

    from rich.console import Console

    days = dict(DEFAULT_DAYS) | {k: int(v) for k, v in (kv.split("=") for kv in args.days.split(",") if kv)}
    sizes = [s for s in args.sizes.split(",") if s]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    console, rows = Console(width=220), []
    for size in sizes:
        console.print(f"[bold]{size}[/]: {days[size]} days + 1 incremental night")
        simulate_city(size, days[size], args.work, args.seed)
        fresh_warehouse(args.work / size)
        for mode in ("full", "incremental"):
            r = run_child(size, days[size], args.work, mode)
            rows.append(r)
            if "failed" in r:
                console.print(f"  {mode} [red]failed[/]:\n{r['log_tail']}", highlight=False)
                break  # no incremental night without its full run
            r["telemetry_rows"] = telemetry_rows(args.work / size)
            console.print(f"  {mode}: {r['wall_s']} s, peak {r['peak_rss_mb']} MB", highlight=False)
            save(rows, args.out)  # after every run: a later failure keeps what was measured
    report(rows, console)
    console.print(f"saved {save(rows, args.out)}")


COLUMNS = ["size", "mode", "days", "telemetry_rows", "series", "plan_rows", *[f"{s}_s" for s in STAGES], "wall_s", "vs_full", "peak_rss_mb"]


def save(rows: list[dict], out: Path) -> str:
    """scaling.csv (every run, failed ones with the reason) and scaling.html (the chart)."""
    for r in rows:
        full = next((f for f in rows if f["size"] == r["size"] and f["mode"] == "full" and "failed" not in f), None)
        if full and "failed" not in r:
            r["vs_full"] = round(r["wall_s"] / full["wall_s"], 3)
    csv_path, html_path = out / "scaling.csv", out / "scaling.html"
    fields = COLUMNS + [f"{s}_peak_mb" for s in STAGES] + ["rows_loaded", "failed"]
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    write_chart([r for r in rows if "failed" not in r], html_path)
    return f"{csv_path} and {html_path}"


def report(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="nightly run by city size (seconds; peak RSS of the process tree in MB)")
    for c in COLUMNS:
        table.add_column(c, justify="right")
    for r in rows:
        if "failed" in r:
            table.add_row(r["size"], r["mode"], f"failed: {r['failed'][:80]}", *[""] * (len(COLUMNS) - 3))
        else:
            table.add_row(*[f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in COLUMNS])
    console.print(table)
    full = [r for r in rows if r["mode"] == "full" and "failed" not in r]
    for a, b in zip(full, full[1:]):
        growth = b["telemetry_rows"] / max(a["telemetry_rows"], 1)
        per_stage = ", ".join(f"{s} ×{b[f'{s}_s'] / max(a[f'{s}_s'], 0.1):.1f}" for s in STAGES)
        console.print(f"{a['size']} → {b['size']}: rows ×{growth:.1f}, wall ×{b['wall_s'] / a['wall_s']:.1f} ({per_stage})")
    for r in rows:
        if r["mode"] == "incremental" and "vs_full" in r:
            console.print(f"{r['size']}: incremental night = {r['vs_full']:.1%} of the full rebuild ({r['wall_s']} s vs {r['wall_s'] / r['vs_full']:.0f} s)")


if __name__ == "__main__":
    main()
