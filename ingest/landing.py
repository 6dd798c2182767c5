"""The landing zone: which files wait for a contract, the day each was delivered, its checksum."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from ingest.contracts import Contract, landing_dir_for


def sha256_of(path: Path) -> str:
    """A file's identity (DESIGN.md "Effectively-once ingest"), read 1 MiB at a time."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    """The same identity for a file already read (its rows are parsed from the same bytes)."""
    return hashlib.sha256(data).hexdigest()


def delivery_date(path: Path) -> date | None:
    """The delivery day of an event file: the name of its folder, `<contract>/<YYYY-MM-DD>/`."""
    try:
        return date.fromisoformat(path.parent.name)
    except ValueError:
        return None


def discover(landing: Path, contract: Contract, delivery_dates: set[date] | None = None) -> list[Path]:
    """Files waiting for a contract, oldest delivery first (folder names are delivery dates).

    `delivery_dates` restricts event files to those delivered on these days (one partition or
    a range); reference snapshots have no delivery day and are always looked at.
    """
    root = landing / landing_dir_for(contract)
    if not root.exists():
        return []
    files = sorted(p for p in root.rglob(contract.filename_glob) if p.is_file() and not p.name.startswith("."))
    if delivery_dates is None or contract.reference:
        return files
    return [p for p in files if delivery_date(p) in delivery_dates]
