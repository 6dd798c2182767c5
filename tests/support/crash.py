"""Crash a loader run where a real crash would hurt: a child process runs `load_landing` with a
fault point (`IngestConfig.fault`), stops there, and is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The child is the edge: it builds its IngestConfig from its arguments.
KILLED_RUN = textwrap.dedent(
    """
    import json, sys, duckdb
    from pathlib import Path
    from ingest.config import IngestConfig
    from ingest.loader import load_landing
    config = IngestConfig(**json.loads(sys.argv[3]))
    con = duckdb.connect(sys.argv[2])
    load_landing(con, Path(sys.argv[1]), config=config)
    print("finished without being killed")
    """
)


def run_and_kill(landing: Path, db: Path, point: str, marker: Path, timeout_s: float = 120, **config: int) -> None:
    """Run the loader on `landing` into `db` until it reaches fault `point`, then SIGKILL it.

    `config` sets other `IngestConfig` fields of the child (e.g. `chunk_bytes`). The child
    writes `marker` when it reaches the point; the test fails if it ends or times out first.
    """
    spec = json.dumps({**config, "fault": f"{point}:{marker}"})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(landing), str(db), spec], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            assert child.poll() is None, "the loader ended before reaching the fault point"
            assert time.monotonic() < deadline, "the loader never reached the fault point"
            time.sleep(0.05)
    finally:
        if child.poll() is None:  # at the fault point, or stuck: killed either way
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
