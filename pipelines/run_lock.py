"""One `civicflow run` per home at a time.

Two runs on one home would race on a fresh instance's schema, claim each other's loads in
their reports and queue behind each other on the warehouse slot without a word. An
exclusive `flock` on `<home>/run.lock` makes the second refuse at once, in one line. The
kernel drops the lock when its process dies, so a killed run never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunInProgress(RuntimeError):
    """Another run holds this home."""


@contextmanager
def home_run_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunInProgress(f"another civicflow run (pid {holder}) is running on {root}: wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
