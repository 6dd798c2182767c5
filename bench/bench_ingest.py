"""Ingest speed and memory: civicflow's loader against a bare DuckDB load of the same files.

Simulates the large city into a temporary landing zone for enough days to pass 5 million
telemetry rows (default 36 days), then loads the same files twice, each in its own
subprocess so their memory peaks do not mix:

  (a) civicflow: `load_landing` into a fresh DuckDB file — SHA-256 per file, every line
      framed and validated against its contract, bad rows quarantined, natural-key
      de-duplication, manifest with affected dates, skew flag; each file loaded exactly once
      and atomically (small files of a source committed together, a big file alone);
  (b) bare: DuckDB `read_json` / `read_csv` (ignore_errors) of the same files into tables,
      one statement per contract (no checks, no manifest, no de-duplication).

It prints the rows, both wall times and their ratio (target: civicflow ≤ 2× bare), the CPU
seconds of each (a fairer figure on a shared machine), and each child's peak RSS (ru_maxrss
of the child process; target < 2 GB). With `--big-file`, two more children load ALL the
telemetry as ONE file, once (~1 GB) and twice over (~2 GB; the second copy's seq values are
prefixed so its rows are new, not duplicates), to show that memory does not grow with the
file: the peak RSS of each, and how much of it was DuckDB's own buffer pool (the warehouse's
`memory_limit`, 1 GB here, caps that part; the rest is the loader's, bounded by its chunk).

    .venv/bin/python bench/bench_ingest.py [--days 36] [--size large] [--big-file] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 2.0
TARGET_RSS_MB = 2048


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sample_memory(con, stop: threading.Event, peak: dict) -> None:
    """Every 0.1 s: this process's RSS and DuckDB's own memory (its buffer pool), keeping the peaks."""
    import psutil

    proc, cur = psutil.Process(), con.cursor()
    while not stop.wait(0.1):
        rss = proc.memory_info().rss / 2**20
        duck = cur.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()[0] / 2**20
        peak["duckdb_mb"] = max(peak.get("duckdb_mb", 0), duck)
        peak["rest_mb"] = max(peak.get("rest_mb", 0), rss - duck)


def child_civicflow(landing: Path, db: Path, sample: bool = False) -> dict:
    import duckdb

    from ingest.loader import load_landing, summarise

    con = duckdb.connect(str(db))
    con.execute("SET memory_limit = '1GB'")
    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=_sample_memory, args=(con, stop, peak), daemon=True) if sample else None
    if sampler:
        sampler.start()
    t0, c0 = time.perf_counter(), _cpu()
    outcomes = load_landing(con, landing)
    con.execute("CHECKPOINT")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if sampler:
        stop.set()
        sampler.join()
    rows = {r[0]: r[1] for r in con.execute("SELECT contract, sum(rows_loaded) FROM raw._load_manifest GROUP BY ALL").fetchall()}
    quarantined = con.execute("SELECT count(*) FROM raw._quarantine").fetchone()[0]
    con.close()
    s = summarise(outcomes)
    return {
        "wall": wall, "cpu": cpu, "peak_mb": _peak_mb(), "rows": rows, "quarantined": quarantined,
        "files": len(outcomes), "refused": int(s["files_refused"].sum()) if s.height else 0, **peak,
    }


def child_bare(landing: Path, db: Path) -> dict:
    import duckdb

    from ingest.contracts import EVENT_CONTRACTS, REFERENCE_CONTRACTS, landing_dir_for

    con = duckdb.connect(str(db))
    con.execute("SET memory_limit = '1GB'")
    t0, c0 = time.perf_counter(), _cpu()
    rows = {}
    for c in REFERENCE_CONTRACTS + EVENT_CONTRACTS:
        folder = landing / landing_dir_for(c)
        files = sorted(str(p) for p in folder.rglob(c.filename_glob)) if folder.exists() else []
        files = [f for f in files if os.path.getsize(f) > 0]
        if not files:
            continue
        if c.file_format == "csv":
            reader = f"read_csv({files!r}, header = true, ignore_errors = true, union_by_name = true)"
        else:
            reader = f"read_json({files!r}, format = 'newline_delimited', ignore_errors = true, union_by_name = true)"
        con.execute(f"CREATE TABLE {c.name} AS SELECT * FROM {reader}")
        rows[c.name] = con.execute(f"SELECT count(*) FROM {c.name}").fetchone()[0]
    con.execute("CHECKPOINT")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    con.close()
    return {"wall": wall, "cpu": cpu, "peak_mb": _peak_mb(), "rows": rows}


def run_child(kind: str, landing: Path, db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--landing", str(landing), "--db", str(db)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rows(counts: dict) -> int:
    return int(sum(v for v in counts.values() if v))


def make_big_file(landing: Path, target: Path, copies: int) -> int:
    """All telemetry files of the run concatenated into one file (`copies` times), plus the reference data.

    Copy k > 0 prefixes every seq with `k` and nine zeros (seq 4000123 -> 10000000004000123):
    new natural keys, so its rows are inserted like the first copy's, not counted as duplicates.
    """
    shutil.copytree(landing / "reference", target / "reference")
    out = target / "telemetry" / "2026-01-01" / "all.jsonl"
    out.parent.mkdir(parents=True)
    files = sorted((landing / "telemetry").rglob("*.jsonl"))
    with out.open("wb") as fh:
        for k in range(copies):
            for p in files:
                data = p.read_bytes()
                if data and not data.endswith(b"\n"):
                    continue  # the simulator's truncated re-deliveries: one big file must not be truncated mid-way
                fh.write(data.replace(b'"seq":', b'"seq":%d000000000' % k) if k else data)
    return out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="large")
    ap.add_argument("--days", type=int, default=36)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--big-file", action="store_true", help="also load all telemetry as one ~1 GB file and one ~2 GB file (memory check)")
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the simulated landing zone in this folder")
    ap.add_argument("--child", choices=["civicflow", "civicflow-memory", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "bare":
            result = child_bare(args.landing, args.db)
        else:
            result = child_civicflow(args.landing, args.db, sample=args.child == "civicflow-memory")
        print(json.dumps(result, default=str))
        return

    from ingest.simulator import simulate

    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    base = args.keep or tmp
    landing = base / "landing"
    try:
        if not (landing / "telemetry").exists():
            t0 = time.perf_counter()
            s = simulate(landing, size=args.size, days=args.days, seed=args.seed)
            print(f"simulated      : size={args.size} days={args.days} files={s.files_written:,} "
                  f"bytes={s.bytes_written:,} in {time.perf_counter() - t0:.1f} s")
            print("rows written   : " + ", ".join(f"{k}={v:,}" for k, v in sorted(s.rows.items())))
        print(f"cpus available : {os.cpu_count()}  (load average before: {os.getloadavg()[0]:.2f})")
        bare = run_child("bare", landing, tmp / "bare.duckdb")
        civ = run_child("civicflow", landing, tmp / "civicflow.duckdb")
        print(f"rows           : bare {_rows(bare['rows']):,} read ({bare['rows'].get('telemetry', 0):,} telemetry); "
              f"civicflow {_rows(civ['rows']):,} loaded ({civ['rows'].get('telemetry', 0):,} telemetry), "
              f"{civ['quarantined']:,} quarantined, {civ['refused']} files refused, {civ['files']} files")
        print(f"bare DuckDB    : {bare['wall']:7.2f} s wall  {bare['cpu']:7.2f} s CPU  peak RSS {bare['peak_mb']:7.0f} MB")
        print(f"civicflow      : {civ['wall']:7.2f} s wall  {civ['cpu']:7.2f} s CPU  peak RSS {civ['peak_mb']:7.0f} MB")
        ratio, cpu_ratio = civ["wall"] / bare["wall"], civ["cpu"] / bare["cpu"]
        print(f"ratio          : {ratio:.2f}× wall, {cpu_ratio:.2f}× CPU  (target ≤ {TARGET_RATIO:g}×: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
        print(f"peak memory    : civicflow {civ['peak_mb']:.0f} MB (target < {TARGET_RSS_MB} MB: {'met' if civ['peak_mb'] < TARGET_RSS_MB else 'NOT met'}), bare {bare['peak_mb']:.0f} MB")
        if args.big_file:
            for copies in (1, 2):
                big = tmp / f"big{copies}"
                size = make_big_file(landing, big, copies)
                one = run_child("civicflow-memory", big, tmp / f"big{copies}.duckdb")
                shutil.rmtree(big, ignore_errors=True)
                print(f"one {size / 1e9:.2f} GB file: {one['rows'].get('telemetry', 0):,} rows loaded in {one['wall']:.1f} s wall, "
                      f"peak RSS {one['peak_mb']:.0f} MB (target < {TARGET_RSS_MB} MB: {'met' if one['peak_mb'] < TARGET_RSS_MB else 'NOT met'}); "
                      f"sampled peaks: DuckDB buffer pool {one.get('duckdb_mb', 0):.0f} MB, the rest {one.get('rest_mb', 0):.0f} MB")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
