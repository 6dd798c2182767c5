"""Runs that died holding the warehouse pool: found and released before a run starts.

The warehouse pool has one slot (DESIGN.md "One writer"). A run killed with SIGKILL, or by
the OOM killer or a full disk, never releases the slot it holds, and Dagster's in-process
execution has no daemon watching it: every later run would wait on the slot for ever. So
each run `civicflow` starts carries the pid and start time of its process in its tags; before
the next run starts, a slot held by a run whose process is gone (or that is already
finished) is freed, and the run is marked failed so the history says what happened.

Runs without these tags (launched by the Dagster daemon) are left to Dagster's own run
monitoring (`run_monitoring` in dagster.yaml), since their process is not ours to judge.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

PID_TAG = "civicflow/pid"
STARTED_TAG = "civicflow/process_started"  # the process's start time: a reused pid is another process


def own_process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes in-process."""
    return {PID_TAG: str(os.getpid()), STARTED_TAG: repr(psutil.Process().create_time())}


def process_alive(pid: int, started: str | None) -> bool:
    """Whether the process that ran a run still exists (same pid and same start time)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or repr(proc.create_time()) == started
    except psutil.Error:
        return False


@dataclass(frozen=True)
class FreedSlot:
    run_id: str
    why: str

    def line(self) -> str:
        return f"freed the warehouse slot held by run {self.run_id} ({self.why})"


def _why_dead(run) -> str | None:
    """Why a run holding a slot can no longer use it, or None when it may still be running."""
    if run is None:
        return "the run is not in the instance's history"
    if run.is_finished:
        return f"the run already ended ({run.status.value.lower()})"
    pid = run.tags.get(PID_TAG)
    if pid is None:
        return None  # not started by civicflow: Dagster's run monitoring judges it
    if not process_alive(int(pid), run.tags.get(STARTED_TAG)):
        return f"its process {pid} is no longer alive"
    return None


def free_dead_runs(instance) -> list[FreedSlot]:
    """Free every concurrency slot (and pending claim) of a run that can no longer use it."""
    storage = instance.event_log_storage
    freed: list[FreedSlot] = []
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        why = _why_dead(run)
        if why is None:
            continue
        storage.free_concurrency_slots_for_run(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, message=f"civicflow: {why}; its warehouse slot was freed")
        freed.append(FreedSlot(run_id, why))
    return freed


def live_slot_holders(instance) -> set[str]:
    """Runs that still hold or wait for a slot (after `free_dead_runs`, only live ones)."""
    return set(instance.event_log_storage.get_concurrency_run_ids())


def clean_partial_copies(published: Path) -> list[Path]:
    """Delete the temporary snapshot copies a killed publish left behind (`.<name>.tmp`).

    Only called when no live run holds the warehouse slot: publishing runs under that slot,
    so no copy can be in progress."""
    removed = []
    for tmp in sorted(published.glob(".*.tmp")):
        try:
            if tmp.is_dir():  # a team publication killed half-way (governance.publication)
                shutil.rmtree(tmp)
                removed.append(tmp)
                continue
            os.chmod(tmp, 0o644)  # a copy killed after its chmod is read-only
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            continue
    return removed


def stop_orphans(target_paths: set[str]) -> list[int]:
    """Kill the dbt processes a killed run left running, found by their DBT_TARGET_PATH (one
    folder per run, `Home.dbt_run`): a dbt child outlives a SIGKILL of its parent and goes on
    holding the warehouse file. Returns the pids killed."""
    if not target_paths:
        return []
    killed = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.environ().get("DBT_TARGET_PATH") not in target_paths:
                continue
            proc.kill()
            proc.wait(timeout=30)
            killed.append(proc.pid)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return killed


def clean_spill(spill_dir: Path) -> list[Path]:
    """Remove DuckDB's spill files a killed step left (`<warehouse>.tmp/`). Only called when
    no live run holds the warehouse slot: every connection that spills runs under it."""
    if not spill_dir.is_dir():
        return []
    left = sorted(spill_dir.iterdir())
    shutil.rmtree(spill_dir, ignore_errors=True)
    return left
