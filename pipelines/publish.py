"""Publish: a read-only copy of the warehouse that analysts and the gateway read.

The live file has one writer; readers never open it. After a successful run the warehouse
is checkpointed, copied to `published/warehouse-<stamp>.duckdb`, made read-only, and the
pointer file `published/CURRENT` is switched atomically (write to a temp file, rename).
The last `keep` snapshots are kept.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from governance.snapshot import POINTER, current_snapshot

__all__ = ["POINTER", "current_snapshot", "publish_snapshot"]


def publish_snapshot(warehouse: Path, published: Path, keep: int = 3) -> Path:
    """Copy a checkpointed, closed warehouse file into a new snapshot and switch CURRENT to it."""
    published.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"warehouse-{stamp}.duckdb"
    tmp = published / f".{name}.tmp"
    shutil.copyfile(warehouse, tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, published / name)
    pointer_tmp = published / f".{POINTER}.tmp"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, published / POINTER)
    _rotate(published, keep, current=name)
    return published / name


def _rotate(published: Path, keep: int, current: str) -> None:
    snapshots = sorted(p for p in published.glob("warehouse-*.duckdb"))
    for old in snapshots[: max(0, len(snapshots) - keep)]:
        if old.name != current:
            old.unlink(missing_ok=True)
