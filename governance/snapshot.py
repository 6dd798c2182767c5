"""Which published warehouse snapshot is current (the `published/CURRENT` pointer).

Publishing writes `published/warehouse-<stamp>.duckdb` and then swaps the one-line pointer file
atomically (write a temp file, rename). Readers resolve the pointer for each query, so a new
publish switches them over at once while a query in flight keeps its old file open.
"""

from __future__ import annotations

from pathlib import Path

POINTER = "CURRENT"


def current_snapshot(published_dir: Path) -> Path | None:
    """The snapshot CURRENT points at, or None when nothing has been published yet."""
    pointer = Path(published_dir) / POINTER
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if not name:
        return None
    return Path(published_dir) / name
