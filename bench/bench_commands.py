"""What a person waits for at the terminal, as ratios against references measured in this run.

- `civicflow --help` and `civicflow query` (to a gateway that is not there: start-up, one
  refused connection, the one-line error) against `python -c "import typer, rich"`; target 3×.
- `civicflow status` on a demo home; target: within 3 s (printed with its ratio to the same
  reference, since these machines are noisy).
- a night with no new file (`civicflow run --date <last day>` right after the demo's first full
  night) against that first night; target: at most 15 %.

    python bench/bench_commands.py                 # builds a demo home (small city) first
    python bench/bench_commands.py --home DIR      # an existing demo home: skips the nights
    python bench/bench_commands.py --size tiny --days 28 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


# A person's shell writes bytecode caches; a sandbox that sets PYTHONDONTWRITEBYTECODE would make
# every start recompile each imported module (1.2 s of a 2.4 s `civicflow status`).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], env: dict | None = None, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def median_of(repeat: int, cmd: list[str], **kw) -> float:
    timed(cmd, **kw)  # warm: bytecode written, files in the page cache
    return statistics.median(timed(cmd, **kw) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="an existing demo home (its nights are not re-run)")
    ap.add_argument("--size", default="small")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "commands.json")
    args = ap.parse_args()

    civicflow = str(BIN / "civicflow")
    reference = median_of(args.repeat, [sys.executable, "-c", "import typer, rich"])
    help_s = median_of(args.repeat, [civicflow, "--help"])
    query_s = median_of(args.repeat, [civicflow, "query", "SELECT 1", "--url", "http://127.0.0.1:9", "--key", "cfk_x"], ok=(1, 2))
    results = {
        "reference_import_typer_rich_s": round(reference, 3),
        "help_s": round(help_s, 3), "help_ratio": round(help_s / reference, 2),
        "query_s": round(query_s, 3), "query_ratio": round(query_s / reference, 2),
    }
    with tempfile.TemporaryDirectory(prefix="civicflow-bench-") as tmp:
        home = args.home
        if home is None:
            home = Path(tmp) / "home"
            timed([civicflow, "simulate", "--size", args.size, "--days", str(args.days), "--home", str(home)])
            first = timed([civicflow, "run", "--home", str(home)])  # the demo's night: every delivered day
            last = sorted(p.name for p in (home / "landing" / "telemetry").iterdir())[-1]
            quiet = timed([civicflow, "run", "--date", last, "--home", str(home)])
            results |= {"first_night_s": round(first, 1), "no_new_file_night_s": round(quiet, 1),
                        "no_new_file_ratio": round(quiet / first, 3)}
        status_s = median_of(args.repeat, [civicflow, "status", "--home", str(home)])
        results |= {"status_s": round(status_s, 3), "status_ratio": round(status_s / reference, 2)}
    width = max(map(len, results))
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")
    print("targets: help and query ≤ 3× the reference; status ≤ 3 s; a night with no new file ≤ 15 % of the first (demo) night")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
